"""The running daemon: AMI → tracker → spool → rules → CRM, plus FastAGI and metrics.

One process, one event loop, and these tasks:

- the **consumer**: reads the AMI connection's stream in arrival order and
  feeds the tracker; every call that ends is handed to the writer, which
  spools it durably before the consumer goes on (nothing slow happens here:
  the CRM write is the writer's job);
- the **writer** (:class:`~ami_daemon.writer.CallWriter`): spooled calls to
  PostgreSQL, oldest first, retried while the database is down;
- the **FastAGI server** (when ``agi.enabled``), the **metrics** endpoint,
  the systemd **watchdog**.

Signals: SIGTERM/SIGINT stop taking events, let the writer finish the calls
being written (bounded by ``STOP_GRACE`` seconds; whatever is left stays in the
spool for the next start) and exit 0.  SIGHUP reloads the rules as one atomic
swap; a broken file keeps the old rules and every problem is logged with its
file and line.  Bad input never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from ami_daemon import config as config_module
from ami_daemon.ami.connection import (
    AmiConnection,
    AmiLoginError,
    AmiNotConnected,
    ChannelSnapshot,
    LinkDown,
    LinkUp,
)
from ami_daemon.ami.recorder import CaptureRecorder
from ami_daemon.backfill import RunState, cdr_summaries, merge_gap, recorded_ids
from ami_daemon.calls.summary import CallSummary
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import Config
from ami_daemon.crm import migrate
from ami_daemon.crm.db import DatabaseUnavailable, redact
from ami_daemon.election import WriterLease
from ami_daemon.errors import UserError
from ami_daemon.logs import call_logger
from ami_daemon.metrics import Metrics, MetricsServer
from ami_daemon.pipeline import CallProcessor, Processed
from ami_daemon.rules.loader import RulesSource
from ami_daemon.sdnotify import SystemdNotifier
from ami_daemon.spool import Spool
from ami_daemon.writer import CallWriter

log = logging.getLogger(__name__)

#: Longest a stop waits for the calls being written.
STOP_GRACE = 10.0


class SchemaBehind(UserError):
    """The CRM schema needs migrations the daemon expects; says the command to run."""


class Daemon:
    """Everything ``ami-daemon run`` runs; also embeddable in tests and the demo."""

    def __init__(
        self,
        config: Config,
        *,
        record: Path | None = None,
        notifier: SystemdNotifier | None = None,
        metrics: Metrics | None = None,
        on_written: Callable[[Processed], None] | None = None,
        rules_path: Path | None = None,
    ) -> None:
        self.config = config
        self.record_path = record
        self.notifier = notifier or SystemdNotifier()
        self.metrics = metrics or Metrics()
        self.rules = RulesSource(rules_path or config.rules.path, config.pbx.region)
        self.tracker = Tracker(config.pbx)
        # read when Prometheus scrapes: nothing to update per AMI event
        self.metrics.calls_in_progress.set_function(self.tracker.open_calls)
        self._on_written = on_written
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._pool: asyncpg.Pool | None = None
        self._ami: AmiConnection | None = None
        self._recorder: CaptureRecorder | None = None
        self._agi: Any = None
        self._metrics_server: MetricsServer | None = None
        self.writer: CallWriter | None = None
        self.lease: WriterLease | None = None
        self.agi_port: int | None = None
        self.metrics_port: int | None = None
        self.ready = asyncio.Event()
        #: what stopped the daemon when it was not a signal (login refused, a bug)
        self.failure: BaseException | None = None
        self.state: RunState | None = None
        self._link_down_at: float | None = None
        #: backfills started (for tests and metrics): (since, until, calls submitted)
        self.backfills: list[tuple[datetime, datetime, int]] = []

    # ------------------------------------------------------------------ start

    async def _open_database(self) -> asyncpg.Pool:
        dsn = self.config.require_dsn()
        db = self.config.database
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=0,
                max_size=db.pool_max,
                timeout=db.connect_timeout,
                command_timeout=30,
            )
        except (OSError, asyncpg.PostgresError) as exc:  # pragma: no cover - min_size=0
            raise DatabaseUnavailable(f"cannot reach {redact(dsn)}: {exc}") from None
        assert pool is not None
        try:
            async with pool.acquire(timeout=db.connect_timeout) as conn:
                todo = await migrate.pending(conn)
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
        ) as exc:
            log.error(
                "CRM database %s unreachable at start (%s); finished calls will wait "
                "in the spool %s",
                redact(dsn),
                exc,
                self.config.spool.path,
            )
            return pool
        if todo:
            await pool.close()
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            raise SchemaBehind(
                f"the CRM schema at {redact(dsn)} is behind ({names} pending): run "
                f"'ami-daemon migrate{self._config_flag()}' first"
            )
        return pool

    def _config_flag(self) -> str:
        return f" --config {self.config.source}" if self.config.source else ""

    async def start(self) -> None:
        """Load rules, open the CRM, start servers and the AMI link; raise on misconfiguration."""
        self.rules.load()
        self._pool = await self._open_database()
        processor = CallProcessor(self._pool, lambda: self.rules.current, self.config.pbx.zone)
        spool = Spool(self.config.spool.path, self.config.spool.warn_bytes)
        self.state = RunState(self.config.spool.path)
        self.lease = WriterLease(
            self.config.require_dsn(),
            self.config.pbx.name,
            connect_timeout=self.config.database.connect_timeout,
            on_change=self._writer_changed,
        )
        self.writer = CallWriter(
            spool,
            processor.process,
            self.metrics,
            max_backoff=self.config.ami.reconnect_max_delay,
            on_written=self._on_written,
            is_active=lambda: self.lease is not None and self.lease.active,
            recorded=self._recorded_calls,
        )
        self._spawn(self.lease.run(), "writer-lease")
        self._spawn(self.writer.run(), "crm-writer")
        if self.config.agi.enabled:
            await self._start_agi()
        if self.config.metrics.enabled:
            self._metrics_server = MetricsServer(
                self.metrics, self.config.metrics.bind, self.config.metrics.port
            )
            await self._metrics_server.start()
            self.metrics_port = self._metrics_server.port
        if self.record_path is not None:
            self._recorder = CaptureRecorder(self.record_path).open()
        self._ami = AmiConnection(
            self.config.ami,
            self.config.ami_secret(),
            on_bytes=self._recorder.write if self._recorder else None,
            observers=[self._observe],
            snapshot=True,
        )
        self._spawn(self._connect_and_consume(), "ami-consumer")
        if self.notifier.watchdog_seconds:
            self._spawn(self._watchdog(self.notifier.watchdog_seconds / 2), "watchdog")

    def _writer_changed(self, active: bool) -> None:
        if active:
            status = "active CRM writer"
        elif self.writer is not None and not self.writer.database_up:
            status = "standby: CRM database unreachable, calls wait in the spool"
        else:
            status = "standby: another daemon writes (or the database is unreachable)"
        self.notifier.status(status)
        if self.writer is not None:
            self.writer.wake()

    async def _recorded_calls(self, call_ids: list[str]) -> set[str]:
        """Standby: which of its spooled calls the active daemon has written."""
        assert self._pool is not None
        try:
            async with self._pool.acquire(timeout=self.config.database.connect_timeout) as conn:
                return await recorded_ids(conn, self.config.pbx.name, call_ids)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(str(exc)) from None

    async def _start_agi(self) -> None:
        from ami_daemon.agi.embed import FastAgiThread

        self._agi = FastAgiThread(self.config, self.rules, self.metrics)
        await self._agi.start()
        self.agi_port = self._agi.port

    def _observe(self, _message: Any) -> None:
        self.metrics.events_received.inc()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, UserError):
                log.error(
                    "task %s failed: %r — stopping the daemon", task.get_name(), exc, exc_info=exc
                )
            self.failure = exc
            self._stop.set()

    # ------------------------------------------------------------------ AMI side

    async def _connect_and_consume(self) -> None:
        assert self._ami is not None
        try:
            await self._ami.start()
        except AmiNotConnected:
            if self._stop.is_set():
                return  # stopped while Asterisk was still unreachable
            raise
        except AmiLoginError as exc:
            raise UserError(str(exc)) from None  # names host:port, user and Asterisk's reason
        self.metrics.ami_connected.set(1)
        self.ready.set()
        self.notifier.ready(f"connected to Asterisk at {self._ami.where}")
        malformed_seen = 0
        async for item in self._ami.stream():
            if self._ami.malformed != malformed_seen:
                self.metrics.events_malformed.inc(self._ami.malformed - malformed_seen)
                malformed_seen = self._ami.malformed
            if isinstance(item, tuple):
                message, received_at = item
                if self.state is not None:
                    self.state.seen(received_at)
                for summary in self.tracker.feed(message, received_at):
                    self._call_ended(summary)
            elif isinstance(item, ChannelSnapshot):
                self._reconcile(item)
            elif isinstance(item, LinkUp):
                self.metrics.ami_connected.set(1)
                if item.reconnect:
                    self.metrics.ami_reconnects.inc()
            elif isinstance(item, LinkDown):
                self.metrics.ami_connected.set(0)
                if self._link_down_at is None:
                    self._link_down_at = item.at
                if self._stop.is_set():
                    log.info("AMI link closed: %s", item.reason)
                else:
                    log.warning("AMI link down: %s", item.reason)

    def _reconcile(self, snapshot: ChannelSnapshot) -> None:
        """Catch up after a start or a reconnect, at the point Asterisk listed its channels.

        The connection asked Asterisk which channels exist (``CoreShowChannels``)
        and placed the answer in the stream where Asterisk took it.  After a
        reconnect, calls with a channel still alive go on being tracked; the
        others ended unseen: they are held back until the CDR for the gap has
        been read, then written once, completed from the CDR when it knows
        them, else as ``interrupted``.  After a start, the gap is the time the
        daemon was not running (from ``state.json``).  Calls still alive are
        left out of the backfill: the tracker follows them.
        """
        live = {c["Linkedid"] for c in snapshot.channels if c.get("Linkedid")}
        held: list[CallSummary] = []
        since_ts: float | None
        if snapshot.reconnect:
            held = self.tracker.end_missing(snapshot.uniqueids)
            if held:
                log.warning("%d call(s) ended while the AMI link was down", len(held))
            since_ts = self._link_down_at or snapshot.at
        else:
            since_ts = self.state.previous_last_event_at if self.state else None
        self._link_down_at = None
        until = datetime.fromtimestamp(snapshot.at, UTC)
        if since_ts is None or self.config.cdr.source == "none":
            if since_ts is not None and snapshot.reconnect:
                log.info(
                    "no CDR source configured (cdr.source): calls of the gap are written as known"
                )
            for summary in held:
                self._call_ended(summary)
            return
        since = datetime.fromtimestamp(since_ts, UTC)
        # a held call may have started long before the cut: read its legs too
        starts = [h.started_at for h in held if h.started_at is not None]
        since = min([since, *starts])
        longest = timedelta(hours=self.config.cdr.max_gap_hours)
        if until - since > longest:
            log.warning(
                "gap of %s is longer than cdr.max_gap_hours; backfilling the last %s "
                "(run 'ami-daemon backfill --since' for the rest)",
                until - since,
                longest,
            )
            since = until - longest
        self._spawn(self._backfill(held, since, until, live), "cdr-backfill")

    async def _backfill(
        self, held: list[CallSummary], since: datetime, until: datetime, live: set[str]
    ) -> None:
        """Read the CDR for the gap, then hand held and recovered calls to the writer."""
        try:
            cdr = await cdr_summaries(self.config, since, until, exclude=live)
        except Exception as exc:
            log.error(
                "CDR backfill for %s – %s failed (%s); %d held call(s) written as known",
                since.isoformat(timespec="seconds"),
                until.isoformat(timespec="seconds"),
                exc,
                len(held),
            )
            cdr = []
        calls = merge_gap(held, cdr)
        held_ids = {h.call_id for h in held}
        try:
            assert self._pool is not None
            async with self._pool.acquire(timeout=self.config.database.connect_timeout) as conn:
                done = await recorded_ids(
                    conn,
                    self.config.pbx.name,
                    [c.call_id for c in calls if c.call_id not in held_ids],
                )
        except Exception as exc:  # the writer's unique key still prevents doubles
            log.debug("backfill: cannot check which calls are recorded (%s)", exc)
            done = set()
        todo = [c for c in calls if c.call_id not in done]
        todo.sort(key=lambda c: (c.started_at is None, c.started_at))
        for summary in todo:
            self._call_ended(summary)
        self.backfills.append((since, until, len(todo)))
        log.info(
            "CDR backfill %s – %s: %d call(s) recovered, %d held call(s) completed",
            since.isoformat(timespec="seconds"),
            until.isoformat(timespec="seconds"),
            len(todo) - len(held),
            len(held),
        )

    def _call_ended(self, summary: CallSummary) -> None:
        assert self.writer is not None
        try:
            self.writer.submit(summary)
        except Exception:
            call_logger(log, summary.call_id).exception(
                "could not spool the finished call; it is lost from this daemon (the CDR "
                "backfill can recover it)"
            )

    # ------------------------------------------------------------------ run/stop

    async def _watchdog(self, interval: float) -> None:
        while not self._stop.is_set():
            self.notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def reload(self) -> bool:
        """SIGHUP: re-read the config file (what can change live) and the rules."""
        self.reload_config()
        return self.reload_rules()

    def reload_config(self) -> None:
        """Apply what of a changed config can change live; name what needs a restart.

        Live: ``logging.level``.  Everything else (AMI, database, FastAGI,
        metrics, spool, pbx) is bound to open connections and sockets: a
        change is logged with the restart it needs.  A broken file changes
        nothing and every mistake is logged.
        """
        if self.config.source is None:
            return
        try:
            new = config_module.load(self.config.source)
        except config_module.ConfigError as exc:
            log.error("config reload failed; the running config stays in force:")
            for problem in exc.problems:
                log.error("  %s", problem)
            return
        if new.logging.level != self.config.logging.level:
            logging.getLogger().setLevel(new.logging.level)
            log.info("log level now %s", new.logging.level)
        for section in ("pbx", "ami", "database", "agi", "rules", "metrics", "spool", "cdr"):
            if getattr(new, section) != getattr(self.config, section):
                log.warning(
                    "config section %r changed: restart the daemon to apply it "
                    "(systemctl restart ami-daemon)",
                    section,
                )
        self.config = dataclasses.replace(self.config, logging=new.logging)

    def reload_rules(self) -> bool:
        """Swap in the new rules, or keep the old ones and log why."""
        problems = self.rules.reload()
        if problems:
            self.metrics.rules_reloads.labels(result="error").inc()
            log.error("rules reload failed; the previous rules stay in force:")
            for problem in problems:
                log.error("  %s", problem)
            return False
        self.metrics.rules_reloads.labels(result="ok").inc()
        log.info("rules reloaded from %s", self.rules.path)
        return True

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop taking events, finish the calls being written, close everything."""
        self._stop.set()
        self.notifier.stopping()
        if self._ami is not None:
            await self._ami.close()
        self.metrics.ami_connected.set(0)
        if self.writer is not None:
            drained = await self.writer.drain(STOP_GRACE)
            if not drained:
                log.warning(
                    "%d call(s) not yet written stay in the spool for the next start",
                    self.writer.spool.depth,
                )
            self.writer.stop()
        if self.lease is not None:
            await self.lease.stop()
        open_calls = self.tracker.open_calls()
        if open_calls:
            log.warning(
                "%d call(s) still in progress at stop; the CDR backfill at the next "
                "start recovers them",
                open_calls,
            )
        if self._agi is not None:
            await self._agi.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.state is not None:
            self.state.save()
        if self.writer is not None:
            self.writer.spool.close()
        if self._pool is not None:
            await self._pool.close()
        if self._recorder is not None:
            self._recorder.close()
        self.notifier.close()

    async def run_until_signalled(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop; SIGHUP reloads the rules."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
            log.info(
                "ami-daemon started for PBX %r; Asterisk AMI at %s:%d",
                self.config.pbx.name,
                self.config.ami.host,
                self.config.ami.port,
            )
            await self._stop.wait()
            log.info("stopping")
        finally:
            started = time.monotonic()
            await self.stop()
            log.info(
                "stopped in %.1f s at %s",
                time.monotonic() - started,
                datetime.now(UTC).isoformat(timespec="seconds"),
            )
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        if self.failure is not None:
            if isinstance(self.failure, UserError):
                raise self.failure
            return 1
        return 0
