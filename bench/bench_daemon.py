"""Sustained load through the whole daemon: simulated Asterisk → daemon → PostgreSQL.

The daemon is :class:`ami_daemon.service.Daemon`, exactly what ``ami-daemon
run`` runs (AMI consumer, tracker, durable spool, CRM writer, in-process
FastAGI server, metrics), in this process pinned to core 0.  The PBX is the
simulator in a child process pinned to core 1: every asterisk20 capture
(real Asterisk 20 traffic, ~120 events per call with its VarSet/Newexten
noise), re-keyed into distinct calls (new ids and caller numbers), one call
starting every ``1/rate`` seconds and each replayed at its real speed (calls
last 2–10 s, so ``rate`` x ~6 calls are open at once), with Asterisk's side
of every inbound call's FastAGI lookup played against the daemon.
PostgreSQL 15 runs on the same two cores.

Per offered rate (calls per second, held for ``--seconds``):

- calls/s and events/s the daemon took (first to last event received, first
  to last call committed);
- latency from the moment the simulator wrote a call's final event (the
  ``Hangup`` that ends it, found by running the tracker over the timeline
  beforehand) to the moment the daemon's writer reported the call committed
  in ``crm.calls`` (the ``on_written`` hook, after COMMIT): p50, p99, max;
- the daemon's CPU (this process: user + system time / wall) and memory
  (resident set at the end, and its peak), the deepest the spool got;
- AGI lookups answered ok out of those played, their mean latency.

Then ``max``: a burst replayed as fast as the socket takes it, the daemon's
ceiling (its latency is queueing behind the burst, not a service time).
Baseline in the same run: the CRM path alone — the same calls' summaries
through the pipeline (decide + one transaction) one after the other, no AMI,
no tracker — the most calls/s the single writer can commit.

Each level runs on a fresh copy of a migrated database with the lab's
employees and clients; every database is created here and dropped at the end.

Run: ``.venv/bin/python bench/bench_daemon.py`` (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import re
import resource
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg

from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import ReplayEvent, Timeline, build_timeline, load_capture
from ami_daemon.calls.summary import CallSummary
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import (
    AgiConfig,
    AmiConfig,
    Config,
    DatabaseConfig,
    MetricsConfig,
    PbxConfig,
    RulesConfig,
    SpoolConfig,
)
from ami_daemon.crm import migrate
from ami_daemon.crm.db import with_database
from ami_daemon.crm.imports import Kind, import_csv
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import CallProcessor, Processed
from ami_daemon.rules.loader import RulesSource, default_rules_path
from ami_daemon.service import Daemon
from ami_daemon.spool import Spool
from ami_daemon.writer import spool_key

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
SECRET = "bench"
ADMIN_DSN = os.environ.get("AMI_DAEMON_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PBX = PbxConfig(
    name="bench",
    region="ES",
    timezone="Europe/Madrid",
    trunk_channels=(re.compile(r"^SIP/trunk-"),),
)
USERS_CSV = "extension,name,phones\n201,Ana Agent,699000201\n202,Bea Agent,\n203,Carl Agent,\n"
CONTACTS_CSV = (
    "id,name,phones,responsible\nc17,Marta Ruiz,600 333 444,202\nc18,Pedro Gil,0034600555666,203\n"
)


def _pin(core: int) -> None:
    count = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and count > 1:
        os.sched_setaffinity(0, {core % count})


def _captures() -> list[Any]:
    return [load_capture(p.parent) for p in sorted(TRACES.glob("asterisk20/*/ami.raw"))]


def call_ends(timeline: Timeline) -> tuple[dict[int, str], list[CallSummary]]:
    """For each event that ends a call (per the tracker), that call's id; and the summaries."""
    tracker = Tracker(PBX)
    ends: dict[int, str] = {}
    summaries: list[CallSummary] = []
    for event in timeline.events:
        for summary in tracker.feed(event.message, event.at or 0.0):
            ends[id(event)] = summary.call_id
            summaries.append(summary)
    return ends, summaries


