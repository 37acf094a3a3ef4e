"""Opening and closing the one connection a CRM command works with.

Commands that read or write the CRM need the schema up to date: a database
``ami-daemon migrate`` never ran on gets a message saying so, not a
"relation does not exist" from deep inside a query.  Closing a connection
whose server went away must not hang the command on a polite goodbye.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ami_daemon.crm import db, migrate
from ami_daemon.errors import UserError

__all__ = ["close_quietly", "open_migrated"]


async def open_migrated(dsn: str, timeout: float = 5.0) -> asyncpg.Connection:
    """A connection to an up-to-date CRM, or a UserError/DatabaseUnavailable saying why not."""
    conn = await db.connect(dsn, timeout=timeout)
    try:
        if await migrate.pending(conn):
            raise UserError("the CRM schema is not up to date: run 'ami-daemon migrate' first")
    except BaseException:
        await close_quietly(conn)
        raise
    return conn


async def close_quietly(conn: asyncpg.Connection, timeout: float = 2.0) -> None:
    """Close politely when the server answers, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
