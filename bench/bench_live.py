"""Live AMI path throughput: simulator → panoramisk (our protocol) → inbox → tracker.

The event stream is every asterisk20 capture (real Asterisk 20 traffic with
its VarSet/Newexten noise), each re-keyed into ``--copies`` distinct calls by
the simulator (``ami_daemon.ami.rekey``), replayed as fast as the socket
takes it by the simulator running in a child process pinned to the other
core.  This process is pinned to one core and measures, in the same run,
alternating, over ``--repeat`` rounds (medians reported):

(sink)  a reader that only counts message ends: the simulator's ceiling;
(raw)   stock panoramisk ``Manager`` with a no-op synchronous ``'*'`` callback:
        its own parse of the same stream, the ceiling STACK.md speaks of;
(inbox) our connection (panoramisk + incremental StreamDecoder + guarded
        dispatch + inbox) with a consumer that only reads the stream;
(live)  the same plus the consumer feeding every event to the tracker in
        arrival order — the daemon's live path.

Events per second count the events received from the first to the last one
(wall clock; the client process uses one core), plus this process's CPU time.

Run: ``.venv/bin/python bench/bench_live.py`` (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ami_daemon.config import AmiConfig, PbxConfig

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
SECRET = "bench"
PBX = PbxConfig(name="bench", region="ES", trunk_channels=(re.compile(r"^SIP/trunk-"),))


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {core % os.cpu_count()})  # type: ignore[operator]


def simulator_process(conn: Connection, copies: int, runs: int, core: int) -> None:
    """Child: build the timeline once, serve it ``runs`` times, one fresh simulator each."""
    _pin(core)
    from ami_daemon.ami.simulator import Simulator, SimulatorOptions
    from ami_daemon.ami.timeline import build_timeline, load_capture

    captures = [load_capture(p.parent) for p in sorted(TRACES.glob("asterisk20/*/ami.raw"))]
    timeline = build_timeline(captures, copies=copies, interleave=0.2)
    conn.send(len(timeline))

    async def serve_once() -> None:
        sim = Simulator(timeline, SimulatorOptions(secret=SECRET, speed=None))
        await sim.start()
        conn.send(sim.port)
        await sim.wait_done()
        # Wait for the client to say it has everything before closing.
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await sim.close()

    for _ in range(runs):
        asyncio.run(serve_once())


class Meter:
    """Counts events; notes the time of the first and of the last."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu0 = 0.0
        self.cpu1 = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
            self.cpu0 = time.process_time()
        if self.count >= self.total:
            self.last = time.perf_counter()
            self.cpu1 = time.process_time()
            self.done.set()

    def rate(self) -> tuple[float, float]:
        wall = self.last - self.first
        cpu = self.cpu1 - self.cpu0
        return (self.count - 1) / wall, (self.count - 1) / cpu


async def run_sink(port: int, total: int) -> Meter:
    """Only read the socket and count message ends: how fast the simulator can send."""
    meter = Meter(total + 1)  # + the Login answer
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"Action: Login\r\nUsername: ami-daemon\r\nSecret: {SECRET}\r\n\r\n".encode())
    tail = b""
    while not meter.done.is_set():
        data = await reader.read(1 << 16)
        if not data:
            break
        window = tail + data
        for _ in range(window.count(b"\r\n\r\n")):
            meter.tick()
        tail = data[-3:]
    writer.close()
    return meter


async def run_raw(port: int, total: int) -> Meter:
    from panoramisk import Manager

    meter = Meter(total)
    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="ami-daemon",
        secret=SECRET,
        events="on",
        ping_delay=3600,
        ping_interval=3600,
        loop=asyncio.get_running_loop(),
    )

    def noop(_manager: Any, _event: Any) -> None:
        meter.tick()

    manager.register_event("*", noop)
    await manager.connect()
    await asyncio.wait_for(meter.done.wait(), 300)
    manager.close()
    return meter


async def run_ours(port: int, total: int, with_tracker: bool) -> Meter:
    from ami_daemon.ami.connection import AmiConnection
    from ami_daemon.calls.tracker import Tracker

    meter = Meter(total)
    connection = AmiConnection(
        AmiConfig(port=port, username="ami-daemon", secret=SECRET, ping_interval=3600)
    )
    tracker = Tracker(PBX)
    feed = tracker.feed
    calls = 0

    async def consume() -> None:
        nonlocal calls
        tick = meter.tick
        async for item in connection.stream():
            if type(item) is tuple:
                if with_tracker:
                    calls += len(feed(item[0], item[1]))
                tick()

    consumer = asyncio.create_task(consume())
    await connection.start()
    await asyncio.wait_for(meter.done.wait(), 300)
    await connection.close()
    await consumer
    if with_tracker:
        meter.calls = calls  # type: ignore[attr-defined]
    return meter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=150, help="copies of each capture")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are reported)")
    args = parser.parse_args()
    _pin(0)
    kinds: list[tuple[str, Callable[[int, int], Awaitable[Meter]]]] = [
        ("socket sink (simulator's ceiling)", run_sink),
        ("raw panoramisk, no-op callback", run_raw),
        ("our connection → inbox (no tracker)", lambda p, t: run_ours(p, t, False)),
        ("live path: connection → inbox → tracker", lambda p, t: run_ours(p, t, True)),
    ]
    runs = args.repeat * len(kinds)
    parent, child = mp.Pipe()
    process = mp.Process(target=simulator_process, args=(child, args.copies, runs, 1))
    process.start()
    events = parent.recv()
    total = events + 1  # + the FullyBooted sent after the login
    print(
        f"stream: {events} events ({args.copies} copies of each asterisk20 capture), "
        f"simulator on core 1, client on core 0, CPUs: {os.cpu_count()}"
    )
    walls: dict[str, list[float]] = {name: [] for name, _ in kinds}
    cpus: dict[str, list[float]] = {name: [] for name, _ in kinds}
    for round_ in range(args.repeat):
        for name, runner in kinds:
            port = parent.recv()
            meter = asyncio.run(runner(port, total))
            parent.send("done")
            wall, cpu = meter.rate()
            extra = f", {meter.calls} calls" if hasattr(meter, "calls") else ""
            print(
                f"  round {round_ + 1}: {name:42s} {wall:9.0f} ev/s  ({cpu:9.0f} ev/CPU-s{extra})"
            )
            walls[name].append(wall)
            cpus[name].append(cpu)
    process.join(30)
    raw_name = kinds[1][0]
    print("median of the rounds (best in brackets); % of raw panoramisk:")
    raw_wall = statistics.median(walls[raw_name])
    raw_cpu = statistics.median(cpus[raw_name])
    for name, _ in kinds:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(
            f"  {name:42s} {wall:8.0f} ev/s {100 * wall / raw_wall:4.0f}%"
            f"  [{max(walls[name]):8.0f}]   {cpu:8.0f} ev/CPU-s {100 * cpu / raw_cpu:4.0f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
