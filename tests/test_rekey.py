"""Re-keyed traffic: many distinct calls from one real capture, the capture untouched."""

from __future__ import annotations

from ami_daemon import config
from ami_daemon.ami import rekey
from ami_daemon.ami.reader import iter_messages, read_capture
from ami_daemon.calls.summary import CallStatus
from ami_daemon.calls.tracker import Tracker
from tests.paths import REPO, TRACES

LAB = config.load(REPO / "tests" / "tracker_configs" / "lab.yaml").pbx
BLIND = TRACES / "asterisk20" / "04_inbound_queue_201_blind_transfer_to_202" / "ami.raw"


def test_copies_are_distinct_interleaved_calls_with_the_same_story() -> None:
    original = list(read_capture(BLIND))
    before = [dict(m) for m in original]
    events = list(rekey.rekey(original, 50, stagger=0.25))
    assert [dict(m) for m in original] == before  # the source is never edited
    assert len(events) == 50 * sum(1 for m in original if "Event" in m)
    tracker = Tracker(LAB)
    calls = []
    most_open = 0
    for event in events:
        calls.extend(tracker.feed(event))
        most_open = max(most_open, tracker.open_calls())
    assert tracker.finish() == []
    assert most_open > 10  # they overlap: a 9.5 s call started every 0.25 s
    assert len(calls) == 50
    assert len({c.call_id for c in calls}) == 50
    assert len({c.external_number for c in calls}) == 50
    for call in calls:
        assert call.status is CallStatus.ANSWERED
        assert (call.answered_by, call.final_agent, call.queue) == ("201", "202", "sales")
        assert call.talk_seconds == 8 and call.did == "+34911234567"
    starts = sorted(c.started_at for c in calls if c.started_at is not None)
    assert (starts[-1] - starts[0]).total_seconds() == 49 * 0.25


def test_extensions_and_timestampless_captures_keep_working() -> None:
    capture = TRACES / "cacofonisk" / "simple" / "ab_callgroup.ami"
    pbx = config.load(REPO / "tests" / "tracker_configs" / "cacofonisk.yaml").pbx
    events = list(rekey.rekey(list(read_capture(capture)), 5))
    tracker = Tracker(pbx)
    calls = [s for e in events for s in tracker.feed(e)]
    assert len(calls) == 5
    assert {(c.caller_extension, c.answered_by, c.agents_rung) for c in calls} == {
        ("201", "202", ("202", "203"))
    }


def test_encode_round_trips_through_the_reader() -> None:
    events = list(rekey.mix([list(read_capture(BLIND))], copies=3))
    data = rekey.encode(events)
    assert [m.headers for m in iter_messages(data)] == [m.headers for m in events]
