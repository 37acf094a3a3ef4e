"""The lab world of shared/traces/asterisk20 for CRM decision tests.

Employees 201, 202, 203 (201's mobile 699000201), known clients 600333444
(responsible 202) and 600555666 (responsible 203), DIDs 911234567 (queue
sales) and 911234500 (queue support), trunk ``trunk``, region ES, zone
Europe/Madrid; the shipped rules, or a copy edited for one test.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from ami_daemon.calls.summary import CallStatus, CallSummary, Direction, Transfer, TransferKind
from ami_daemon.crm.imports import Kind, import_csv
from ami_daemon.rules import RuleSet, default_rules_path, load_rules

ZONE = ZoneInfo("Europe/Madrid")
REGION = "ES"
#: A Friday afternoon in Madrid (16:33 UTC = 17:33 local).
STARTED = datetime(2026, 11, 27, 16, 33, 12, tzinfo=UTC)

USERS_CSV = "extension,name,phones\n201,Ana Agent,699000201\n202,Bea Agent,\n203,Carl Agent,\n"
CONTACTS_CSV = (
    "id,name,phones,responsible\nc17,Marta Ruiz,600 333 444,202\nc18,Pedro Gil,0034600555666,203\n"
)
KNOWN_202 = "+34600333444"
KNOWN_203 = "+34600555666"
NEW = "+34600111222"
MAIN_DID = "+34911234567"
SUPPORT_DID = "+34911234500"
RADIO_DID = "+34930000000"


def call(**changes: Any) -> CallSummary:
    """An inbound call from a new number to the main DID, answered by 201 via queue sales."""
    base = CallSummary(
        pbx="main",
        call_id="1795797192.0",
        direction=Direction.INBOUND,
        external_number=NEW,
        did=MAIN_DID,
        trunk="trunk",
        status=CallStatus.ANSWERED,
        answered_by="201",
        final_agent="201",
        caller_extension=None,
        agents_rung=("201",),
        queue="sales",
        transfers=(),
        started_at=STARTED,
        answered_at=STARTED.replace(second=13),
        ended_at=STARTED.replace(second=16),
        talk_seconds=3,
    )
    return replace(base, **changes)


def missed(**changes: Any) -> CallSummary:
    values: dict[str, Any] = dict(
        status=CallStatus.MISSED,
        answered_by=None,
        final_agent=None,
        answered_at=None,
        talk_seconds=0,
    )
    values.update(changes)
    return call(**values)


def outbound(**changes: Any) -> CallSummary:
    values: dict[str, Any] = dict(
        direction=Direction.OUTBOUND,
        did=None,
        answered_by=None,
        final_agent="201",
        caller_extension="201",
        agents_rung=(),
        queue=None,
    )
    values.update(changes)
    return call(**values)


def blind(from_ext: str, to: str) -> Transfer:
    return Transfer(TransferKind.BLIND, from_ext, to)


def shipped_rules() -> RuleSet:
    return load_rules(default_rules_path(), REGION)


def rules_with(tmp: Path, edits: dict[str, list[tuple[str, str]]]) -> RuleSet:
    """The shipped rules copied to ``tmp`` with text edits per file (each must apply)."""
    folder = tmp / "rules"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(default_rules_path(), folder)
    for name, pairs in edits.items():
        path = folder / name
        text = path.read_text(encoding="utf-8")
        for old, new in pairs:
            assert old in text, f"{name} no longer contains {old!r}"
            text = text.replace(old, new, 1)
        path.write_text(text, encoding="utf-8")
    return load_rules(folder, REGION)


SIMPLE = {"00-crm.yaml": [("mode: classic", "mode: simple")]}
OFFER = {"00-crm.yaml": [("  unknown_caller: create", "  unknown_caller: offer")]}


async def seed_lab(conn: asyncpg.Connection) -> None:
    """Import the lab's employees and known clients through the CSV import."""
    users = await import_csv(conn, Kind.USERS, USERS_CSV, REGION)
    contacts = await import_csv(conn, Kind.CONTACTS, CONTACTS_CSV, REGION)
    assert not users.rejected and not contacts.rejected


async def user_id(conn: asyncpg.Connection, ext: str) -> int:
    return int(await conn.fetchval("SELECT id FROM crm.users WHERE extension = $1", ext))


async def contact_id(conn: asyncpg.Connection, e164: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT entity_id FROM crm.phones WHERE entity_type = 'contact' AND e164 = $1", e164
        )
    )


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per table the CRM decisions write."""
    out = {}
    for table in (
        "calls",
        "leads",
        "deals",
        "contacts",
        "companies",
        "activities",
        "pending_calls",
        "tasks",
        "phones",
    ):
        out[table] = int(await conn.fetchval(f"SELECT count(*) FROM crm.{table}"))
    return out
