"""End to end over real TCP: simulator → live connection → tracker, against the file path.

Every shared real capture, served by the simulator to the live connection
and fed to the tracker by one consumer in arrival order, gives the same
calls as ``ami-daemon calls`` on the file.  A link broken mid-call loses
nothing and doubles nothing; a call whose end happened while the link was
down ends ``interrupted`` once the channel list after the reconnect shows its
channels gone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ami_daemon import cli, config
from ami_daemon.ami.connection import AmiConnection, ChannelSnapshot, LinkDown, LinkUp
from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import build_timeline, load_capture
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import AmiConfig
from tests.paths import REPO, TRACES

LAB = REPO / "tests" / "tracker_configs" / "lab.yaml"
CACOFONISK = REPO / "tests" / "tracker_configs" / "cacofonisk.yaml"
CAPTURES = [(p, LAB) for p in sorted(TRACES.glob("asterisk20/*/ami.raw"))] + [
    (p, CACOFONISK) for p in sorted(TRACES.glob("cacofonisk/*/*.ami"))
]
TIME_FIELDS = ("started_at", "answered_at", "ended_at", "talk_seconds")
SECRET = "live"


def file_calls(
    capture: Path, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    """What ``ami-daemon calls CAPTURE --config CFG`` prints."""
    capsys.readouterr()
    assert cli.main(["calls", str(capture), "--config", str(cfg)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def live_calls(
    capture: Path,
    cfg: Path,
    on_reconnect: Callable[[AmiConnection, Tracker, Simulator], Any] | None = None,
    snapshot: bool = False,
    **options: Any,
) -> tuple[list[dict[str, Any]], list[object], Simulator]:
    """Serve the capture, consume the live stream into a tracker like the daemon does."""
    pbx = config.load(cfg).pbx
    sim = Simulator(
        build_timeline([load_capture(capture)]),
        SimulatorOptions(secret=SECRET, **{"speed": None, **options}),
    )
    await sim.start()
    connection = AmiConnection(
        AmiConfig(port=sim.port, username="ami-daemon", secret=SECRET, reconnect_max_delay=0.5),
        snapshot=snapshot,
    )
    tracker = Tracker(pbx)
    summaries: list[dict[str, Any]] = []
    markers: list[object] = []

    async def consume() -> None:
        async for item in connection.stream():
            if type(item) is tuple:
                message, received_at = item
                summaries.extend(s.to_json_dict() for s in tracker.feed(message, received_at))
            else:
                markers.append(item)
                if isinstance(item, ChannelSnapshot) and item.reconnect:
                    ended = tracker.end_missing(item.uniqueids)
                    summaries.extend(s.to_json_dict() for s in ended)
                if isinstance(item, LinkUp) and item.reconnect and on_reconnect is not None:
                    ended = await on_reconnect(connection, tracker, sim)
                    summaries.extend(s.to_json_dict() for s in ended)

    try:
        await connection.start()
        consumer = asyncio.create_task(consume())
        await sim.wait_done(20)
        await connection.ping()
        await connection.close()
        await asyncio.wait_for(consumer, 10)
    finally:
        await connection.close()
        await sim.close()
    summaries.extend(s.to_json_dict() for s in tracker.finish())
    return summaries, markers, sim


def without_times(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k not in TIME_FIELDS} for c in calls]


@pytest.mark.parametrize(
    ("capture", "cfg"), CAPTURES, ids=[f"{p.parent.name}/{p.name}" for p, _ in CAPTURES]
)
@pytest.mark.asyncio
async def test_live_stream_gives_the_same_calls_as_the_capture_file(
    capture: Path, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = file_calls(capture, cfg, capsys)
    assert expected, f"{capture} has calls"
    got, markers, _ = await live_calls(capture, cfg)
    assert [type(m) for m in markers] == [LinkUp, LinkDown]
    if "Timestamp: " in capture.read_text(encoding="utf-8", errors="replace"):
        assert got == expected
    else:
        # Without Timestamp headers the live daemon times calls with its own clock.
        assert without_times(got) == without_times(expected)
        assert all(c["started_at"] and c["ended_at"] for c in got)
        assert all(e["started_at"] is None for e in expected)


QUEUE_CALL = TRACES / "asterisk20" / "01_inbound_queue_201_caller_hangup" / "ami.raw"
TRANSFER = TRACES / "asterisk20" / "04_inbound_queue_201_blind_transfer_to_202" / "ami.raw"


@pytest.mark.parametrize("capture", [QUEUE_CALL, TRANSFER], ids=["queue", "blind_transfer"])
@pytest.mark.parametrize("break_after", [20, 75, 120])
@pytest.mark.asyncio
async def test_link_dropped_mid_call_loses_nothing_and_doubles_nothing(
    capture: Path, break_after: int, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = file_calls(capture, LAB, capsys)
    got, markers, sim = await live_calls(capture, LAB, drop_after=break_after)
    assert got == expected
    assert [type(m) for m in markers] == [LinkUp, LinkDown, LinkUp, LinkDown]
    assert sim.logins == 2


async def reconcile(connection: AmiConnection, tracker: Tracker, sim: Simulator) -> list[Any]:
    """After a reconnect: channels Asterisk no longer has ended while we were away."""
    channels = await connection.core_show_channels()
    sim.resume()
    return tracker.end_missing(c["Uniqueid"] for c in channels)


@pytest.mark.asyncio
async def test_call_whose_end_was_missed_ends_interrupted_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = file_calls(QUEUE_CALL, LAB, capsys)
    assert len(expected) == 1 and expected[0]["status"] == "answered"
    # Break after the agent answered; everything after it (the hangups) is lost.
    got, markers, sim = await live_calls(
        QUEUE_CALL,
        LAB,
        on_reconnect=reconcile,
        drop_after=120,
        lost_events=10_000,
        hold_after_break=True,
    )
    assert sim.sent == 120 and sim.played == len(sim.timeline)
    assert len(got) == 1, "one call, not two"
    call = got[0]
    assert call["status"] == "interrupted"
    assert call["call_id"] == expected[0]["call_id"]
    # What was known before the break is kept.
    for key in ("direction", "external_number", "did", "answered_by", "queue", "started_at"):
        assert call[key] == expected[0][key]
    assert [type(m) for m in markers] == [LinkUp, LinkDown, LinkUp, LinkDown]


@pytest.mark.parametrize("break_after", [40, 75, 120])
@pytest.mark.asyncio
async def test_channel_snapshot_sits_exactly_where_asterisk_took_it(break_after: int) -> None:
    """Reconnect while the replay runs on: the snapshot matches the events before it.

    Paced at 20x so that the first session's snapshot (taken right after the
    login, 30 ms before the capture's second event) is answered before the break.
    """
    sim = Simulator(
        build_timeline([load_capture(TRANSFER)]),
        SimulatorOptions(secret=SECRET, speed=20.0, drop_after=break_after),
    )
    await sim.start()
    connection = AmiConnection(
        AmiConfig(port=sim.port, username="ami-daemon", secret=SECRET, reconnect_max_delay=0.5),
        snapshot=True,
    )
    items: list[object] = []
    try:
        await connection.start()

        async def consume() -> None:
            async for item in connection.stream():
                items.append(item)

        consumer = asyncio.create_task(consume())
        await sim.wait_done(20)
        await connection.ping()
        await connection.close()
        await asyncio.wait_for(consumer, 10)
    finally:
        await connection.close()
        await sim.close()
    snapshots = [i for i in items if isinstance(i, ChannelSnapshot)]
    assert [s.session for s in snapshots] == [1, 2]
    alive: set[str] = set()
    for item in items:
        if isinstance(item, ChannelSnapshot):
            assert item.uniqueids == alive
        elif isinstance(item, tuple):
            event = item[0]
            if event.get("Event") == "Newchannel":
                alive.add(event["Uniqueid"])
            elif event.get("Event") == "Hangup":
                alive.discard(event["Uniqueid"])
    assert snapshots[0].uniqueids == frozenset()
    assert snapshots[1].uniqueids, "the call was going on at the reconnect"


@pytest.mark.asyncio
async def test_snapshot_after_reconnect_ends_the_missed_call_interrupted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [expected] = file_calls(QUEUE_CALL, LAB, capsys)
    got, markers, _ = await live_calls(
        QUEUE_CALL, LAB, snapshot=True, drop_after=120, lost_events=10_000, speed=20.0
    )
    assert [(c["call_id"], c["status"]) for c in got] == [(expected["call_id"], "interrupted")]
    assert got[0]["answered_by"] == expected["answered_by"] == "201"
    assert [type(m) for m in markers] == [
        LinkUp,
        ChannelSnapshot,
        LinkDown,
        LinkUp,
        ChannelSnapshot,
        LinkDown,
    ]


@pytest.mark.asyncio
async def test_many_distinct_overlapping_calls_from_one_recording(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Copies re-keyed by the helper are distinct calls with the original's outcome."""
    [original] = file_calls(TRANSFER, LAB, capsys)
    pbx = config.load(LAB).pbx
    copies = 12
    timeline = build_timeline([load_capture(TRANSFER)], copies=copies, interleave=0.7)
    sim = Simulator(timeline, SimulatorOptions(secret=SECRET, speed=None))
    await sim.start()
    connection = AmiConnection(AmiConfig(port=sim.port, username="ami-daemon", secret=SECRET))
    tracker = Tracker(pbx)
    calls: list[dict[str, Any]] = []
    try:
        await connection.start()

        async def consume() -> None:
            async for message, received_at in connection.events():
                calls.extend(s.to_json_dict() for s in tracker.feed(message, received_at))

        consumer = asyncio.create_task(consume())
        await sim.wait_done(20)
        await connection.ping()
        await connection.close()
        await asyncio.wait_for(consumer, 10)
    finally:
        await connection.close()
        await sim.close()
    assert tracker.finish() == []
    assert len(calls) == copies
    assert len({c["call_id"] for c in calls}) == copies
    assert len({c["external_number"] for c in calls}) == copies
    same = ("direction", "did", "status", "answered_by", "final_agent", "queue", "transfers")
    for call in calls:
        assert {k: call[k] for k in same} == {k: original[k] for k in same}
        assert call["talk_seconds"] == original["talk_seconds"]
    starts = sorted(c["started_at"] for c in calls)
    ends = sorted(c["ended_at"] for c in calls)
    assert starts[1] < ends[0], "the copies overlap in time"
