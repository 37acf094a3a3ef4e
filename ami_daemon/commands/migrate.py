"""``ami-daemon migrate``: create or upgrade the CRM schema."""

from __future__ import annotations

import argparse
import asyncio

from ami_daemon import config
from ami_daemon.crm import db, migrate

HELP = "create or upgrade the CRM schema in PostgreSQL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: see README)")
    parser.add_argument("--dsn", help="database DSN (overrides the config)")
    parser.add_argument(
        "--status",
        action="store_true",
        help="only list pending migrations; exit 1 when any is pending",
    )


async def _run(dsn: str, status_only: bool) -> int:
    conn = await db.connect(dsn)
    try:
        if status_only:
            todo = await migrate.pending(conn)
            for m in todo:
                print(f"pending {m.version:04d}_{m.name}")
            if not todo:
                print("schema up to date")
            return 1 if todo else 0
        applied = await migrate.migrate(conn)
    finally:
        await conn.close()
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("schema up to date; nothing to apply")
    return 0


def run(args: argparse.Namespace) -> int:
    dsn = args.dsn or config.load(args.config).require_dsn()
    return asyncio.run(_run(dsn, args.status))
