"""The tracker survives whatever the wire brings: mid-call starts, hostile bytes, odd events."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from ami_daemon import config
from ami_daemon.ami.reader import AmiMessage, StreamDecoder, iter_messages, read_capture
from ami_daemon.calls.summary import CallStatus, CallSummary
from ami_daemon.calls.tracker import Tracker
from tests.paths import REPO, TRACES

CONFIGS = REPO / "tests" / "tracker_configs"
LAB = config.load(CONFIGS / "lab.yaml").pbx
VOIPGRID = config.load(CONFIGS / "cacofonisk.yaml").pbx
CAPTURES = sorted(TRACES.glob("asterisk20/*/ami.raw")) + sorted(TRACES.glob("cacofonisk/*/*.ami"))


def pbx_for(capture: Path) -> config.PbxConfig:
    return LAB if capture.name == "ami.raw" else VOIPGRID


def run(
    messages: list[AmiMessage] | list[dict[str, str]], pbx: config.PbxConfig
) -> list[CallSummary]:
    tracker = Tracker(pbx)
    out: list[CallSummary] = []
    for message in messages:
        out.extend(tracker.feed(message))
    out.extend(tracker.finish())
    assert tracker.open_calls() == 0
    return out


def check_summaries(calls: list[CallSummary]) -> None:
    ids = [c.call_id for c in calls]
    assert len(ids) == len(set(ids)), f"a conversation reported twice: {ids}"
    for call in calls:
        data = call.to_json_dict()
        assert CallSummary.from_json_dict(json.loads(json.dumps(data))) == call


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_started_at_every_message_offset_never_raises(capture: Path) -> None:
    """A daemon connecting mid-call: each start position, through reader and tracker."""
    data = capture.read_bytes()
    messages = list(iter_messages(data))
    full = run(messages, pbx_for(capture))
    assert full
    for message in messages:
        tail = list(iter_messages(data[message.offset :]))
        calls = run(tail, pbx_for(capture))
        check_summaries(calls)
        assert len(calls) <= len(full) + 1


@pytest.mark.parametrize("capture", CAPTURES[:3], ids=lambda p: p.parent.name)
def test_capture_cut_at_every_message_reports_open_calls_as_interrupted(capture: Path) -> None:
    messages = list(read_capture(capture))
    (complete,) = run(messages, LAB)
    for cut in range(1, len(messages)):
        calls = run(messages[:cut], LAB)
        check_summaries(calls)
        for call in calls:
            if call.status is CallStatus.INTERRUPTED:
                assert call.call_id == complete.call_id
                assert call.ended_at is None and call.talk_seconds is None
                assert call.direction is complete.direction


def test_multibyte_characters_split_across_reads_give_the_same_calls() -> None:
    """Byte-at-a-time feeding splits every UTF-8 sequence; the calls are unchanged."""
    data = (
        TRACES / "asterisk20" / "02_inbound_known_client_direct_202_agent_hangup" / "ami.raw"
    ).read_bytes()
    data = data.replace(b"CallerIDName: <unknown>", "CallerIDName: Иван Ñúñez".encode(), 3)
    decoder = StreamDecoder()
    tracker = Tracker(LAB)
    out: list[CallSummary] = []
    for i in range(len(data)):
        for message in decoder.feed(data[i : i + 1]):
            out.extend(tracker.feed(message))
    for message in decoder.close():
        out.extend(tracker.feed(message))
    out.extend(tracker.finish())
    assert out == run(list(iter_messages(data)), LAB)
    assert out[0].answered_by == "202"


def hostile_bytes() -> dict[str, bytes]:
    base = (TRACES / "asterisk20" / "01_inbound_queue_201_caller_hangup" / "ami.raw").read_bytes()
    cut = base.index(b"Event: BridgeEnter")
    return {
        "truncated": base[: cut + 40],
        "no_colon": base.replace(
            b"Event: Newstate\r\n", b"Event: Newstate\r\nthis line has none\r\n"
        ),
        "garbage": base[:cut] + bytes(range(256)) * 40 + b"\r\n\r\n" + base[cut:],
        "huge_value": base.replace(
            b"CallerIDName: <unknown>", b"CallerIDName: " + b"x" * (1 << 20), 1
        ),
        "nul_and_cr": base.replace(b"Exten: 911234567", b"Exten: 91\x0012\r34567"),
    }


@pytest.mark.parametrize("kind", sorted(hostile_bytes()))
def test_hostile_bytes_are_survived(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    data = hostile_bytes()[kind]
    calls = run(list(iter_messages(data)), LAB)
    check_summaries(calls)
    assert len(calls) == 1
    if kind == "truncated":
        assert calls[0].status is CallStatus.INTERRUPTED
        # What was known before the cut (in the first BridgeEnter): 201 rang, no talk yet.
        assert calls[0].agents_rung == ("201",) and calls[0].answered_by is None
    else:
        assert calls[0].status is CallStatus.ANSWERED
        assert calls[0].answered_by == "201"
    if kind in ("truncated", "no_colon", "garbage"):
        # Logged with the byte offset of the bad part, which is inside the data.
        offsets = [int(m.group(1)) for m in re.finditer(r"byte (\d+)", caplog.text)]
        assert offsets and all(0 <= o < len(data) for o in offsets)
    if kind == "huge_value":
        assert calls[0].external_number == "+34600111222"  # a 1 MB name is only a name


def test_unknown_and_noise_events_change_nothing() -> None:
    messages = list(read_capture(TRACES / "asterisk20" / "08_internal_201_to_202" / "ami.raw"))
    noisy: list[AmiMessage] = []
    for i, message in enumerate(messages):
        noisy.append(message)
        noisy.append(AmiMessage([("Event", f"MadeUp{i}"), ("Uniqueid", "nope")], 0))
        noisy.append(AmiMessage([("Response", "Success"), ("ActionID", str(i))], 0))
        noisy.append(AmiMessage([("NoEventHeader", "x")], 0))
    assert run(noisy, LAB) == run(messages, LAB)


def test_handled_events_are_the_calls_events_and_skip_noise() -> None:
    handled = Tracker(LAB).handled_events()
    assert {"Newchannel", "Hangup", "DialBegin", "BridgeEnter", "AttendedTransfer"} <= handled
    assert not {"VarSet", "Newexten", "Cdr", "DeviceStateChange", "AGIExecStart"} & handled


def test_malformed_events_are_logged_with_their_offset(caplog: pytest.LogCaptureFixture) -> None:
    tracker = Tracker(LAB)
    caplog.set_level(logging.WARNING, "ami_daemon.calls")
    bad = [
        AmiMessage([("Event", "Newchannel"), ("Channel", "SIP/201-1")], 1234),  # no Uniqueid
        AmiMessage([("Event", "Newstate"), ("Uniqueid", "9.9")], 2345),  # no Channel
        AmiMessage([("Event", "BlindTransfer"), ("Result", "Success")], 3456),
        AmiMessage(
            [
                ("Event", "Newchannel"),
                ("Channel", "SIP/trunk-2"),
                ("Uniqueid", "9.8"),
                ("Timestamp", "yesterday"),
            ],
            4567,
        ),
    ]
    for message in bad:
        assert tracker.feed(message) == []
    text = caplog.text
    for offset in (1234, 2345, 3456, 4567):
        assert f"byte {offset}" in text
    assert tracker.open_calls() == 1  # the last one is a channel, its odd time aside
    (call,) = tracker.finish()
    assert call.status is CallStatus.INTERRUPTED and call.started_at is None


def test_events_for_never_seen_channels_are_harmless() -> None:
    tracker = Tracker(LAB)
    for name in (
        "Hangup",
        "BridgeLeave",
        "DialEnd",
        "LocalBridge",
        "Pickup",
        "Rename",
        "AttendedTransfer",
        "BridgeDestroy",
    ):
        event = {
            "Event": name,
            "Uniqueid": "1.1",
            "DestUniqueid": "1.2",
            "Result": "Success",
            "OrigTransfererUniqueid": "1.3",
            "BridgeUniqueid": "b",
            "Newname": "SIP/x-1",
        }
        assert tracker.feed(event) == []
    assert tracker.open_calls() == 0
    assert tracker.finish() == []


def test_a_capture_replayed_twice_after_its_calls_ended_does_not_duplicate_them() -> None:
    """Events about channels already hung up (a straggler, a replay) start no phantom call."""
    messages = list(
        read_capture(
            TRACES / "asterisk20" / "02_inbound_known_client_direct_202_agent_hangup" / "ami.raw"
        )
    )
    tracker = Tracker(LAB)
    first = [s for m in messages for s in tracker.feed(m)]
    again = [s for m in messages for s in tracker.feed(m)]
    assert len(first) == 1 and again == []
    assert tracker.finish() == []


def test_a_tracker_started_while_the_call_is_connected_reports_what_it_saw() -> None:
    """Connected mid-call: only the last bridge and the hangups are seen; both parties
    hang up Up, the best evidence left that they talked."""
    scenario = TRACES / "asterisk20" / "04_inbound_queue_201_blind_transfer_to_202"
    messages = list(read_capture(scenario / "ami.raw"))
    last_bridge = max(i for i, m in enumerate(messages) if m.get("Event") == "BridgeEnter")
    (call,) = run(messages[last_bridge:], LAB)
    assert call.call_id == "1795797227.7"
    assert call.direction.value == "inbound" and call.external_number == "+34600111224"
    assert call.status is CallStatus.ANSWERED
    assert (call.answered_by, call.final_agent) == ("202", "202")
    assert call.answered_at is None and call.talk_seconds is None
