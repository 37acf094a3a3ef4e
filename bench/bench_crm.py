"""Benchmark: CRM decision + apply per finished call, with 1,000,000 contacts.

Creates a throwaway database on the server of ``--admin-dsn`` (default: the
local PostgreSQL), migrates it, generates 1,000,000 contacts with one phone
each (10 % with an open deal) and three employees in SQL, then for each CRM
mode (classic, simple) measures the step the daemon runs per finished call
(:meth:`ami_daemon.pipeline.CallProcessor.process`: per-number lock, lookup,
pure decision, one transaction with the call row and its actions):

* baselines from the same run: the pure decision alone, and a bare
  one-row ``INSERT`` + ``COMMIT`` round trip (the floor of any durable write);
* open loop: calls "end" at a fixed rate (500/s classic, 200/s simple, the
  targets) for ``--seconds``; latency = commit time - the moment the call
  ended (its scheduled arrival), p50/p99/max, and whether the rate was held;
* closed loop: ``--workers`` tasks push calls as fast as they go: calls/s.

The call mix: 45 % new numbers (a lead, or a deal with contact and a converted
lead), 40 % known clients answered (activity on contact and, for 10 %, on the
open deal), 10 % known clients missed (activity + callback task), 5 % internal.
The database is dropped at the end.  Run:

    .venv/bin/python bench/bench_crm.py            # ~2-3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from ami_daemon.calls.summary import CallStatus, CallSummary, Direction
from ami_daemon.crm import embedded, migrate
from ami_daemon.crm.db import with_database
from ami_daemon.crm.facts import read_facts
from ami_daemon.pipeline import CallProcessor
from ami_daemon.rules import RuleSet, default_rules_path, load_rules
from ami_daemon.rules.decide import decide

ZONE = ZoneInfo("Europe/Madrid")
CONTACTS = 1_000_000
FIRST_PHONE = 600_000_000

SEED_SQL = f"""
INSERT INTO crm.users (name, extension) VALUES ('Ana', '201'), ('Bea', '202'), ('Carl', '203');
INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES ('user', 1, '+34699000201');
INSERT INTO crm.contacts (name, responsible_id, source)
    SELECT 'Contact ' || g, 1 + g % 3, 'CALL' FROM generate_series(1, {CONTACTS}) g;
INSERT INTO crm.phones (entity_type, entity_id, e164)
    SELECT 'contact', id, '+34' || ({FIRST_PHONE} + id) FROM crm.contacts;
INSERT INTO crm.deals (title, stage, contact_id, responsible_id)
    SELECT 'Deal ' || id, 'NEW', id, responsible_id FROM crm.contacts WHERE id % 10 = 0;
"""


class Calls:
    """Endless call summaries with the benchmark's mix; every call id unique."""

    def __init__(self, seed: int, prefix: str, tag: int) -> None:
        self.tag = tag  # one digit: new numbers of different generators never collide
        self.rng = random.Random(seed)
        self.n = 0
        self.prefix = prefix
        self.start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

    def next(self) -> CallSummary:
        self.n += 1
        r = self.rng.random()
        when = self.start + timedelta(seconds=self.n)
        base = CallSummary(
            pbx="bench",
            call_id=f"{self.prefix}.{self.n}",
            direction=Direction.INBOUND,
            external_number=None,
            did="+34911234567",
            trunk="trunk",
            status=CallStatus.ANSWERED,
            answered_by="201",
            final_agent="201",
            caller_extension=None,
            agents_rung=("201",),
            queue="sales",
            transfers=(),
            started_at=when,
            answered_at=when,
            ended_at=when,
            talk_seconds=30,
        )
        if r < 0.45:  # a new number, never seen before
            return replace(base, external_number=f"+3471{self.tag}{self.n:06d}")
        known = f"+34{FIRST_PHONE + self.rng.randint(1, CONTACTS)}"
        if r < 0.85:
            return replace(base, external_number=known)
        if r < 0.95:
            return replace(
                base,
                external_number=known,
                status=CallStatus.MISSED,
                answered_by=None,
                final_agent=None,
                answered_at=None,
                talk_seconds=0,
            )
        return replace(
            base,
            direction=Direction.INTERNAL,
            did=None,
            trunk=None,
            caller_extension="202",
            queue=None,
        )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.2f} ms"


async def baseline(dsn: str, rules: RuleSet) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TEMP TABLE t (id bigserial PRIMARY KEY, v text)")
        times = []
        for i in range(500):
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO t (v) VALUES ($1)", str(i))
            times.append(time.perf_counter() - t0)
        # a temp table is not WAL-logged: also a real table in the crm schema
        await conn.execute("CREATE TABLE crm.bench_floor (id bigserial PRIMARY KEY, v text)")
        durable = []
        for i in range(500):
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO crm.bench_floor (v) VALUES ($1)", str(i))
            durable.append(time.perf_counter() - t0)
        await conn.execute("DROP TABLE crm.bench_floor")
        calls = Calls(1, "base", 0)
        sample = [calls.next() for _ in range(2000)]
        facts = [await read_facts(conn, s.external_number) for s in sample]
        t0 = time.perf_counter()
        for s, f in zip(sample, facts, strict=True):
            decide(s, f, rules, ZONE)
        per_decision = (time.perf_counter() - t0) / len(sample)
        lookups = []
        for s in sample[:500]:
            t0 = time.perf_counter()
            await read_facts(conn, s.external_number)
            lookups.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    print("baselines (same run):")
    print(f"  pure decision                 {per_decision * 1e6:8.1f} µs per call")
    print(f"  lookup (1M contacts)          p50 {ms(pct(lookups, 50))}  p99 {ms(pct(lookups, 99))}")
    print(f"  INSERT+COMMIT, temp table     p50 {ms(pct(times, 50))}  p99 {ms(pct(times, 99))}")
    print(f"  INSERT+COMMIT, durable table  p50 {ms(pct(durable, 50))}  p99 {ms(pct(durable, 99))}")