class TimedSimulator(Simulator):
    """The simulator, noting when the final event of each call left for the socket."""

    def __init__(self, timeline: Timeline, options: SimulatorOptions, ends: dict[int, str]) -> None:
        super().__init__(timeline, options)
        self._ends = ends
        self._unflushed: list[str] = []
        self.sent_at: dict[str, float] = {}
        self.first_sent = 0.0
        self.last_sent = 0.0

    def _deliver(self, event: ReplayEvent) -> bool:
        delivered = super()._deliver(event)
        call = self._ends.get(id(event))
        if call is not None:
            self._unflushed.append(call)
        return delivered

    async def _flush(self) -> None:
        await super()._flush()  # written and drained to the kernel
        now = time.time()
        if not self.first_sent and self.sent:
            self.first_sent = now
        self.last_sent = now
        for call in self._unflushed:
            self.sent_at[call] = now
        self._unflushed.clear()


def simulator_process(conn: Connection, core: int) -> None:
    """Child: per request, build a level's timeline, serve it once, report send times."""
    _pin(core)
    captures = _captures()
    while True:
        request = conn.recv()
        if request is None:
            return
        calls, interleave, speed, agi_port = request
        copies = math.ceil(calls / len(captures))
        timeline = build_timeline(captures, copies=copies, interleave=interleave)
        ends, summaries = call_ends(timeline)

        async def serve(
            timeline: Timeline,
            ends: dict[int, str],
            summaries: list[CallSummary],
            speed: float | None,
            agi_port: int,
        ) -> None:
            options = SimulatorOptions(
                secret=SECRET, speed=speed, agi=("127.0.0.1", agi_port), agi_timeout=30.0
            )
            sim = TimedSimulator(timeline, options, ends)
            await sim.start()
            conn.send(("ready", sim.port, len(timeline), [s.to_json_dict() for s in summaries]))
            await sim.wait_done()
            ok = sum(1 for o in sim.agi_outcomes if o.variables.get("CRM_LOOKUP") == "ok")
            conn.send(
                (
                    "done",
                    sim.sent_at,
                    sim.sent,
                    sim.first_sent,
                    sim.last_sent,
                    len(sim.agi_outcomes),
                    ok,
                )
            )
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            await sim.close()

        asyncio.run(serve(timeline, ends, summaries, speed, agi_port))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Databases:
    """A migrated, seeded template and one fresh copy of it per level; all dropped at the end."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.prefix = f"bench_daemon_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_template(self) -> None:
        name = f"{self.prefix}_template"
        await self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        conn = await asyncpg.connect(with_database(self.admin, name))
        try:
            await migrate.migrate(conn)
            await import_csv(conn, Kind.USERS, USERS_CSV, "ES")
            await import_csv(conn, Kind.CONTACTS, CONTACTS_CSV, "ES")
        finally:
            await conn.close()

    async def fresh(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.prefix}_template"')
        self.names.append(name)
        return with_database(self.admin, name)

    async def drop_all(self) -> None:
        for name in reversed(self.names):
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def daemon_config(dsn: str, ami_port: int, agi_port: int, spool: Path) -> Config:
    return Config(
        pbx=PBX,
        ami=AmiConfig(port=ami_port, username="ami-daemon", secret=SECRET, ping_interval=30.0),
        database=DatabaseConfig(dsn=dsn),
        agi=AgiConfig(port=agi_port),
        rules=RulesConfig(default_rules_path()),
        metrics=MetricsConfig(enabled=False),
        spool=SpoolConfig(path=spool),
    )


def _memory_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


class FsyncMeter:
    """Times every ``os.fsync`` of this process: the spool's, run in a worker thread."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._real = os.fsync

    def install(self) -> None:
        real, durations = self._real, self.durations

        def timed_fsync(fd: Any) -> None:
            started = time.perf_counter()
            try:
                real(fd)
            finally:
                durations.append(time.perf_counter() - started)

        os.fsync = timed_fsync

    def take(self) -> list[float]:
        taken = list(self.durations)
        self.durations.clear()
        return taken


FSYNC = FsyncMeter()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@dataclass
class LevelResult:
    label: str
    offered: float | None
    calls: int
    events: int
    written: int
    events_per_s: float
    ended_per_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_percent: float
    rss_mib: float
    hwm_mib: float
    spool_peak: int
    open_peak: int
    agi_played: int
    agi_ok: int
    agi_mean_ms: float
    agi_results: dict[str, int]
    write_mean_ms: float
    lag_p99_ms: float
    fsyncs: int
    fsync_share: float
    fsync_p99_ms: float


