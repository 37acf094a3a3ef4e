"""Writing one call's decision to PostgreSQL: its ``crm.calls`` row and every action.

Exactly once, by the database: :func:`write_call` sends ONE statement whose
first part inserts the call's row with ``ON CONFLICT (pbx, call_id) DO
NOTHING``; every other part (data-modifying CTEs: the lead, its phone, its
activity, a task…) reads that insert's ``RETURNING`` output, so if the row
already existed (a daemon restart replaying the same call, the same capture
twice, two daemons on one database) nothing else is written.  Two
transactions applying the same call at the same time meet on that primary
key: the second waits for the first and then finds the row, so one set of
rows results whatever the timing.  Foreign keys to ``crm.calls`` are checked
at the end of the statement, when the call's row exists.

One statement instead of one per action matters at hundreds of calls a
second: on this kind of machine a round trip to PostgreSQL costs more than
the work it carries.  Employees are named by extension in the actions; the
statement resolves them to ``crm.users`` ids.

:func:`apply_decision` wraps both in one transaction.  A lost connection, or
a server that is shutting down, out of resources, or picked this transaction
as a deadlock victim, becomes :class:`~ami_daemon.crm.db.DatabaseUnavailable`
(try the call again later); any other refusal becomes :class:`ApplyError`.
Both name the call.  Either way
PostgreSQL rolls the transaction back: nothing is half-written.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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
    "call_statement",
    "recorded_outcome",
    "write_call",
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


# The call's row comes first; every other part of the statement reads its
# RETURNING output, so when the row already existed (ON CONFLICT DO NOTHING
# returns nothing) nothing else is inserted or updated.
_CALL_ROW = """call_row AS (
    INSERT INTO crm.calls (pbx, call_id, direction, external_e164, did_e164, trunk, status,
                           answered_by, final_agent, caller_extension, queue, started_at,
                           answered_at, ended_at, talk_seconds, crm_outcome, crm_reason, summary)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18::jsonb)
    ON CONFLICT (pbx, call_id) DO NOTHING
    RETURNING pbx, call_id
)"""

_CALL_PARAMS = 18

_USER = "(SELECT id FROM crm.users WHERE extension = {})"


@dataclass(frozen=True)
class _Template:
    """One kind of action as CTEs of the call's statement.

    ``ctes`` and ``result`` use ``{p}`` for the part's unique CTE-name prefix
    and ``$1…`` for its own parameters (renumbered when composed); ``result``
    is a ``text[]`` expression naming what was made.
    """

    ctes: str
    result: str


@dataclass(frozen=True)
class _Part:
    template: _Template
    params: tuple[Any, ...]


_LEAD = _Template(
    f"""{{p}}lead AS (
    INSERT INTO crm.leads (title, source, responsible_id, pbx, call_id)
    SELECT $1, $2, {_USER.format("$3")}, c.pbx, c.call_id FROM call_row c
    RETURNING id, responsible_id, pbx, call_id
), {{p}}phone AS (
    INSERT INTO crm.phones (entity_type, entity_id, e164)
    SELECT 'lead', id, $4 FROM {{p}}lead WHERE $4::text IS NOT NULL
), {{p}}act AS (
    INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
    SELECT pbx, call_id, 'lead', id, $5, responsible_id FROM {{p}}lead
)""",
    "ARRAY(SELECT 'lead:' || id FROM {p}lead)",
)


def _lead(a: CreateLead) -> _Part:
    return _Part(
        _LEAD,
        (a.title, a.source, a.responsible, a.e164, a.activity.value),
    )


_DEAL = _Template(
    f"""{{p}}resp AS (
    SELECT {_USER.format("$3")} AS id, c.pbx, c.call_id FROM call_row c
), {{p}}company AS (
    INSERT INTO crm.companies (name, source, responsible_id, pbx, call_id)
    SELECT $7, $2, r.id, r.pbx, r.call_id FROM {{p}}resp r WHERE $8::boolean
    RETURNING id
), {{p}}contact AS (
    INSERT INTO crm.contacts (name, company_id, source, responsible_id, pbx, call_id)
    SELECT $9, (SELECT id FROM {{p}}company), $2, r.id, r.pbx, r.call_id
    FROM {{p}}resp r WHERE $10::boolean
    RETURNING id
), {{p}}deal AS (
    INSERT INTO crm.deals (title, pipeline, stage, contact_id, company_id, source,
                           responsible_id, pbx, call_id)
    SELECT $1, $5, $6, (SELECT id FROM {{p}}contact), (SELECT id FROM {{p}}company), $2, r.id,
           r.pbx, r.call_id
    FROM {{p}}resp r
    RETURNING id, contact_id, company_id, responsible_id, pbx, call_id
), {{p}}lead AS (
    INSERT INTO crm.leads (title, status, source, responsible_id, contact_id, company_id,
                           deal_id, pbx, call_id)
    SELECT $1, 'converted', $2, d.responsible_id, d.contact_id, d.company_id, d.id, d.pbx,
           d.call_id
    FROM {{p}}deal d
    RETURNING id
), {{p}}phone AS (
    INSERT INTO crm.phones (entity_type, entity_id, e164)
    SELECT 'contact', id, $4 FROM {{p}}contact WHERE $4::text IS NOT NULL
    UNION ALL SELECT 'company', id, $4 FROM {{p}}company WHERE $4::text IS NOT NULL
), {{p}}act AS (
    INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
    SELECT d.pbx, d.call_id, 'deal', d.id, $11, d.responsible_id FROM {{p}}deal d
    UNION ALL SELECT r.pbx, r.call_id, 'contact', x.id, $11, r.id FROM {{p}}contact x, {{p}}resp r
    UNION ALL SELECT r.pbx, r.call_id, 'company', x.id, $11, r.id FROM {{p}}company x, {{p}}resp r
)""",
    "ARRAY(SELECT 'deal:' || id FROM {p}deal) || ARRAY(SELECT 'contact:' || id FROM {p}contact)"
    " || ARRAY(SELECT 'company:' || id FROM {p}company)"
    " || ARRAY(SELECT 'lead:' || id || ' (converted)' FROM {p}lead)",
)


def _deal(a: CreateDeal) -> _Part:
    return _Part(
        _DEAL,
        (
            a.title,
            a.source,
            a.responsible,
            a.e164,
            a.pipeline,
            a.stage,
            f"Company {a.e164 or '(anonymous caller)'}",
            a.with_company,
            f"Client {a.e164 or '(anonymous caller)'}",
            a.with_contact,
            a.activity.value,
        ),
    )


_ACTIVITIES = _Template(
    """{p}act AS (
    INSERT INTO crm.activities (pbx, call_id, entity_type, entity_id, status, responsible_id)
    SELECT c.pbx, c.call_id, a.entity_type, a.entity_id, a.status, u.id
    FROM call_row c,
         unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
             AS a (entity_type, entity_id, status, extension)
         LEFT JOIN crm.users u ON u.extension = a.extension
    ON CONFLICT (pbx, call_id, entity_type, entity_id) DO NOTHING
    RETURNING entity_type, entity_id
)""",
    "ARRAY(SELECT 'activity on ' || entity_type || ':' || entity_id FROM {p}act"
    " ORDER BY entity_type = 'deal', entity_type, entity_id)",
)


def _activities(acts: list[LogActivity]) -> _Part:
    return _Part(
        _ACTIVITIES,
        (
            [a.entity_type for a in acts],
            [a.entity_id for a in acts],
            [a.status.value for a in acts],
            [a.responsible for a in acts],
        ),
    )


_PENDING = _Template(
    """{p}pending AS (
    INSERT INTO crm.pending_calls (pbx, call_id, e164, did_e164, answered_by, source)
    SELECT c.pbx, c.call_id, $1, $2, $3, $4 FROM call_row c
    RETURNING id
)""",
    "ARRAY(SELECT 'pending call #' || id FROM {p}pending)",
)


def _pending(a: CreatePendingCall) -> _Part:
    return _Part(
        _PENDING,
        (a.e164, a.did, a.answered_by, a.source),
    )


_TASK = _Template(
    f"""{{p}}task AS (
    INSERT INTO crm.tasks (title, pbx, call_id, e164, entity_type, entity_id, responsible_id)
    SELECT $1, c.pbx, c.call_id, $2, $3, $4::bigint, {_USER.format("$5")} FROM call_row c
    RETURNING id
)""",
    "ARRAY(SELECT 'callback task #' || id FROM {p}task)",
)


def _task(a: CreateCallbackTask) -> _Part:
    return _Part(
        _TASK,
        (a.title, a.e164, a.entity_type, a.entity_id, a.responsible),
    )


_CLOSE = _Template(
    """{p}closed AS (
    UPDATE crm.tasks t
    SET status = 'closed', closed_at = now(), closed_by_pbx = c.pbx, closed_by_call_id = c.call_id
    FROM call_row c
    WHERE t.id = ANY($1::bigint[]) AND t.status = 'open'
    RETURNING t.id
)""",
    "ARRAY(SELECT 'closed task #' || id FROM {p}closed ORDER BY id)",
)


def _close(a: CloseCallbackTasks) -> _Part:
    return _Part(
        _CLOSE,
        (list(a.task_ids),),
    )


def _part(action: Action) -> _Part:
    match action:
        case CreateLead():
            return _lead(action)
        case CreateDeal():
            return _deal(action)
        case CreatePendingCall():
            return _pending(action)
        case CreateCallbackTask():
            return _task(action)
        case CloseCallbackTasks():
            return _close(action)
        case LogActivity():
            return _activities([action])
    raise TypeError(f"no SQL for {type(action).__name__}")


_PARAM = re.compile(r"\$(\d+)")


def _shift(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m[1]) + offset}", sql)


def call_statement(summary: CallSummary, decision: Decision) -> tuple[str, list[Any]]:
    """The ONE statement that records the call and writes every action.

    The activities of a call (its item and the item's open deal) become one
    multi-row insert.  Distinct decisions share few statement shapes, so the
    driver's prepared-statement cache keeps them all.
    """
    params: list[Any] = [
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
    ]
    parts: list[_Part] = []
    activities = [a for a in decision.actions if isinstance(a, LogActivity)]
    if activities:
        parts.append(_activities(activities))
    parts.extend(_part(a) for a in decision.actions if not isinstance(a, LogActivity))
    shape = tuple((part.template, len(part.params)) for part in parts)
    for part in parts:
        params.extend(part.params)
    return _compose(shape), params


@functools.lru_cache(maxsize=64)
def _compose(shape: tuple[tuple[_Template, int], ...]) -> str:
    """The statement text for a sequence of action kinds (few shapes exist: cached)."""
    ctes = [_CALL_ROW]
    results = []
    offset = _CALL_PARAMS
    for i, (template, count) in enumerate(shape):
        prefix = f"a{i}_"
        ctes.append(_shift(template.ctes.replace("{p}", prefix), offset))
        results.append(_shift(template.result.replace("{p}", prefix), offset))
        offset += count
    made = " || ".join(results) if results else "ARRAY[]::text[]"
    sql = (
        "WITH "
        + ",\n".join(ctes)
        + f"\nSELECT EXISTS (SELECT 1 FROM call_row) AS recorded, {made} AS made"
    )
    return sql


async def write_call(
    conn: asyncpg.Connection, summary: CallSummary, decision: Decision
) -> list[str] | None:
    """Record the call and write its actions, in one statement of the caller's transaction.

    Returns what was made (``["lead:12"]``; empty for a skipped call), or None
    when the call was already recorded and nothing was written.
    """
    sql, params = call_statement(summary, decision)
    row = await conn.fetchrow(sql, *params)
    if not row["recorded"]:
        return None
    return list(row["made"])


async def recorded_outcome(conn: asyncpg.Connection, summary: CallSummary) -> str | None:
    """The ``crm_outcome`` stored for this call, if it was recorded."""
    value = await conn.fetchval(
        "SELECT crm_outcome FROM crm.calls WHERE pbx = $1 AND call_id = $2",
        summary.pbx,
        summary.call_id,
    )
    return None if value is None else str(value)


async def apply_decision(
    conn: asyncpg.Connection, summary: CallSummary, decision: Decision
) -> list[str] | None:
    """Record the call and its actions in one transaction (see :func:`write_call`)."""
    async with call_errors(summary, "storing its CRM decision"), conn.transaction():
        return await write_call(conn, summary, decision)
