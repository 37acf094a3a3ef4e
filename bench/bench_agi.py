"""Benchmark: the crm_lookup AGI against 1,000,000 contacts, FastAGI and classic.

Creates a throwaway database on the server of ``--admin-dsn`` (default: the
local PostgreSQL), migrates it and generates in SQL 50 employees and
1,000,000 contacts with one phone each (``+346xxxxxxxx``), then:

* **FastAGI**: starts ``ami-daemon agi-server`` in a child process (as ops
  would run it; the daemon embeds the same server) and plays Asterisk from
  this process, one TCP session per call, exactly the dialogue Asterisk 20
  has (the recorded ``agi_*`` environment, ``GET VARIABLE CRM_DID``, one
  ``SET VARIABLE`` per result, server closes).  Callers are drawn at random
  among the million (80 % known, 20 % unknown numbers), so the TTL cache
  helps almost never: every lookup is a query.
  - open loop: sessions start every 1/``--rate`` s (200/s, the target) for
    ``--seconds``, whatever the previous ones do; latency = from connect to
    the server closing the session, i.e. how long ``AGI()`` holds the call:
    p50, p99, max;
  - closed loop: ``--sessions`` (20) concurrent Asterisk channels, each
    starting its next call when the last ends, ``--repeat`` (3) runs of
    ``--closed-seconds`` (8) per server, alternating with the baseline:
    lookups/s (best and median) and the server's CPU time per lookup (from
    /proc: less sensitive than wall time to other jobs on the machine),
    hence its capacity per core;
  - baseline, both loops, same run: a *dialogue floor*, a bare asyncio
    server in a child process that reads the environment and sends the same
    commands (fixed values, no parsing, no lookup): what the AGI protocol
    itself costs on this machine with this client.
* **classic**: ``python agi_scripts/crm_lookup.py CONFIG`` started ``--runs``
  times as Asterisk starts it (environment on stdin, answers per command),
  alternating with the floor ``python -c 'import asyncpg, phonenumbers'``,
  same interpreter; medians, and the ratio.  The first script run (settings
  cache cold: it reads the YAML config and rules) is shown apart.

The database is dropped at the end, also after an error or Ctrl-C.  Run:

    .venv/bin/python bench/bench_agi.py            # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from ami_daemon.crm import migrate
from ami_daemon.crm.db import with_database

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SCRIPT = REPO / "agi_scripts" / "crm_lookup.py"
CONTACTS = 1_000_000
EMPLOYEES = 50

# The environment Asterisk 20 sent (traces/asterisk20/02_…/agi.log); caller filled in per call.
ENV_TEMPLATE = """agi_network: yes
agi_network_script: crm_lookup
agi_request: agi://127.0.0.1:4573/crm_lookup
agi_channel: SIP/trunk-00000002
agi_language: en
agi_type: SIP
agi_uniqueid: 1795797202.2
agi_version: UNKNOWN__and_probably_unsupported
agi_callerid: {caller}
agi_calleridname: unknown
agi_callingpres: 0
agi_callingani2: 0
agi_callington: 0
agi_callingtns: 0
agi_dnid: 911234567
agi_rdnis: unknown
agi_context: from-trunk
agi_extension: 911234567
agi_priority: 3
agi_enhanced: 0.0
agi_accountcode: {blank}
agi_threadid: 140387644212928

"""

GENERATE_SQL = f"""
INSERT INTO crm.users (name, extension)
    SELECT 'Employee ' || g, (200 + g)::text FROM generate_series(1, {EMPLOYEES}) g;
INSERT INTO crm.contacts (name, responsible_id)
    SELECT 'Contact ' || g, 1 + g % {EMPLOYEES} FROM generate_series(1, {CONTACTS}) g;
INSERT INTO crm.phones (entity_type, entity_id, e164)
    SELECT 'contact', id, '+346' || lpad(id::text, 8, '0') FROM crm.contacts;
ANALYZE;
"""

RULES = "defaults:\n  route_to_responsible: yes\n"


def caller(rng: random.Random) -> str:
    """A national number: 80 % one of the contacts, 20 % nobody's."""
    n = rng.randint(1, CONTACTS)
    return f"6{n:08d}" if rng.random() < 0.8 else f"7{n:08d}"