async def open_loop(
    processor: CallProcessor, calls: Calls, rate: float, seconds: float, workers: int
) -> tuple[list[float], float, int]:
    """Calls end at ``rate``/s; latency = commit time - end time (includes any queueing)."""
    queue: asyncio.Queue[tuple[float, CallSummary] | None] = asyncio.Queue()
    latencies: list[float] = []
    slow: list[float] = []  # when (seconds into the run) calls over 50 ms ended

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            ended, summary = item
            await processor.process(summary)
            latency = time.perf_counter() - ended
            latencies.append(latency)
            if latency > 0.05:
                slow.append(ended - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    total = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, calls.next()))
    for _ in tasks:
        queue.put_nowait(None)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    if slow:
        spans = sorted({int(x) for x in slow})
        print(f"  {len(slow)} calls over 50 ms, ending in seconds {spans} of the run")
    return latencies, elapsed, total


async def closed_loop(
    processor: CallProcessor, calls: Calls, count: int, workers: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            summary = calls.next()
            t0 = time.perf_counter()
            await processor.process(summary)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return count / (time.perf_counter() - t0), latencies


async def run_mode(dsn: str, mode: str, rules: RuleSet, args: argparse.Namespace, run: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=args.workers, max_size=args.workers)
    try:
        processor = CallProcessor(pool, lambda: rules, ZONE)
        tag = 1 + 3 * run  # fresh call ids and new numbers for every run
        warm = Calls(7, f"{mode}{run}w", tag)
        await closed_loop(processor, warm, 500, args.workers)
        rate = args.classic_rate if mode == "classic" else args.simple_rate
        lat, elapsed, total = await open_loop(
            processor, Calls(11, f"{mode}{run}o", tag + 1), rate, args.seconds, args.workers
        )
        held = total / elapsed
        print(
            f"{mode}: open loop at {rate:.0f} calls/s for {args.seconds:.0f} s ({total} calls, "
            f"{args.workers} connections): held {held:.0f} calls/s"
        )
        print(
            f"  call end -> commit  p50 {ms(pct(lat, 50))}  p99 {ms(pct(lat, 99))}  "
            f"max {ms(max(lat))}  mean {ms(statistics.fmean(lat))}"
        )
        rate_max, lat2 = await closed_loop(
            processor, Calls(13, f"{mode}{run}c", tag + 2), args.closed_calls, args.workers
        )
        print(
            f"  closed loop ({args.closed_calls} calls, {args.workers} workers): "
            f"{rate_max:.0f} calls/s sustained, per call p50 {ms(pct(lat2, 50))}  "
            f"p99 {ms(pct(lat2, 99))}"
        )
    finally:
        await pool.close()


def simple_rules(folder: Path) -> RuleSet:
    shutil.copytree(default_rules_path(), folder)
    crm = folder / "00-crm.yaml"
    crm.write_text(
        crm.read_text(encoding="utf-8").replace("mode: classic", "mode: simple"), encoding="utf-8"
    )
    return load_rules(folder, "ES")


async def main(args: argparse.Namespace) -> int:
    if args.private:
        admin_dsn, server = embedded.start("ami-daemon-bench-pg", cleanup="delete")
        print(f"private PostgreSQL (pgserver) at {admin_dsn}")
        try:
            return await bench(admin_dsn, args)
        finally:
            server.cleanup()
    return await bench(args.admin_dsn, args)


async def bench(admin_dsn: str, args: argparse.Namespace) -> int:
    name = f"amid_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
            t0 = time.perf_counter()
            await conn.execute(SEED_SQL)
            print(
                f"generated {CONTACTS:,} contacts with phones and "
                f"{CONTACTS // 10:,} open deals in {time.perf_counter() - t0:.1f} s"
            )
            # settle the bulk load first (hint bits, statistics, a checkpoint) so that
            # flushing a million generated rows does not land inside a measurement
            await conn.execute("VACUUM ANALYZE")
            await conn.execute("CHECKPOINT")
            settings = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections')"
            )
            print("server: " + ", ".join(f"{r['name']}={r['setting']}" for r in settings))
        finally:
            await conn.close()
        classic = load_rules(default_rules_path(), "ES")
        await baseline(dsn, classic)
        modes: dict[str, Callable[[], RuleSet]] = {"classic": lambda: classic}
        with tempfile.TemporaryDirectory() as tmp:
            simple = simple_rules(Path(tmp) / "rules")
            modes["simple"] = lambda: simple
            for run, mode in enumerate(args.modes):
                await run_mode(dsn, mode, modes[mode](), args, run)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument(
        "--private",
        action="store_true",
        help="run on a private PostgreSQL (pgserver) instead of --admin-dsn: no other "
        "database's checkpoints (every DROP DATABASE forces one) stall the measurement",
    )
    p.add_argument("--workers", type=int, default=8, help="pool connections / worker tasks")
    p.add_argument("--seconds", type=float, default=20.0, help="open-loop duration per mode")
    p.add_argument("--classic-rate", type=float, default=500.0)
    p.add_argument("--simple-rate", type=float, default=200.0)
    p.add_argument("--closed-calls", type=int, default=10_000)
    p.add_argument(
        "--modes", nargs="+", default=["classic", "simple"], choices=["classic", "simple"]
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
