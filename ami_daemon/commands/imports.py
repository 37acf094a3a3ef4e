"""``ami-daemon import users|contacts|companies FILE``: CSV into the CRM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ami_daemon import config
from ami_daemon.crm import db, imports, migrate
from ami_daemon.errors import UserError

HELP = "import users, contacts or companies from CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        choices=[k.value for k in imports.Kind],
        help="what the file holds (columns: see README)",
    )
    parser.add_argument("file", type=Path, help="CSV file with a header row")
    parser.add_argument("--config", help="config file (default: see README)")
    parser.add_argument("--dsn", help="database DSN (overrides the config)")


async def _run(dsn: str, kind: imports.Kind, text: str, region: str) -> imports.ImportReport:
    conn = await db.connect(dsn)
    try:
        if await migrate.pending(conn):
            raise UserError("the CRM schema is not up to date: run 'ami-daemon migrate' first")
        return await imports.import_csv(conn, kind, text, region)
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    dsn = args.dsn or cfg.require_dsn()
    try:
        text = args.file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"cannot read {args.file}: {reason}") from None
    try:
        report = asyncio.run(_run(dsn, imports.Kind(args.kind), text, cfg.pbx.region))
    except imports.RowError as exc:
        raise UserError(f"{args.file}: {exc}") from None
    for line, reason in report.rejected:
        print(f"{args.file}:{line}: rejected: {reason}", file=sys.stderr)
    print(f"{args.file}: {args.kind}: {report.summary()}")
    return 1 if report.rejected else 0