async def fastagi_call(port: int, number: str) -> tuple[float, dict[str, str]]:
    """One session as Asterisk plays it; (seconds until the server closed, variables set)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ENV_TEMPLATE.format(caller=number, blank="").encode())
    variables: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            break
        text = line.decode().rstrip("\n")
        if text.startswith("GET VARIABLE CRM_DID"):
            writer.write(b"200 result=1 (911234567)\n")
        else:
            match = re.match(r'SET VARIABLE (\S+) "(.*)"\Z', text)
            if match:
                variables[match.group(1)] = match.group(2)
            writer.write(b"200 result=1\n")
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed, variables


async def open_loop(port: int, rate: float, seconds: float, rng: random.Random) -> None:
    total = int(rate * seconds)
    tasks = []
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fastagi_call(port, caller(rng))))
    results = await asyncio.gather(*tasks)
    span = time.perf_counter() - begin
    latencies = sorted(r[0] * 1000 for r in results)
    statuses = [r[1].get("CRM_LOOKUP") for r in results]
    known = sum(1 for r in results if r[1].get("CRM_KNOWN") == "1")
    p = statistics.quantiles(latencies, n=100)
    print(
        f"open loop {rate:.0f}/s for {seconds:.0f} s: {total} sessions in {span:.1f} s "
        f"({total / span:.0f}/s held); session p50 {p[49]:.2f} ms, p99 {p[98]:.2f} ms, "
        f"max {latencies[-1]:.2f} ms; ok {statuses.count('ok')}, known {known}, "
        f"other {total - statuses.count('ok')}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    port: int, sessions: int, seconds: float, rng: random.Random, server_pid: int
) -> tuple[float, float, float, int]:
    """(lookups/s, server CPU ms per lookup, client CPU ms per lookup, not ok)."""
    done = 0
    failed = 0
    deadline = time.perf_counter() + seconds

    async def channel() -> None:
        nonlocal done, failed
        while time.perf_counter() < deadline:
            _, variables = await fastagi_call(port, caller(rng))
            done += 1
            failed += variables.get("CRM_LOOKUP") != "ok"

    begin = time.perf_counter()
    cpu_before, own_before = cpu_seconds(server_pid), time.process_time()
    await asyncio.gather(*(channel() for _ in range(sessions)))
    span = time.perf_counter() - begin
    server_ms = (cpu_seconds(server_pid) - cpu_before) / done * 1000
    client_ms = (time.process_time() - own_before) / done * 1000
    return done / span, server_ms, client_ms, failed


def report_closed(label: str, runs: list[tuple[float, float, float, int]], args: Any) -> None:
    rate = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    best = max(runs)
    print(
        f"{label}: closed loop, {args.sessions} sessions, {len(runs)} x "
        f"{args.closed_seconds:.0f} s alternating: best {best[0]:,.0f} lookups/s "
        f"(median {rate:,.0f}); server CPU per lookup {min(r[1] for r in runs):.2f} ms best, "
        f"{cpu:.2f} ms median (= {1000 / cpu:,.0f} lookups/s per core); "
        f"stand-in CPU {best[2]:.2f} ms; not ok {sum(r[3] for r in runs)}"
    )


def run_classic(config_file: Path, number: str, env: dict[str, str]) -> float:
    """One classic AGI run as Asterisk does it; wall seconds until the process ended."""
    classic_env = "".join(
        line + "\n"
        for line in ENV_TEMPLATE.format(caller=number, blank="").splitlines()
        if not line.startswith("agi_network")
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, str(SCRIPT), str(config_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(classic_env + "\n")
    proc.stdin.flush()
    for line in proc.stdout:
        answer = "200 result=1 (911234567)" if line.startswith("GET VARIABLE") else "200 result=1"
        proc.stdin.write(answer + "\n")
        proc.stdin.flush()
    proc.wait()
    return time.perf_counter() - started


def run_floor(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", "import asyncpg, phonenumbers"], env=env, check=True)
    return time.perf_counter() - started


def classic(config_file: Path, runs: int, rng: random.Random, cache_dir: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AMI_DAEMON_AGI_CACHE_DIR": str(cache_dir),
    }
    cold = run_classic(config_file, caller(rng), env)
    script, floor = [], []
    for _ in range(runs):
        floor.append(run_floor(env))
        script.append(run_classic(config_file, caller(rng), env))
    s, f = statistics.median(script) * 1000, statistics.median(floor) * 1000
    print(
        f"classic script: median {s:.0f} ms (min {min(script) * 1000:.0f}) over {runs} runs; "
        f"floor python -c 'import asyncpg, phonenumbers': median {f:.0f} ms "
        f"(min {min(floor) * 1000:.0f}); ratio {s / f:.2f}x; first run (settings cache cold) "
        f"{cold * 1000:.0f} ms"
    )


FLOOR_COMMANDS = [
    b"GET VARIABLE CRM_DID\n",
    b'SET VARIABLE CRM_KNOWN "1"\n',
    b'SET VARIABLE CRM_SKIP "0"\n',
    b'SET VARIABLE CRM_ENTITY "contact:17"\n',
    b'SET VARIABLE CRM_RESPONSIBLE_EXT "202"\n',
    b'SET VARIABLE CALLERID(name) "Contact 17"\n',
    b'SET VARIABLE CRM_ROUTE_TO "202"\n',
    b'SET VARIABLE CRM_LOOKUP "ok"\n',
]


async def serve_floor() -> None:
    """The dialogue floor: same bytes as a known-client lookup, nothing else."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()).strip():
            pass
        for command in FLOOR_COMMANDS:
            writer.write(command)
            await reader.readline()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    print(f"FastAGI listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", file=sys.stderr)
    sys.stderr.flush()
    await server.serve_forever()


