"""One finished call through the CRM: facts → decision → apply, as daemon and replay run it.

The live daemon calls :meth:`CallProcessor.process` once per ``CallEnded``
summary (inside its own ``try/except`` that logs the call id and keeps the
daemon alive); ``ami-daemon replay`` calls the same thing for every call of
a capture, and ``--dry-run`` calls :meth:`CallProcessor.preview`.

Everything for one call happens in ONE transaction:

1. a transaction-level advisory lock on the outside number, so that two calls
   of one number (two daemons, or two calls ending together) are decided one
   after the other: the second sees the lead the first created and logs an
   activity instead of creating a second lead;
2. the CRM facts about the number (:func:`ami_daemon.crm.facts.read_facts`);
3. the pure decision (:func:`ami_daemon.rules.decide.decide`);
4. one statement (:func:`ami_daemon.crm.apply.write_call`) inserting the
   ``crm.calls`` row ``ON CONFLICT DO NOTHING`` and, only if it was new, the
   decision's actions: a call already recorded writes nothing.

Round trips: ``BEGIN`` with the lock, the lookup (plus the number's open
tasks for a known client), the write, ``COMMIT``.

A dry run does 2 and 3 in a read-only transaction and writes nothing.
"""

from __future__ import annotations

import contextlib
import enum
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import asyncpg

from ami_daemon.calls.summary import CallSummary
from ami_daemon.crm.apply import call_errors, recorded_outcome, write_call
from ami_daemon.crm.facts import read_facts
from ami_daemon.rules.actions import Decision
from ami_daemon.rules.decide import decide
from ami_daemon.rules.model import RuleSet

__all__ = ["CallProcessor", "Processed", "Recorded", "preview_call", "process_call"]

#: First key of the two-key advisory lock taken per outside number.
NUMBER_LOCK_SPACE = 7351


class Recorded(str, enum.Enum):
    """What happened in the database for one processed call."""

    WRITTEN = "written"  # the call row and its actions were committed
    ALREADY_RECORDED = "already_recorded"  # the call was there before: nothing written
    DRY_RUN = "dry_run"  # nothing written on purpose


@dataclass(frozen=True)
class Processed:
    """One call's result: the decision and what the database got."""

    summary: CallSummary
    decision: Decision
    recorded: Recorded
    created: tuple[str, ...] = ()
    previous_outcome: str | None = None  # when ALREADY_RECORDED: what was stored then

    def to_json_dict(self) -> dict[str, Any]:
        """DESIGN's dry-run line: ``{"call", "outcome", "actions", "reasons"}``."""
        return {"call": self.summary.to_json_dict(), **self.decision.to_json_dict()}

    def line(self) -> str:
        """A short human line: ``main/1764260890.12 lead_created: lead:3, …``."""
        ref = f"{self.summary.pbx}/{self.summary.call_id}"
        if self.recorded is Recorded.ALREADY_RECORDED:
            return f"{ref} already recorded as {self.previous_outcome}: nothing written"
        head = f"{ref} {self.decision.outcome.value}"
        if self.created:
            return f"{head}: {', '.join(self.created)}"
        return head


#: What crm.phones accepts (its CHECK constraint): safe to write into SQL text.
_E164 = re.compile(r"^\+[1-9][0-9]{3,14}$")


@asynccontextmanager
async def _number_transaction(conn: asyncpg.Connection, e164: str | None) -> AsyncIterator[None]:
    """A transaction holding the number's advisory lock, opened in ONE round trip.

    ``BEGIN`` and the lock go out as one simple-query message (the number is
    checked to be E.164 digits first, so it can be written into the text);
    every round trip counts when hundreds of calls a second end.  Rolled back
    on any error, committed otherwise.
    """
    if e164 is not None and _E164.match(e164):
        await conn.execute(
            f"BEGIN; SELECT pg_advisory_xact_lock({NUMBER_LOCK_SPACE}, hashtext('{e164}'))"
        )
    else:
        await conn.execute("BEGIN")
        if e164 is not None:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", NUMBER_LOCK_SPACE, e164
            )
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK", timeout=5.0)
        raise
    await conn.execute("COMMIT")


async def _decide_in_tx(
    conn: asyncpg.Connection,
    summary: CallSummary,
    rules: RuleSet,
    zone: tzinfo,
    now: datetime | None,
) -> Decision:
    facts = await read_facts(conn, summary.external_number)
    return decide(summary, facts, rules, zone, now)


async def process_call(
    conn: asyncpg.Connection,
    summary: CallSummary,
    rules: RuleSet,
    zone: tzinfo,
    now: datetime | None = None,
) -> Processed:
    """Decide and write one call in one transaction (see the module docstring).

    Raises :class:`~ami_daemon.crm.db.DatabaseUnavailable` when the connection
    is lost, :class:`~ami_daemon.crm.apply.ApplyError` when PostgreSQL refuses;
    both name the call and leave nothing of it written.
    """
    async with (
        call_errors(summary, "deciding and storing it"),
        _number_transaction(conn, summary.external_number),
    ):
        decision = await _decide_in_tx(conn, summary, rules, zone, now)
        created = await write_call(conn, summary, decision)
        if created is None:
            previous = await recorded_outcome(conn, summary)
            return Processed(
                summary, decision, Recorded.ALREADY_RECORDED, previous_outcome=previous
            )
    return Processed(summary, decision, Recorded.WRITTEN, tuple(created))


async def preview_call(
    conn: asyncpg.Connection,
    summary: CallSummary,
    rules: RuleSet,
    zone: tzinfo,
    now: datetime | None = None,
) -> Processed:
    """The dry run: read the CRM, decide, write nothing."""
    async with call_errors(summary, "reading the CRM"), conn.transaction(readonly=True):
        decision = await _decide_in_tx(conn, summary, rules, zone, now)
    return Processed(summary, decision, Recorded.DRY_RUN)


class CallProcessor:
    """What the live daemon holds: a pool, the current rules and the PBX's time zone.

    ``rules`` is called once per call (``RulesSource.current`` after a SIGHUP
    reload gives the new rules to the next call, never half of a decision);
    ``clock`` dates calls whose summary carries no times.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        rules: Callable[[], RuleSet],
        zone: tzinfo,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._zone = zone
        self._clock = clock

    async def process(self, summary: CallSummary) -> Processed:
        """Decide and write one finished call (idempotent; see :func:`process_call`)."""
        async with call_errors(summary, "taking a database connection"):
            conn = await self._pool.acquire()
        try:
            return await process_call(conn, summary, self._rules(), self._zone, self._clock())
        finally:
            await self._pool.release(conn)

    async def preview(self, summary: CallSummary) -> Processed:
        """What :meth:`process` would do, without writing."""
        async with call_errors(summary, "taking a database connection"):
            conn = await self._pool.acquire()
        try:
            return await preview_call(conn, summary, self._rules(), self._zone, self._clock())
        finally:
            await self._pool.release(conn)
