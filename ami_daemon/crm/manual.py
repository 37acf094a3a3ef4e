"""What employees do by hand after a call: the seed's manual half of the integration.

- Pending calls (S4, ``unknown_caller: offer``): an unknown caller's call
  created nothing; an employee turns it into a lead or a contact
  (:func:`create_from_call`), as Bitrix24's call window offers.
- Converting a lead (S2, classic mode): into a contact, optionally with a
  company and a deal (:func:`convert_lead`).
- Callback tasks (B3): listed by :func:`list_tasks`; the daemon opens and
  closes them.

Each change is one transaction that locks the row it starts from, so two
employees clicking at once make one record, and running the same command
twice says what was already done instead of doing it again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, tzinfo

import asyncpg

from ami_daemon.errors import UserError
from ami_daemon.rules.actions import when_text

__all__ = [
    "Conversion",
    "CreateAs",
    "FromCall",
    "ManualError",
    "PendingCall",
    "Task",
    "convert_lead",
    "create_from_call",
    "list_pending",
    "list_tasks",
]


class ManualError(UserError):
    """A manual action that cannot be done; the message says why and what to do."""


class CreateAs(str, enum.Enum):
    LEAD = "lead"
    CONTACT = "contact"


@dataclass(frozen=True)
class PendingCall:
    id: int
    pbx: str
    call_id: str
    e164: str | None  # None: an anonymous caller
    did: str | None
    answered_by: str | None
    source: str
    status: str
    started_at: datetime | None
    resolved: str | None  # "lead:12" once created


@dataclass(frozen=True)
class FromCall:
    """The record made from a pending call; ``already`` when an earlier run made it."""

    entity_type: str
    entity_id: int
    already: bool

    @property
    def ref(self) -> str:
        return f"{self.entity_type}:{self.entity_id}"


@dataclass(frozen=True)
class Conversion:
    lead_id: int
    contact_id: int
    company_id: int | None
    deal_id: int | None


@dataclass(frozen=True)
class Task:
    id: int
    title: str
    e164: str
    entity: str
    responsible: str | None  # extension
    status: str
    pbx: str
    call_id: str
    created_at: datetime
    closed_at: datetime | None
    closed_by: str | None  # "pbx/call_id"


_PENDING = """
SELECT p.id, p.pbx, p.call_id, p.e164, p.did_e164, p.answered_by, p.source, p.status,
       p.resolved_entity_type, p.resolved_entity_id, c.started_at
