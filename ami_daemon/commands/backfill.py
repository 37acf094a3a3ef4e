"""``ami-daemon backfill --since TIME [--until TIME]``: calls from Asterisk's CDR into the CRM.

For downtime longer than the daemon recovers by itself (``cdr.max_gap_hours``),
or for a first start on a PBX that already has history.  Calls the CRM already
has are skipped; the others go through the same rules as live calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from ami_daemon import config
from ami_daemon.backfill import cdr_summaries, recorded_ids
from ami_daemon.crm import db, migrate
from ami_daemon.errors import UserError
from ami_daemon.pipeline import preview_call, process_call
from ami_daemon.rules.loader import RulesError, load_rules

HELP = "write the calls of a period from Asterisk's CDR that the CRM does not have yet"


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date/time: {value!r} (e.g. 2026-11-27T08:00 or 2026-11-27 08:00+01:00)"
        ) from None
    return parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=_time,
        required=True,
        help="start of the period (ISO 8601; without offset: pbx.timezone)",
    )
    parser.add_argument("--until", type=_time, help="end of the period (default: now)")
    parser.add_argument("--config", help="config file (default: see README)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be written, write nothing"
    )


async def _run(cfg: config.Config, since: datetime, until: datetime, dry_run: bool) -> int:
    try:
        rules = load_rules(cfg.rules.path, cfg.pbx.region)
    except RulesError as exc:
        raise UserError(f"the rules have errors:\n{exc}") from None
    calls = await cdr_summaries(cfg, since, until)
    conn = await db.connect(cfg.require_dsn())
    try:
        if await migrate.pending(conn):
            raise UserError("the CRM schema is not up to date: run 'ami-daemon migrate' first")
        done = await recorded_ids(conn, cfg.pbx.name, [c.call_id for c in calls])
        todo = [c for c in calls if c.call_id not in done]
        print(
            f"CDR {since.isoformat()} – {until.isoformat()}: {len(calls)} call(s), "
            f"{len(done)} already in the CRM, {len(todo)} to {'check' if dry_run else 'write'}"
        )
        for summary in todo:
            if dry_run:
                result = await preview_call(conn, summary, rules, cfg.pbx.zone)
            else:
                result = await process_call(conn, summary, rules, cfg.pbx.zone)
            print(result.line())
    finally:
        await conn.close()
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    zone = cfg.pbx.zone
    since = args.since if args.since.tzinfo else args.since.replace(tzinfo=zone)
    until = args.until or datetime.now(UTC)
    until = until if until.tzinfo else until.replace(tzinfo=zone)
    if until <= since:
        raise UserError("--until must be after --since")
    if cfg.cdr.source == "none":
        raise UserError(
            f"{cfg.source or 'config'}: cdr.source is none: configure where "
            "Asterisk writes its CDR (csv or pgsql), see asterisk-conf/README.md"
        )
    try:
        return asyncio.run(_run(cfg, since, until, args.dry_run))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
