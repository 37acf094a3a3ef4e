"""Writing one call's decision to PostgreSQL: its ``crm.calls`` row and every action.

Exactly once, by the database: :func:`record_call` inserts the call's row
with ``ON CONFLICT (pbx, call_id) DO NOTHING`` before anything else, inside
the caller's transaction.  If the row already existed (a daemon restart
replaying the same call, the same capture twice, two daemons on one
database) nothing else is written.  Two transactions applying the same call
at the same time meet on that primary key: the second waits for the first and
then finds the row, so one set of rows results whatever the timing.

Each action is one SQL statement (data-modifying CTEs make a lead, its phone
and its activity in one round trip).  Employees are named by extension in the
actions; the statements resolve them to ``crm.users`` ids.

:func:`apply_decision` wraps both in one transaction.  A lost connection, or
a server that is shutting down, out of resources, or picked this transaction
as a deadlock victim, becomes :class:`~ami_daemon.crm.db.DatabaseUnavailable`
(try the call again later); any other refusal becomes :class:`ApplyError`.
Both name the call.  Either way
PostgreSQL rolls the transaction back: nothing is half-written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from ami_daemon.calls.summary import CallSummary
from ami_daemon.crm.db import DatabaseUnavailable
from ami_daemon.errors import UserError
from ami_daemon.rules.actions import (
    Action,
    CloseCallbackTasks,
    CreateCallbackTask,
    CreateDeal,
    CreateLead,
    CreatePendingCall,
    Decision,
    LogActivity,
)

__all__ = [
    "ApplyError",
    "apply_decision",
    "call_errors",
    "record_call",
    "recorded_outcome",
    "write_actions",
]


class ApplyError(UserError):
    """PostgreSQL refused to store a call's decision; the message names the call."""


#: Errors meaning "the connection is gone", not "the database said no".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


#: SQLSTATE classes that mean "not now" rather than "never": 08 connection
#: exception, 40 transaction rollback (deadlock, serialization), 53 insufficient
#: resources, 57 operator intervention (server shutting down, query cancelled),
#: 58 system error.  Retrying the same call later is right for these.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


@asynccontextmanager
async def call_errors(summary: CallSummary, doing: str) -> AsyncIterator[None]:
    """Map driver errors during ``doing`` to one domain error naming the call."""
    ref = f"call {summary.pbx}/{summary.call_id}"
    try:
        yield
    except CONNECTION_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise DatabaseUnavailable(
            f"{ref}: database connection lost while {doing} ({reason}); nothing of this call "
            "was written"
        ) from exc
    except asyncpg.PostgresError as exc:
        if (getattr(exc, "sqlstate", None) or "")[:2] in TRANSIENT_SQLSTATE_CLASSES:
            raise DatabaseUnavailable(
                f"{ref}: the database could not take it now while {doing} ({exc}); nothing of "
                "this call was written, try again"
            ) from exc
        raise ApplyError(f"{ref}: the database refused {doing}: {exc}") from exc


_INSERT_CALL = """
INSERT INTO crm.calls (pbx, call_id, direction, external_e164, did_e164, trunk, status,
                       answered_by, final_agent, caller_extension, queue, started_at,
                       answered_at, ended_at, talk_seconds, crm_outcome, crm_reason, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::jsonb)
ON CONFLICT (pbx, call_id) DO NOTHING
RETURNING true
"""


async def record_call(conn: asyncpg.Connection, summary: CallSummary, decision: Decision) -> bool:
    """Insert the call's row; False (and nothing written) when it was already recorded.

    Must run inside the transaction that then writes the actions.
    """
    inserted = await conn.fetchval(
        _INSERT_CALL,
        summary.pbx,
        summary.call_id,
        summary.direction.value,
        summary.external_number,
        summary.did,
        summary.trunk,
        summary.status.value,
        summary.answered_by,
        summary.final_agent,
        summary.caller_extension,
        summary.queue,
        summary.started_at,
        summary.answered_at,
        summary.ended_at,
        summary.talk_seconds,
        decision.outcome.value,
        decision.reason_text,
        json.dumps(summary.to_json_dict()),
    )
    return bool(inserted)


