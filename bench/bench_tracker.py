"""Throughput and memory of the call tracker on re-keyed real traffic (one core).

The event mix is every shared capture (../shared/traces: asterisk20 with its
VarSet/Newexten noise, cacofonisk with Local channels and no noise), each
re-keyed into many distinct, overlapping calls by ``ami_daemon.ami.rekey``.

Measures, best of ``--repeat`` runs:

(a) tracker alone on already parsed events;
(b) reader + tracker on the wire bytes (StreamDecoder fed 64 KiB reads);
baselines in the same run: a loop doing only the handler lookup, the reader alone;
(c) memory with ``--calls`` calls in progress (each copy fed up to its first
    Hangup), by tracemalloc and by the process's resident size.

Run: ``.venv/bin/python bench/bench_tracker.py`` (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gc
import re
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from ami_daemon.ami import rekey
from ami_daemon.ami.reader import AmiMessage, StreamDecoder, read_capture
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import DEFAULT_EMPLOYEE_CHANNELS, PbxConfig

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"

#: One PBX config that reads both labs: their trunks, and cacofonisk's peer map.
PBX = PbxConfig(
    name="bench",
    region="ES",
    trunk_channels=(re.compile(r"^SIP/trunk-"), re.compile(r"^SIP/voipgrid-siproute-")),
    employee_channels=re.compile(DEFAULT_EMPLOYEE_CHANNELS),
    peer_extensions={"150010001": "201", "150010002": "202", "150010003": "203"},
)


def captures() -> list[list[AmiMessage]]:
    paths = sorted(TRACES.glob("asterisk20/*/ami.raw")) + sorted(TRACES.glob("cacofonisk/*/*.ami"))
    return [list(read_capture(p)) for p in paths]


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def tracker_alone(events: list[AmiMessage]) -> tuple[float, int, int]:
    tracker = Tracker(PBX)
    feed = tracker.feed
    calls = most_open = 0
    gc.collect()
    start = time.perf_counter()
    for i, event in enumerate(events):
        calls += len(feed(event))
        if not i & 4095:
            most_open = max(most_open, tracker.open_calls())
    elapsed = time.perf_counter() - start
    calls += len(tracker.finish())
    return elapsed, calls, most_open


def lookup_only(events: list[AmiMessage]) -> float:
    handlers = dict.fromkeys(Tracker(PBX).handled_events())
    gc.collect()
    start = time.perf_counter()
    hits = 0
    for event in events:
        if handlers.get(event.get("Event", "")) is not None:
            hits += 1
    return time.perf_counter() - start


def reader_and_tracker(data: bytes, with_tracker: bool) -> tuple[float, int]:
    tracker = Tracker(PBX)
    feed = tracker.feed
    decoder = StreamDecoder()
    chunk = 1 << 16
    messages = 0
    gc.collect()
    start = time.perf_counter()
    for offset in range(0, len(data), chunk):
        for message in decoder.feed(data[offset : offset + chunk]):
            messages += 1
            if with_tracker:
                feed(message)
    for message in decoder.close():
        messages += 1
        if with_tracker:
            feed(message)
    elapsed = time.perf_counter() - start
    tracker.finish()
    return elapsed, messages


def calls_in_progress(sources: list[list[AmiMessage]], n: int, traced: bool) -> tuple[int, int]:
    """Open ``n`` calls (each copy fed up to its first Hangup); return (bytes, open calls)."""
    prefixes = []
    for events in sources:
        events = [e for e in events if "Event" in e]
        cut = next((i for i, e in enumerate(events) if e["Event"] == "Hangup"), len(events))
        prefixes.append(events[:cut])
    gc.collect()
    if traced:
        tracemalloc.start()
    before = _rss()
    tracker = Tracker(PBX)
    for k in range(n):
        for event in rekey.rekey_one(prefixes[k % len(prefixes)], k, shift=k * 0.01):
            tracker.feed(event)
    gc.collect()
    if traced:
        used, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    else:
        used = _rss() - before
    return used, tracker.open_calls()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=40, help="copies of each capture")
    parser.add_argument("--stagger", type=float, default=0.02, help="seconds between copies")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10_000, help="calls in progress for (c)")
    args = parser.parse_args()

    sources = captures()
    # Memory first, while the process is small: resident growth is then the tracker's.
    rss, _ = calls_in_progress(sources, args.calls, traced=False)
    traced, open_calls = calls_in_progress(sources, args.calls, traced=True)

    events = rekey.mix(sources, args.copies, args.stagger)
    data = rekey.encode(events)
    n = len(events)
    noise = sum(1 for e in events if e.get("Event") not in Tracker(PBX).handled_events())
    print(
        f"event mix: {len(sources)} captures x {args.copies} copies = {n:,} events "
        f"({noise / n:.0%} not tracked, e.g. VarSet), {len(data) / 1e6:.1f} MB on the wire"
    )

    runs = [tracker_alone(events) for _ in range(args.repeat)]
    elapsed, calls, most_open = min(runs)
    base = best(args.repeat, lambda: lookup_only(events))
    per = elapsed / n * 1e6
    print(
        f"(a) tracker alone:       {n / elapsed:>10,.0f} events/s  ({per:.2f} µs/event;"
        f" {calls:,} calls, up to {most_open:,} open at once)"
    )
    handled = Tracker(PBX).handled_events()
    tracked = [e for e in events if e.get("Event") in handled]
    only, _, _ = min(tracker_alone(tracked) for _ in range(args.repeat))
    print(
        f"    tracked events only:  {len(tracked) / only:>10,.0f} events/s  "
        f"({only / len(tracked) * 1e6:.2f} µs/event; the noise removed beforehand)"
    )
    print(f"    baseline lookup only: {n / base:>10,.0f} events/s  ({base / n * 1e6:.2f} µs/event)")

    both, messages = min(reader_and_tracker(data, True) for _ in range(args.repeat))
    reader, _ = min(reader_and_tracker(data, False) for _ in range(args.repeat))
    print(
        f"(b) reader + tracker:    {messages / both:>10,.0f} events/s  "
        f"({both / messages * 1e6:.2f} µs/event)"
    )
    print(
        f"    baseline reader only: {messages / reader:>10,.0f} events/s  "
        f"({reader / messages * 1e6:.2f} µs/event)"
    )

    print(
        f"(c) {open_calls:,} calls in progress: {traced / 1e6:.1f} MB (tracemalloc), "
        f"{rss / 1e6:.1f} MB resident growth; {traced / open_calls / 1e3:.1f} kB per call"
    )


if __name__ == "__main__":
    main()
