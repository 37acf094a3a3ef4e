"""Shared fixtures: a real PostgreSQL database per test, created and dropped here.

The server is ``$AMI_DAEMON_TEST_DSN`` (an admin DSN) when set, else the
system PostgreSQL on 127.0.0.1:5432 when it listens, else a private embedded
server (pgserver).  Each test that asks for ``dsn`` gets a database of its own.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.crm import embedded, migrate
from ami_daemon.crm.db import with_database


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases."""
    if os.environ.get("AMI_DAEMON_TEST_DSN"):
        yield os.environ["AMI_DAEMON_TEST_DSN"]
    elif embedded.server_listening():
        yield embedded.SYSTEM_SERVER_DSN
    else:
        dsn, server = embedded.start("ami-daemon-tests")
        yield dsn
        server.cleanup()


@pytest.fixture
def dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"amid_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield with_database(admin_dsn, name)
    asyncio.run(drop())


@pytest.fixture
def migrated_dsn(dsn: str) -> str:
    """A fresh database with every migration applied."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
    return dsn


@pytest_asyncio.fixture
async def conn(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An open connection to a fresh, migrated database."""
    connection = await asyncpg.connect(migrated_dsn)
    yield connection
    await connection.close()