async def start_server(*command: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        if not line:
            raise RuntimeError("agi-server ended before listening")
        match = re.search(r"FastAGI listening on [^ ]+:(\d+)", line)
        if match:
            break

    async def drain() -> None:  # keep reading its log so that it never blocks on stderr
        assert proc.stderr is not None
        while await proc.stderr.readline():
            pass

    proc._bench_drain = asyncio.ensure_future(drain())  # type: ignore[attr-defined]
    return proc, int(match.group(1))


async def bench(args: argparse.Namespace, dsn: str, folder: Path) -> None:
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
        started = time.perf_counter()
        await conn.execute(GENERATE_SQL)
        rows = await conn.fetchval("SELECT count(*) FROM crm.phones")
        print(f"generated {rows:,} phones in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()
    (folder / "rules").mkdir()
    (folder / "rules" / "00.yaml").write_text(RULES)
    config_file = folder / "config.yaml"
    agi = {"time_budget_ms": 300, "cache_ttl": 5}
    config_file.write_text(
        f"pbx:\n  region: ES\ndatabase:\n  dsn: {json.dumps(dsn)}\n"
        f"agi: {json.dumps(agi)}\nrules:\n  path: rules\n"
    )
    servers = {
        "crm_lookup": (
            PYTHON,
            "-m",
            "ami_daemon.cli",
            "agi-server",
            "--config",
            str(config_file),
            "--port",
            "0",
        ),
        "floor     ": (PYTHON, str(Path(__file__).resolve()), "--serve-floor"),
    }
    started = {}
    try:
        for label, command in servers.items():
            started[label] = await start_server(*command)
        for label, (_, port) in started.items():
            await asyncio.gather(*(fastagi_call(port, caller(rng)) for _ in range(50)))  # warm-up
            print(f"{label}: ", end="")
            await open_loop(port, args.rate, args.seconds, rng)
        closed: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in started}
        for _ in range(args.repeat):
            for label, (server, port) in started.items():
                run = await closed_loop(port, args.sessions, args.closed_seconds, rng, server.pid)
                closed[label].append(run)
        for label, runs in closed.items():
            report_closed(label, runs, args)
    finally:
        for server, _ in started.values():
            server.terminate()
            await server.wait()
    await asyncio.to_thread(classic, config_file, args.runs, rng, folder / "cache")


async def create(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get(
            "AMI_DAEMON_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop lookups/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="the open loop's length")
    parser.add_argument("--sessions", type=int, default=20, help="closed-loop concurrent calls")
    parser.add_argument("--closed-seconds", type=float, default=8.0, help="each closed loop")
    parser.add_argument("--repeat", type=int, default=3, help="closed loops per server")
    parser.add_argument("--runs", type=int, default=30, help="classic script runs")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        asyncio.run(serve_floor())
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other jobs)")
    name = f"amid_bench_agi_{uuid.uuid4().hex[:10]}"
    asyncio.run(create(args.admin_dsn, name))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-agi-") as folder:
            asyncio.run(bench(args, with_database(args.admin_dsn, name), Path(folder)))
    finally:
        asyncio.run(drop(args.admin_dsn, name))
        print(f"dropped {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