async def recorded_outcome(conn: asyncpg.Connection, summary: CallSummary) -> str | None:
    """The ``crm_outcome`` stored for this call, if it was recorded."""
    value = await conn.fetchval(
        "SELECT crm_outcome FROM crm.calls WHERE pbx = $1 AND call_id = $2",
        summary.pbx,
        summary.call_id,
    )
    return None if value is None else str(value)


_USER = "(SELECT id FROM crm.users WHERE extension = {})"

_CREATE_LEAD = f"""
WITH lead AS (
    INSERT INTO crm.leads (title, source, responsible_id, pbx, call_id)
    VALUES ($1, $2, {_USER.format("$3")}, $4, $5)
    RETURNING id, responsible_id
), phone AS (
    INSERT INTO crm.phones (entity_type, entity_id, e164) SELECT 'lead', id, $6 FROM lead
), activity AS (
    INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
    SELECT $4, $5, 'lead', id, $7, responsible_id FROM lead
)
SELECT id FROM lead
"""

_CREATE_DEAL = f"""
WITH resp AS (
    SELECT {_USER.format("$3")} AS id
), company AS (
    INSERT INTO crm.companies (name, source, responsible_id, pbx, call_id)
    SELECT $9, $2, resp.id, $4, $5 FROM resp WHERE $10::boolean
    RETURNING id
), contact AS (
    INSERT INTO crm.contacts (name, company_id, source, responsible_id, pbx, call_id)
    SELECT $11, (SELECT id FROM company), $2, resp.id, $4, $5 FROM resp WHERE $12::boolean
    RETURNING id
), deal AS (
    INSERT INTO crm.deals (title, pipeline, stage, contact_id, company_id, source,
                           responsible_id, pbx, call_id)
    SELECT $1, $7, $8, (SELECT id FROM contact), (SELECT id FROM company), $2, resp.id, $4, $5
    FROM resp
    RETURNING id, contact_id, company_id, responsible_id
), lead AS (
    INSERT INTO crm.leads (title, status, source, responsible_id, contact_id, company_id,
                           deal_id, pbx, call_id)
    SELECT $1, 'converted', $2, d.responsible_id, d.contact_id, d.company_id, d.id, $4, $5
    FROM deal d
    RETURNING id
), phone AS (
    INSERT INTO crm.phones (entity_type, entity_id, e164)
    SELECT 'contact', id, $6 FROM contact UNION ALL SELECT 'company', id, $6 FROM company
), activity AS (
    INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
    SELECT $4, $5, 'deal', d.id, $13, d.responsible_id FROM deal d
    UNION ALL SELECT $4, $5, 'contact', id, $13, (SELECT id FROM resp) FROM contact
    UNION ALL SELECT $4, $5, 'company', id, $13, (SELECT id FROM resp) FROM company
)
SELECT (SELECT id FROM deal) AS deal_id, (SELECT id FROM contact) AS contact_id,
       (SELECT id FROM company) AS company_id, (SELECT id FROM lead) AS lead_id
"""

# One statement for all of a call's activities (the item and its open deal).
_LOG_ACTIVITIES = """
INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
SELECT $1, $2, a.entity_type, a.entity_id, a.status, u.id
FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[])
     AS a (entity_type, entity_id, status, extension)
LEFT JOIN crm.users u ON u.extension = a.extension
ON CONFLICT (pbx, call_id, entity_type, entity_id) DO NOTHING
"""

_CREATE_PENDING = """
INSERT INTO crm.pending_calls (pbx, call_id, e164, did_e164, answered_by, source)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
"""

_CREATE_TASK = f"""
INSERT INTO crm.tasks (title, pbx, call_id, e164, entity_type, entity_id, responsible_id)
VALUES ($1, $2, $3, $4, $5, $6, {_USER.format("$7")})
RETURNING id
"""

_CLOSE_TASKS = """
UPDATE crm.tasks SET status = 'closed', closed_at = now(), closed_by_pbx = $2,
                     closed_by_call_id = $3
WHERE id = ANY($1::bigint[]) AND status = 'open'
RETURNING id
"""


@dataclass(frozen=True)
class _Call:
    pbx: str
    call_id: str