async def run_level(
    conn: Connection,
    databases: Databases,
    label: str,
    calls: int,
    interleave: float,
    speed: float | None,
    offered: float | None,
    workdir: Path,
) -> tuple[LevelResult, list[CallSummary]]:
    dsn = await databases.fresh(label)
    agi_port = free_port()
    conn.send((calls, interleave, speed, agi_port))
    kind, ami_port, events, summaries_json = await asyncio.to_thread(conn.recv)
    assert kind == "ready"
    summaries = [CallSummary.from_json_dict(s) for s in summaries_json]
    expected = len(summaries)
    written_at: dict[str, float] = {}
    done = asyncio.Event()

    def on_written(processed: Processed) -> None:
        written_at[processed.summary.call_id] = time.time()
        if len(written_at) >= expected:
            done.set()

    metrics = Metrics()
    spool = workdir / f"spool-{label}"
    daemon = Daemon(
        daemon_config(dsn, ami_port, agi_port, spool), metrics=metrics, on_written=on_written
    )
    spool_peak = open_peak = 0
    first_event = last_event = 0.0
    seen_events = 0.0
    lags: list[float] = []

    async def sampler() -> None:
        nonlocal spool_peak, open_peak, first_event, last_event, seen_events
        loop = asyncio.get_running_loop()
        while True:
            spool_peak = max(spool_peak, int(_sample(metrics, "ami_daemon_spool_depth")))
            open_peak = max(open_peak, daemon.tracker.open_calls())
            received = _sample(metrics, "ami_daemon_ami_events_received_total")
            now = time.time()
            if received and not first_event:
                first_event = now
            if received > seen_events:
                seen_events, last_event = received, now
            asked = loop.time()
            await asyncio.sleep(0.02)
            lags.append(loop.time() - asked - 0.02)

    FSYNC.take()
    cpu0, wall0 = _cpu_seconds(), time.time()
    await daemon.start()
    sampling = asyncio.create_task(sampler())
    reply = await asyncio.to_thread(conn.recv)
    _, sent_at, sent, first_sent, last_sent, agi_played, agi_ok = reply
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        cpu1, wall1 = _cpu_seconds(), time.time()
        fsyncs = FSYNC.take()
        rss, hwm = _memory_kib()
        sampling.cancel()
        await daemon.stop()
        conn.send("close")
    latencies = [(written_at[c] - sent_at[c]) * 1000 for c in written_at if c in sent_at]
    commits = sorted(written_at.values())
    ends = sorted(sent_at.values())
    ended_wall = max(ends[-1] - ends[0], 1e-9) if len(ends) > 1 else 1e-9
    agi_results = {
        result: int(_sample(metrics, "ami_daemon_agi_lookups_total", {"result": result}))
        for result in ("ok", "error", "timeout")
    }
    writes = _sample(metrics, "ami_daemon_crm_write_seconds_count")
    write_sum = _sample(metrics, "ami_daemon_crm_write_seconds_sum")
    agi_count = _sample(metrics, "ami_daemon_agi_lookup_seconds_count")
    agi_sum = _sample(metrics, "ami_daemon_agi_lookup_seconds_sum")
    events_wall = max(last_event - first_event, last_sent - first_sent, 1e-9)
    calls_wall = max(commits[-1] - commits[0], 1e-9) if len(commits) > 1 else 1e-9
    result = LevelResult(
        label=label,
        offered=offered,
        calls=expected,
        events=events,
        written=len(written_at),
        events_per_s=sent / events_wall,
        ended_per_s=(len(ends) - 1) / ended_wall,
        calls_per_s=(len(commits) - 1) / calls_wall,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=max(latencies) if latencies else math.nan,
        cpu_percent=100 * (cpu1 - cpu0) / (wall1 - wall0),
        rss_mib=rss / 1024,
        hwm_mib=hwm / 1024,
        spool_peak=spool_peak,
        open_peak=open_peak,
        agi_played=agi_played,
        agi_ok=agi_ok,
        agi_mean_ms=1000 * agi_sum / agi_count if agi_count else math.nan,
        agi_results=agi_results,
        write_mean_ms=1000 * write_sum / writes if writes else math.nan,
        lag_p99_ms=1000 * _percentile(lags, 0.99),
        fsyncs=len(fsyncs),
        fsync_share=100 * sum(fsyncs) / (wall1 - wall0),
        fsync_p99_ms=1000 * _percentile(fsyncs, 0.99),
    )
    return result, summaries