FROM crm.pending_calls p JOIN crm.calls c USING (pbx, call_id)
WHERE ($1 OR p.status = 'open')
ORDER BY p.created_at, p.id
"""


def _pending(row: asyncpg.Record) -> PendingCall:
    resolved = None
    if row["resolved_entity_type"] is not None:
        resolved = f"{row['resolved_entity_type']}:{row['resolved_entity_id']}"
    return PendingCall(
        row["id"],
        row["pbx"],
        row["call_id"],
        row["e164"],
        row["did_e164"],
        row["answered_by"],
        row["source"],
        row["status"],
        row["started_at"],
        resolved,
    )


async def list_pending(
    conn: asyncpg.Connection, include_resolved: bool = False
) -> list[PendingCall]:
    """Pending unknown calls, oldest first (only open ones unless ``include_resolved``)."""
    return [_pending(r) for r in await conn.fetch(_PENDING, include_resolved)]


_FIND_PENDING = """
SELECT p.*, c.status AS call_status, c.started_at
FROM crm.pending_calls p JOIN crm.calls c USING (pbx, call_id)
WHERE p.call_id = $1 AND ($2::text IS NULL OR p.pbx = $2)
ORDER BY p.pbx
FOR UPDATE OF p
"""

_USER = "(SELECT id FROM crm.users WHERE extension = $3)"

_NEW_LEAD = f"""
INSERT INTO crm.leads (title, source, responsible_id, pbx, call_id)
VALUES ($1, $2, {_USER}, $4, $5) RETURNING id
"""

_NEW_CONTACT = f"""
INSERT INTO crm.contacts (name, source, responsible_id, pbx, call_id)
VALUES ($1, $2, {_USER}, $4, $5) RETURNING id
"""


async def create_from_call(
    conn: asyncpg.Connection,
    call_id: str,
    create_as: CreateAs,
    zone: tzinfo,
    pbx: str | None = None,
) -> FromCall:
    """Turn the pending call ``call_id`` into a lead or a contact owning its number.

    The new item gets the call's number, the source of the number the call
    came in on, the employee who answered as responsible, and the call as an
    activity.  ``pbx`` picks the PBX when several share the database.
    """
    async with conn.transaction():
        rows = await conn.fetch(_FIND_PENDING, call_id, pbx)
        if not rows:
            raise ManualError(
                f"no pending call {call_id!r}"
                + (f" on PBX {pbx}" if pbx else "")
                + " (see 'ami-daemon crm pending')"
            )
        if len(rows) > 1:
            names = ", ".join(r["pbx"] for r in rows)
            raise ManualError(f"call {call_id!r} is pending on several PBXs ({names}): use --pbx")
        row = rows[0]
        if row["status"] != "open":
            return FromCall(row["resolved_entity_type"], row["resolved_entity_id"], already=True)
        e164 = row["e164"]
        caller = e164 or "an anonymous caller"
        moment = row["started_at"].astimezone(zone) if row["started_at"] else None
        args = (row["source"], row["answered_by"], row["pbx"], row["call_id"])
        if create_as is CreateAs.LEAD:
            new_id = await conn.fetchval(
                _NEW_LEAD, f"Call from {caller} on {when_text(moment)}", *args
            )
        else:
            new_id = await conn.fetchval(_NEW_CONTACT, e164 or "Anonymous caller", *args)
        entity = create_as.value
        if e164 is not None:
            await conn.execute(
                "INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                entity,
                new_id,
                e164,
            )
        status = "answered" if row["call_status"] == "answered" else "missed"
        await conn.execute(
            "INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, "
            "responsible_id) SELECT $1, $2, $3, $4, $5, responsible_id FROM crm."
            + ("leads" if create_as is CreateAs.LEAD else "contacts")
            + " WHERE id = $4 ON CONFLICT DO NOTHING",
            row["pbx"],
            row["call_id"],
            entity,
            new_id,
            status,
        )
        await conn.execute(
            "UPDATE crm.pending_calls SET status = 'resolved', resolved_entity_type = $2, "
            "resolved_entity_id = $3, resolved_at = now() WHERE id = $1",
            row["id"],
            entity,
            new_id,
        )
    return FromCall(entity, int(new_id), already=False)


async def convert_lead(
    conn: asyncpg.Connection,
    lead_id: int,
    with_deal: bool,
    with_company: bool,
    pipeline: str,
    stage: str,
) -> Conversion:
    """Convert a lead into a contact (+ a company, + a deal in ``pipeline``/``stage``).

    The new items take the lead's phones, source and responsible; the lead
    becomes ``converted`` and points at them, so the number's next call is
    logged on the contact (DESIGN's precedence ignores converted leads).
    """
    async with conn.transaction():
        lead = await conn.fetchrow(
            "SELECT id, title, status, source, responsible_id, contact_id, deal_id "
            "FROM crm.leads WHERE id = $1 FOR UPDATE",
            lead_id,
        )
        if lead is None:
            raise ManualError(f"no lead {lead_id}")
        if lead["status"] == "converted":
            raise ManualError(
                f"lead {lead_id} is already converted (contact {lead['contact_id']}, "
                f"deal {lead['deal_id']})"
            )
        if lead["status"] == "junk":
            raise ManualError(f"lead {lead_id} is marked junk; it cannot be converted")
        numbers = [
            r["e164"]
            for r in await conn.fetch(
                "SELECT e164 FROM crm.phones WHERE entity_type = 'lead' AND entity_id = $1 "
                "ORDER BY e164",
                lead_id,
            )
        ]
        name = numbers[0] if numbers else lead["title"]
        source, responsible = lead["source"], lead["responsible_id"]
        company_id = None
        if with_company:
            company_id = await conn.fetchval(
                "INSERT INTO crm.companies (name, source, responsible_id) VALUES ($1, $2, $3) "
                "RETURNING id",
                f"Company {name}",
                source,
                responsible,
            )
        contact_id = await conn.fetchval(
            "INSERT INTO crm.contacts (name, company_id, source, responsible_id) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            name,
            company_id,
            source,
            responsible,
        )
        deal_id = None
        if with_deal:
            deal_id = await conn.fetchval(
                "INSERT INTO crm.deals (title, pipeline, stage, contact_id, company_id, source, "
                "responsible_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                lead["title"],
                pipeline,
                stage,
                contact_id,
                company_id,
                source,
                responsible,
            )
        for entity, entity_id in (("contact", contact_id), ("company", company_id)):
            if entity_id is None:
                continue
            await conn.executemany(
                "INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(entity, entity_id, e164) for e164 in numbers],
            )
        await conn.execute(
            "UPDATE crm.leads SET status = 'converted', contact_id = $2, company_id = $3, "
            "deal_id = $4 WHERE id = $1",
            lead_id,
            contact_id,
            company_id,
            deal_id,
        )
    return Conversion(lead_id, int(contact_id), company_id, deal_id)


_TASKS = """
SELECT t.id, t.title, t.e164, t.entity_type, t.entity_id, u.extension, t.status, t.pbx,
       t.call_id, t.created_at, t.closed_at, t.closed_by_pbx, t.closed_by_call_id
FROM crm.tasks t LEFT JOIN crm.users u ON u.id = t.responsible_id
WHERE (NOT $1 OR t.status = 'open')
ORDER BY t.created_at, t.id
"""


async def list_tasks(conn: asyncpg.Connection, open_only: bool = False) -> list[Task]:
    """Callback tasks, oldest first."""
    out = []
    for r in await conn.fetch(_TASKS, open_only):
        closed_by = f"{r['closed_by_pbx']}/{r['closed_by_call_id']}" if r["closed_at"] else None
        out.append(
            Task(
                r["id"],
                r["title"],
                r["e164"],
                f"{r['entity_type']}:{r['entity_id']}",
                r["extension"],
                r["status"],
                r["pbx"],
                r["call_id"],
                r["created_at"],
                r["closed_at"],
                closed_by,
            )
        )
    return out