async def _create_lead(conn: asyncpg.Connection, call: _Call, a: CreateLead) -> list[str]:
    lead_id = await conn.fetchval(
        _CREATE_LEAD,
        a.title,
        a.source,
        a.responsible,
        call.pbx,
        call.call_id,
        a.e164,
        a.activity.value,
    )
    return [f"lead:{lead_id}"]


async def _create_deal(conn: asyncpg.Connection, call: _Call, a: CreateDeal) -> list[str]:
    row = await conn.fetchrow(
        _CREATE_DEAL,
        a.title,
        a.source,
        a.responsible,
        call.pbx,
        call.call_id,
        a.e164,
        a.pipeline,
        a.stage,
        f"Company {a.e164}",
        a.with_company,
        f"Client {a.e164}",
        a.with_contact,
        a.activity.value,
    )
    made = [f"deal:{row['deal_id']}"]
    if row["contact_id"] is not None:
        made.append(f"contact:{row['contact_id']}")
    if row["company_id"] is not None:
        made.append(f"company:{row['company_id']}")
    made.append(f"lead:{row['lead_id']} (converted)")
    return made


async def _log_activities(
    conn: asyncpg.Connection, call: _Call, acts: list[LogActivity]
) -> list[str]:
    await conn.execute(
        _LOG_ACTIVITIES,
        call.pbx,
        call.call_id,
        [a.entity_type for a in acts],
        [a.entity_id for a in acts],
        [a.status.value for a in acts],
        [a.responsible for a in acts],
    )
    return [f"activity on {a.entity_type}:{a.entity_id}" for a in acts]


async def _create_pending(conn: asyncpg.Connection, call: _Call, a: CreatePendingCall) -> list[str]:
    pending_id = await conn.fetchval(
        _CREATE_PENDING, call.pbx, call.call_id, a.e164, a.did, a.answered_by, a.source
    )
    return [f"pending call #{pending_id}"]


async def _create_task(conn: asyncpg.Connection, call: _Call, a: CreateCallbackTask) -> list[str]:
    task_id = await conn.fetchval(
        _CREATE_TASK,
        a.title,
        call.pbx,
        call.call_id,
        a.e164,
        a.entity_type,
        a.entity_id,
        a.responsible,
    )
    return [f"callback task #{task_id}"]


async def _close_tasks(conn: asyncpg.Connection, call: _Call, a: CloseCallbackTasks) -> list[str]:
    rows = await conn.fetch(_CLOSE_TASKS, list(a.task_ids), call.pbx, call.call_id)
    return [f"closed task #{r['id']}" for r in rows]


_Writer = Callable[[asyncpg.Connection, _Call, "Action"], Awaitable[list[str]]]

_WRITERS: dict[type[Action], _Writer] = {
    CreateLead: _create_lead,  # type: ignore[dict-item]
    CreateDeal: _create_deal,  # type: ignore[dict-item]
    CreatePendingCall: _create_pending,  # type: ignore[dict-item]
    CreateCallbackTask: _create_task,  # type: ignore[dict-item]
    CloseCallbackTasks: _close_tasks,  # type: ignore[dict-item]
}


async def write_actions(
    conn: asyncpg.Connection, summary: CallSummary, decision: Decision
) -> list[str]:
    """Write every action (after :func:`record_call`, same transaction); what was made."""
    call = _Call(summary.pbx, summary.call_id)
    made: list[str] = []
    activities = [a for a in decision.actions if isinstance(a, LogActivity)]
    if activities:
        made.extend(await _log_activities(conn, call, activities))
    for action in decision.actions:
        if not isinstance(action, LogActivity):
            made.extend(await _WRITERS[type(action)](conn, call, action))
    return made


async def apply_decision(
    conn: asyncpg.Connection, summary: CallSummary, decision: Decision
) -> list[str] | None:
    """Record the call and its actions in one transaction.

    Returns what was created (``["lead:12", "activity on lead:12"]`` style
    words; empty for a skipped call), or None when the call was already
    recorded and nothing was written.
    """
    async with call_errors(summary, "storing its CRM decision"), conn.transaction():
        if not await record_call(conn, summary, decision):
            return None
        return await write_actions(conn, summary, decision)
