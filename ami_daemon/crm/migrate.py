"""Versioned plain-SQL migrations of the ``crm`` schema.

Files ``migrations/NNNN_name.sql`` are applied in order of ``NNNN``, each in
its own transaction together with its row in ``crm_meta.migrations``.  A
session-level advisory lock serialises concurrent runs (two daemons starting
at once, or ``ami-daemon migrate`` beside a running daemon): the second waits,
then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

#: Arbitrary, fixed key of the advisory lock held while migrating.
MIGRATION_LOCK_KEY = 7_351_202_611
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    folder = resources.files("ami_daemon.crm") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS crm_meta;
CREATE TABLE IF NOT EXISTS crm_meta.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    """Versions already applied; empty when the database was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('crm_meta.migrations') IS NOT NULL")
    if not exists:
        return set()
    rows = await conn.fetch("SELECT version FROM crm_meta.migrations")
    return {r["version"] for r in rows}


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    """Migrations not yet applied, in order (the daemon refuses to start with any)."""
    done = await applied_versions(conn)
    return [m for m in available() if m.version not in done]


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration; return those applied (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        async with conn.transaction():
            await conn.execute(_BOOKKEEPING)
        applied = []
        for migration in await pending(conn):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO crm_meta.migrations (version, name, checksum) VALUES ($1,$2,$3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