async def writer_alone(
    databases: Databases, summaries: list[CallSummary], spool_dir: Path | None
) -> float:
    """Baseline: the same calls through decide + apply one after the other (calls/s).

    With ``spool_dir``, each call is also appended to a spool and fsync-ed
    before, and acknowledged after (flushed, not fsync-ed), as the daemon's
    writer does when each batch holds one call.
    """
    dsn = await databases.fresh("baseline_spool" if spool_dir else "baseline")
    rules = RulesSource(default_rules_path(), PBX.region)
    rules.load()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    spool = Spool(spool_dir) if spool_dir is not None else None
    try:
        processor = CallProcessor(pool, lambda: rules.current, PBX.zone)
        started = time.perf_counter()
        for summary in summaries:
            if spool is not None:
                spool.append(spool_key(summary), summary.to_json_dict())
                spool.sync()  # the writer's fsync before a CRM write (here one call per batch)
            await processor.process(summary)
            if spool is not None:
                spool.ack(spool_key(summary))
        return len(summaries) / (time.perf_counter() - started)
    finally:
        await pool.close()
        if spool is not None:
            spool.close()


def _print(result: LevelResult) -> None:
    offered = f"{result.offered:>5.0f}" if result.offered is not None else "  max"
    print(
        f"{offered} calls/s offered: calls ended {result.ended_per_s:6.1f}/s, committed "
        f"{result.calls_per_s:6.1f}/s, {result.events_per_s:7,.0f} events/s | hangup→commit "
        f"p50 {result.p50_ms:7.1f} ms, p99 {result.p99_ms:7.1f} ms, max {result.max_ms:7.1f} ms | "
        f"CPU {result.cpu_percent:4.0f} % | RSS {result.rss_mib:5.1f} MiB "
        f"(peak {result.hwm_mib:5.1f}) | open calls ≤ {result.open_peak}, spool ≤ "
        f"{result.spool_peak}\n"
        f"{'':22}CRM write {result.write_mean_ms:.1f} ms mean | event loop lag p99 "
        f"{result.lag_p99_ms:.1f} ms | spool fsync {result.fsyncs} x, p99 "
        f"{result.fsync_p99_ms:.1f} ms, {result.fsync_share:.0f} % of the wall time\n"
        f"{'':22}AGI {result.agi_ok}/{result.agi_played} ok "
        f"({', '.join(f'{k} {v}' for k, v in result.agi_results.items())}), "
        f"mean {result.agi_mean_ms:.1f} ms | {result.written}/{result.calls} calls, "
        f"{result.events:,} events",
        flush=True,
    )


async def bench(args: argparse.Namespace, conn: Connection, workdir: Path) -> None:
    databases = Databases(args.dsn)
    await databases.create_template()
    try:
        last_summaries: list[CallSummary] = []
        for rate in args.rates:
            calls = max(1, round(rate * args.seconds))
            result, last_summaries = await run_level(
                conn,
                databases,
                f"r{rate:g}".replace(".", "_"),
                calls,
                1.0 / rate,
                1.0,
                rate,
                workdir,
            )
            _print(result)
        if args.max_calls:
            result, _ = await run_level(
                conn, databases, "max", args.max_calls, 0.01, None, None, workdir
            )
            _print(result)
        alone = await writer_alone(databases, last_summaries, None)
        spooled = await writer_alone(databases, last_summaries, workdir / "baseline-spool")
        print(
            f"baseline, same {len(last_summaries)} calls one after the other, no AMI, no "
            f"tracker:\n  CRM path alone (decide + one transaction): {alone:7.1f} calls/s\n"
            f"  spool append + fsync + CRM path + ack, as the writer: "
            f"{spooled:7.1f} calls/s",
            flush=True,
        )
    finally:
        await databases.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[25.0, 50.0, 100.0],
        help="offered call rates, calls per second (default 25,50,100)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each rate is offered")
    parser.add_argument(
        "--max-calls", type=int, default=900, help="calls of the unpaced burst (0 = skip)"
    )
    parser.add_argument("--dsn", default=ADMIN_DSN, help="admin DSN (creates/drops databases)")
    args = parser.parse_args()
    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    _pin(0)
    FSYNC.install()
    print(
        f"daemon (this process) on core 0, simulator on core 1, PostgreSQL on both; "
        f"CPUs: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    parent, child = mp.Pipe()
    process = mp.Process(target=simulator_process, args=(child, 1), daemon=True)
    process.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-daemon-") as workdir:
            asyncio.run(bench(args, parent, Path(workdir)))
    finally:
        parent.send(None)
        process.join(10)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
