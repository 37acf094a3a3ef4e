"""``ami-daemon crm …``: the manual CRM tools (pending calls, callback tasks, conversions).

- ``crm pending [--all]``: unknown callers' calls waiting for a record (S4);
- ``crm create-from-call CALL_ID --as lead|contact [--pbx NAME]``: make it;
- ``crm convert-lead LEAD_ID [--deal] [--company]``: a lead into a contact
  (+ company, + deal in the number's default pipeline, first stage) (S2);
- ``crm tasks [--open]``: callback tasks for missed calls of clients (B3).

Lists are tab-separated with a header line, for people and for ``cut``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import asyncpg

from ami_daemon import config
from ami_daemon.commands.replay import load_rule_set
from ami_daemon.crm import manual, session

HELP = "pending calls, tasks, create-from-call, convert-lead"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # accepted before or after the action; SUPPRESS keeps an action's missing option from
    # overwriting one given before it
    parser.add_argument("--config", help="config file (database and pbx sections)")
    parser.add_argument("--dsn", help="database DSN (overrides the config)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="config file (database and pbx sections)"
    )
    common.add_argument(
        "--dsn", default=argparse.SUPPRESS, help="database DSN (overrides the config)"
    )
    sub = parser.add_subparsers(dest="crm_command", metavar="ACTION", required=True)

    p = sub.add_parser("pending", parents=[common], help="unknown calls waiting for a record")
    p.add_argument("--all", action="store_true", help="also those already resolved")

    p = sub.add_parser(
        "create-from-call", parents=[common], help="create a lead or contact from a pending call"
    )
    p.add_argument("call_id", metavar="CALL_ID", help="the call id shown by 'crm pending'")
    p.add_argument(
        "--as", dest="create_as", required=True, choices=[c.value for c in manual.CreateAs]
    )
    p.add_argument("--pbx", help="the PBX of the call, when several share the database")

    p = sub.add_parser(
        "convert-lead", parents=[common], help="convert a lead into a contact (+ company, deal)"
    )
    p.add_argument("lead_id", metavar="LEAD_ID", type=int)
    p.add_argument("--deal", action="store_true", help="also create a deal")
    p.add_argument("--company", action="store_true", help="also create a company")
    p.add_argument("--rules", type=Path, help="rules folder (for the deal's pipeline)")

    p = sub.add_parser("tasks", parents=[common], help="callback tasks for missed client calls")
    p.add_argument("--open", action="store_true", help="only the open ones")


def _time(value: datetime | None, zone: tzinfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print("\t".join(header))
    for row in rows:
        print("\t".join("-" if v is None else str(v) for v in row))


async def _with_conn(
    dsn: str, timeout: float, work: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    conn = await session.open_migrated(dsn, timeout)
    try:
        return await work(conn)
    finally:
        await session.close_quietly(conn)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    dsn = args.dsn or cfg.require_dsn()
    zone = cfg.pbx.zone
    action = args.crm_command

    async def pending(conn: asyncpg.Connection) -> int:
        rows = await manual.list_pending(conn, include_resolved=args.all)
        _table(
            ("call_id", "pbx", "number", "did", "answered_by", "started", "source", "status"),
            [
                (
                    p.call_id,
                    p.pbx,
                    p.e164 or "anonymous",
                    p.did,
                    p.answered_by,
                    _time(p.started_at, zone),
                    p.source,
                    p.resolved or p.status,
                )
                for p in rows
            ],
        )
        return 0

    async def create_from_call(conn: asyncpg.Connection) -> int:
        made = await manual.create_from_call(
            conn, args.call_id, manual.CreateAs(args.create_as), zone, args.pbx
        )
        if made.already:
            print(f"call {args.call_id} was already turned into {made.ref}; nothing changed")
        else:
            print(f"created {made.ref} from call {args.call_id}")
        return 0

    async def convert_lead(conn: asyncpg.Connection) -> int:
        pipeline, stage = "general", "NEW"
        if args.deal:
            rules = load_rule_set(cfg, args.rules)
            pipeline = rules.defaults.pipeline
            chosen = rules.pipeline(pipeline)
            stage = chosen.first_stage if chosen is not None else stage
        done = await manual.convert_lead(
            conn, args.lead_id, args.deal, args.company, pipeline, stage
        )
        parts = [f"contact:{done.contact_id}"]
        if done.company_id is not None:
            parts.append(f"company:{done.company_id}")
        if done.deal_id is not None:
            parts.append(f"deal:{done.deal_id} ({pipeline}/{stage})")
        print(f"lead:{done.lead_id} converted into {', '.join(parts)}")
        return 0

    async def tasks(conn: asyncpg.Connection) -> int:
        rows = await manual.list_tasks(conn, open_only=args.open)
        _table(
            (
                "id",
                "status",
                "responsible",
                "number",
                "item",
                "missed_call",
                "created",
                "closed_by",
                "title",
            ),
            [
                (
                    t.id,
                    t.status,
                    t.responsible,
                    t.e164,
                    t.entity,
                    f"{t.pbx}/{t.call_id}",
                    _time(t.created_at, zone),
                    t.closed_by,
                    t.title,
                )
                for t in rows
            ],
        )
        return 0

    work = {
        "pending": pending,
        "create-from-call": create_from_call,
        "convert-lead": convert_lead,
        "tasks": tasks,
    }[action]
    return asyncio.run(_with_conn(dsn, cfg.database.connect_timeout, work))
