"""Finished calls → durable spool → CRM, oldest first, never lost, never doubled.

The tracker hands every finished call to :meth:`CallWriter.submit`, which
appends it to the spool (fsync) before returning; only then is the call out
of the tracker's memory.  One writer task takes the spool's calls oldest first
and runs each through the CRM pipeline (decide + apply in one transaction):

- committed, or already recorded by an earlier attempt or another daemon
  (the ``crm.calls`` unique key says so) → acknowledged, gone from the spool;
- the database is unreachable → the call stays, the writer waits with
  exponential backoff and tries again, still oldest first;
- PostgreSQL refuses the call (a constraint, a bug) → retried a few times,
  then moved to ``rejected.jsonl`` beside the spool with the error and logged
  as an error: kept for a person, never silently dropped, and never blocking
  the calls behind it;
- while this daemon is a standby (another one holds the PBX's writer lock),
  nothing is written; calls the active daemon recorded are pruned from the
  spool so that a takeover writes exactly what the active one did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ami_daemon.calls.summary import CallSummary
from ami_daemon.crm.apply import ApplyError
from ami_daemon.crm.db import DatabaseUnavailable
from ami_daemon.logs import call_logger
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import Processed, Recorded
from ami_daemon.spool import Spool

log = logging.getLogger(__name__)

#: Refusals of one call before it is set aside in rejected.jsonl.
MAX_REFUSALS = 3
INITIAL_BACKOFF = 0.5
#: Log the spool depth every this many calls waiting.
SPOOL_LOG_EVERY = 100
#: Seconds between a standby's checks of which spooled calls the active daemon wrote.
PRUNE_INTERVAL = 2.0


def spool_key(summary: CallSummary) -> str:
    return f"{summary.pbx}\t{summary.call_id}"


class CallWriter:
    """Owns the spool and the one task that writes its calls to the CRM."""

    def __init__(
        self,
        spool: Spool,
        process: Callable[[CallSummary], Awaitable[Processed]],
        metrics: Metrics | None = None,
        *,
        max_backoff: float = 30.0,
        on_written: Callable[[Processed], None] | None = None,
        is_active: Callable[[], bool] = lambda: True,
        recorded: Callable[[list[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.spool = spool
        self._process = process
        self._metrics = metrics
        self._max_backoff = max_backoff
        self._on_written = on_written
        self._is_active = is_active
        self._recorded = recorded
        self._wake = asyncio.Event()
        self._refusals: dict[str, int] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._busy = False
        self._last_prune = float("-inf")
        self.written = 0
        self.already_recorded = 0
        self.rejected = 0
        self.database_up = True
        if metrics is not None:
            metrics.spool_depth.set(spool.depth)
        if spool.depth:
            self._wake.set()

    # ------------------------------------------------------------------ input

    def submit(self, summary: CallSummary) -> None:
        """Spool a finished call durably and wake the writer (synchronous: fsync)."""
        self.spool.append(spool_key(summary), summary.to_json_dict())
        depth = self.spool.depth
        if self._metrics is not None:
            self._metrics.spool_depth.set(depth)
        if depth and depth % SPOOL_LOG_EVERY == 0:
            log.warning(
                "%d call(s) wait in the spool, not yet in the CRM%s",
                depth,
                "" if self.database_up else " (database unreachable)",
            )
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._busy and self.spool.depth == 0

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Write spooled calls until :meth:`stop`; never raises for a bad call."""
        backoff = INITIAL_BACKOFF
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            if not self._is_active():
                await self._prune_recorded()
                continue
            self._busy = True
            try:
                ok = await self._write_pending()
            finally:
                self._busy = False
            if ok:
                backoff = INITIAL_BACKOFF
                continue
            await self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once on :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _write_pending(self) -> bool:
        """Write the spool oldest first; False when the database is unreachable."""
        # Every call reaches the disk before its CRM write: one fsync for all
        # appended since the last batch, in a worker thread (the event loop
        # also answers FastAGI lookups).
        await asyncio.to_thread(self.spool.sync)
        for key, record in self.spool.pending():
            if self._stopping or not self._is_active():
                return True
            try:
                summary = CallSummary.from_json_dict(record)
            except (KeyError, ValueError, TypeError) as exc:
                self._reject(key, record, f"unreadable spooled call: {exc}")
                continue
            clog = call_logger(log, summary.call_id)
            started = time.perf_counter()
            try:
                processed = await self._process(summary)
            except DatabaseUnavailable as exc:
                if self.database_up:
                    clog.error(
                        "CRM database unreachable; %d call(s) wait in the spool: %s",
                        self.spool.depth,
                        exc,
                    )
                self.database_up = False
                if self._metrics is not None:
                    self._metrics.crm_write_errors.inc()
                return False
            except ApplyError as exc:
                self._refused(key, record, str(exc))
                continue
            except Exception as exc:  # a bug must not stop the writer
                clog.exception("writing the call failed")
                self._refused(key, record, f"{type(exc).__name__}: {exc}")
                continue
            if not self.database_up:
                log.info("CRM database reachable again; writing the spooled calls")
                self.database_up = True
            self.spool.ack(key)
            self._refusals.pop(key, None)
            self._count(processed, time.perf_counter() - started)
        return True

    def _count(self, processed: Processed, seconds: float) -> None:
        summary = processed.summary
        if processed.recorded is Recorded.ALREADY_RECORDED:
            self.already_recorded += 1
            call_logger(log, summary.call_id).info(
                "already recorded (as %s): nothing written", processed.previous_outcome
            )
        else:
            self.written += 1
            call_logger(log, summary.call_id).info(
                "%s %s → %s", summary.direction.value, summary.status.value, processed.line()
            )
        if self._metrics is not None:
            self._metrics.spool_depth.set(self.spool.depth)
            self._metrics.crm_write_seconds.observe(seconds)
            self._metrics.calls_finished.labels(
                status=summary.status.value, outcome=processed.decision.outcome.value
            ).inc()
        if self._on_written is not None:
            try:
                self._on_written(processed)
            except Exception:
                log.exception("on_written hook failed")

    def _refused(self, key: str, record: dict[str, Any], reason: str) -> None:
        count = self._refusals.get(key, 0) + 1
        self._refusals[key] = count
        if self._metrics is not None:
            self._metrics.crm_write_errors.inc()
        if count >= MAX_REFUSALS:
            self._reject(key, record, reason)
        else:
            log.warning("%s (attempt %d of %d)", reason, count, MAX_REFUSALS)

    def _reject(self, key: str, record: dict[str, Any], reason: str) -> None:
        path = Path(self.spool.folder) / "rejected.jsonl"
        entry = {"key": key, "reason": reason, "record": record, "at": time.time()}
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
        self.spool.ack(key)
        self._refusals.pop(key, None)
        self.rejected += 1
        log.error("call set aside in %s after %d refusals: %s", path, MAX_REFUSALS, reason)

    def _database_down(self, exc: BaseException) -> None:
        if self.database_up:
            log.error(
                "CRM database unreachable; %d call(s) wait in the spool: %s", self.spool.depth, exc
            )
        self.database_up = False

    async def _prune_recorded(self) -> None:
        """Standby: forget spooled calls that the active daemon has recorded.

        Checked at most every :data:`PRUNE_INTERVAL` seconds, with the call
        ids taken from the spool keys (no record is parsed).
        """
        now = time.monotonic()
        if self._recorded is None or now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        keys = [key for key, _ in self.spool.pending()]
        if not keys:
            return
        ids = [key.split("\t", 1)[-1] for key in keys]
        try:
            done = await self._recorded(ids)
        except DatabaseUnavailable as exc:
            self._database_down(exc)
            return
        if not self.database_up:
            log.info("CRM database reachable again")
            self.database_up = True
        for key, call_id in zip(keys, ids, strict=True):
            if call_id in done:
                self.spool.ack(key)
        if self._metrics is not None:
            self._metrics.spool_depth.set(self.spool.depth)

    async def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty (True) or ``timeout`` passed (False)."""
        if not self._is_active() or not self.database_up:
            # a standby writes nothing, nor does anyone while the database is
            # down: the spool keeps the calls for the next start
            return self.spool.depth == 0
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if self.idle:
                return True
            await asyncio.sleep(0.05)
        return self.idle

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._wake.set()
