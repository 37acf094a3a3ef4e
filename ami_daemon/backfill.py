"""Recovering calls the daemon did not see end, from Asterisk's CDR (FEATURES B6).

Two situations leave calls without an observed end:

- the daemon was stopped or dead: calls that started and ended meanwhile
  were never seen at all, calls in progress at the stop never ended for it;
- the AMI link was cut: after the reconnect the tracker learns from
  ``CoreShowChannels`` which of its calls vanished meanwhile
  (:meth:`Tracker.end_missing` reports them ``interrupted``).

Asterisk wrote a CDR for every leg regardless.  For the gap, the backfill
reads the CDR records (:mod:`ami_daemon.cdr`), groups them into calls, and:

- completes each held-back interrupted call from the CDR call with the same
  call id (Linkedid): status, who answered, who was on the call at the end,
  end time and talk seconds come from the CDR; the AMI side keeps what the CDR
  cannot tell (DID, transfers seen before the cut);
- adds the calls the daemon never saw, except those still in progress (their
  channels were alive at the reconnect: the tracker follows them);
- leaves out calls the CRM already has (``crm.calls``): a call is written
  once, whichever path saw it first — the unique key guarantees it anyway.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from ami_daemon.calls.summary import CallStatus, CallSummary
from ami_daemon.cdr.calls import summaries_from_records
from ami_daemon.cdr.sources import read_records
from ami_daemon.config import Config

log = logging.getLogger(__name__)

#: Read the CDR a little before the gap: a call's first leg may predate the cut.
GAP_MARGIN = timedelta(minutes=5)
STATE_FILE = "state.json"


def complete_from_cdr(held: CallSummary, cdr: CallSummary | None) -> CallSummary:
    """The interrupted call, with the outcome the CDR recorded (itself when unknown)."""
    if cdr is None:
        return held
    agents = tuple(dict.fromkeys((*held.agents_rung, *cdr.agents_rung)))
    answered_by = held.answered_by or cdr.answered_by
    return dataclasses.replace(
        held,
        status=cdr.status,
        answered_by=answered_by,
        final_agent=cdr.final_agent or held.final_agent,
        agents_rung=agents,
        did=held.did or cdr.did,
        external_number=held.external_number or cdr.external_number,
        queue=held.queue or cdr.queue,
        started_at=held.started_at or cdr.started_at,
        answered_at=held.answered_at or cdr.answered_at,
        ended_at=cdr.ended_at or held.ended_at,
        talk_seconds=cdr.talk_seconds
        if cdr.status is CallStatus.ANSWERED
        else (held.talk_seconds or 0),
    )


async def recorded_ids(conn: asyncpg.Connection, pbx: str, call_ids: Iterable[str]) -> set[str]:
    """Which of these calls the CRM already has."""
    ids = list(call_ids)
    if not ids:
        return set()
    rows = await conn.fetch(
        "SELECT call_id FROM crm.calls WHERE pbx = $1 AND call_id = ANY($2::text[])", pbx, ids
    )
    return {r["call_id"] for r in rows}


async def cdr_summaries(
    config: Config, since: datetime, until: datetime, exclude: Iterable[str] = ()
) -> list[CallSummary]:
    """Calls of the CDR that started in [since, until), minus ``exclude`` (calls still live)."""
    records, problems = await read_records(config.cdr, since - GAP_MARGIN, until, config.pbx.zone)
    for problem in problems[:20]:
        log.warning("CDR: %s", problem)
    if len(problems) > 20:
        log.warning("CDR: %d more unreadable records", len(problems) - 20)
    skip = set(exclude)
    return [
        s
        for s in summaries_from_records(records, config.pbx, since - GAP_MARGIN, until)
        if s.call_id not in skip
    ]


def merge_gap(held: Sequence[CallSummary], cdr: Sequence[CallSummary]) -> list[CallSummary]:
    """Held-back interrupted calls completed from the CDR, plus the CDR's other calls."""
    by_id = {s.call_id: s for s in cdr}
    merged = [complete_from_cdr(h, by_id.pop(h.call_id, None)) for h in held]
    merged.extend(by_id.values())
    return merged


class RunState:
    """What must survive a restart to know the gap: when the last event was seen.

    Kept in ``state.json`` in the spool folder, replaced atomically, written at
    most every ``interval`` seconds and at a clean stop.
    """

    def __init__(self, folder: Path, interval: float = 5.0) -> None:
        self.path = folder / STATE_FILE
        self.interval = interval
        self._written = 0.0
        self.last_event_at: float | None = None
        self.previous_last_event_at: float | None = self._read()

    def _read(self) -> float | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            value = data.get("last_event_at")
            return float(value) if value is not None else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None

    def seen(self, at: float) -> None:
        self.last_event_at = at
        if at - self._written >= self.interval:
            self.save()

    def save(self) -> None:
        if self.last_event_at is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"last_event_at": self.last_event_at, "saved_at": time.time()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._written = self.last_event_at
        except OSError as exc:
            log.warning("cannot save %s: %s", self.path, exc)
