"""The tracker on every real capture in ../shared/traces: the calls each one states.

asterisk20: each scenario's ``expected.yaml`` mapped onto the contract as
shared/traces/README.md says.  cacofonisk: the outcome table of
``cacofonisk/EXPECTED.md`` (DESIGN's contract wins where they differ: outbound
``answered_by`` is null and the employee is ``caller_extension``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ami_daemon import config
from ami_daemon.ami.reader import AmiMessage, read_capture
from ami_daemon.calls.summary import CallStatus, CallSummary, Direction, Transfer, TransferKind
from ami_daemon.calls.tracker import Tracker
from tests.paths import REPO, TRACES

CONFIGS = REPO / "tests" / "tracker_configs"
LAB = config.load(CONFIGS / "lab.yaml").pbx
VOIPGRID = config.load(CONFIGS / "cacofonisk.yaml").pbx
LAB_SCENARIOS = sorted(p.parent for p in TRACES.glob("asterisk20/*/expected.yaml"))


def track(messages: list[AmiMessage], pbx: config.PbxConfig) -> list[CallSummary]:
    tracker = Tracker(pbx)
    out: list[CallSummary] = []
    for message in messages:
        out.extend(tracker.feed(message))
    out.extend(tracker.finish())
    return out


def test_every_shared_capture_is_covered() -> None:
    assert len(LAB_SCENARIOS) == 9
    assert len(list(TRACES.glob("cacofonisk/*/*.ami"))) == len(CACOFONISK) == 22


# ----------------------------------------------------------------- asterisk20


def lab_status(call: dict[str, Any]) -> CallStatus:
    if call["answered"]:
        return CallStatus.ANSWERED
    if call["direction"] == "inbound":
        return CallStatus.MISSED
    dial = call.get("dial_status", "")
    if dial == "BUSY":
        return CallStatus.BUSY
    if dial in ("NOANSWER", "CANCEL"):
        return CallStatus.NO_ANSWER
    return CallStatus.FAILED


def unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@pytest.mark.parametrize("scenario", LAB_SCENARIOS, ids=lambda p: p.name)
def test_asterisk20_capture_gives_the_calls_expected_yaml_states(scenario: Path) -> None:
    expected = yaml.safe_load((scenario / "expected.yaml").read_text())["calls"]
    got = track(list(read_capture(scenario / "ami.raw")), LAB)
    assert len(got) == len(expected)
    for call, want in zip(got, expected, strict=True):
        direction = Direction(want["direction"])
        assert call.pbx == "lab"
        assert call.direction is direction
        assert call.external_number == want["external_number_e164"]
        assert call.did == want.get("did_e164")
        assert call.trunk == ("trunk" if direction is not Direction.INTERNAL else None)
        assert call.status is lab_status(want)
        assert call.queue == want.get("queue")
        assert call.transfers == tuple(
            Transfer(TransferKind(t["kind"]), t["from_ext"], t["to_ext"])
            for t in want.get("transfers", [])
        )
        if direction is Direction.INBOUND:
            assert call.answered_by == want["answered_by"]
            assert call.caller_extension is None
            assert call.agents_rung == unique(want["agents_rung"])
        else:
            assert call.caller_extension == want["internal_extension"]
        if direction is Direction.INTERNAL:
            assert call.answered_by == want["answered_by"]
            assert call.agents_rung == (want["dialled_number"],)
        if direction is Direction.OUTBOUND:
            assert call.answered_by is None
            assert call.agents_rung == ()  # the click-to-dial ringing of 201 itself excluded
        assert call.final_agent == want["final_agent"]
        # Times: every lab capture has Timestamp headers.
        assert call.started_at is not None and call.ended_at is not None
        assert call.started_at <= call.ended_at
        assert call.talk_seconds is not None
        assert abs(call.talk_seconds - want["talk_seconds_approx"]) <= 1
        if call.status is CallStatus.ANSWERED:
            assert call.answered_at is not None
            assert call.started_at <= call.answered_at <= call.ended_at
        else:
            assert call.answered_at is None and call.talk_seconds == 0


def test_asterisk20_call_id_is_the_linkedid_of_the_first_channel() -> None:
    scenario = TRACES / "asterisk20" / "04_inbound_queue_201_blind_transfer_to_202"
    (call,) = track(list(read_capture(scenario / "ami.raw")), LAB)
    assert call.call_id == "1795797227.7"
    assert call.to_json_dict()["started_at"] == "2026-11-27T16:33:47.029+00:00"


# ----------------------------------------------------------------- cacofonisk


@dataclass(frozen=True)
class Want:
    """One row of cacofonisk/EXPECTED.md's table."""

    direction: Direction
    external: str | None
    did: str | None
    status: CallStatus
    answered_by: str | None
    caller: str | None
    rung: tuple[str, ...]
    transfers: tuple[Transfer, ...] = ()
    queue: str | None = None


IN, OUT, INT = Direction.INBOUND, Direction.OUTBOUND, Direction.INTERNAL
ANS, MISSED, BUSY, NOANS = (
    CallStatus.ANSWERED,
    CallStatus.MISSED,
    CallStatus.BUSY,
    CallStatus.NO_ANSWER,
)


def blind(a: str, b: str) -> Transfer:
    return Transfer(TransferKind.BLIND, a, b)


A1, A4 = "+31150010001", "+31150010004"
B1 = "+31260010001"
CACOFONISK: dict[str, list[Want]] = {
    "simple/a_created_no_answer": [Want(IN, A1, A4, MISSED, None, None, ())],
    "simple/ab_a_cancel": [Want(INT, None, None, NOANS, None, "201", ("202",))],
    "simple/ab_callgroup": [Want(INT, None, None, ANS, "202", "201", ("202", "203"))],
    "simple/ab_callgroup_no_answer": [Want(INT, None, None, BUSY, None, "201", ("202", "203"))],
    "simple/ab_dnd": [Want(INT, None, None, BUSY, None, "201", ())],
    "simple/ab_reject": [Want(INT, None, None, BUSY, None, "201", ("202",))],
    "simple/ab_success_a_hangup": [Want(INT, None, None, ANS, "202", "201", ("202",))],
    "simple/ab_success_b_hangup": [Want(INT, None, None, ANS, "202", "201", ("202",))],
    "simple/ab_success_o3": [Want(INT, None, None, ANS, "202", "201", ("202",))],
    "simple/ab_success_twoclients": [
        Want(OUT, A1, None, ANS, None, "201", ()),
        Want(IN, B1, A1, ANS, "201", None, ("201",)),
    ],
    "queue/queue_a_cancel": [Want(IN, A1, A4, MISSED, None, None, ("202",), (), "670100-540100")],
    "queue/queue_attn_xfer": [
        Want(
            IN,
            B1,
            A1,
            ANS,
            "201",
            None,
            ("201", "202"),
            (Transfer(TransferKind.ATTENDED, "201", "202"),),
        )
    ],
    "queue/queue_blind_xfer": [
        Want(IN, B1, A1, ANS, "201", None, ("201", "202"), (blind("201", "202"),))
    ],
    "queue/queue_group": [Want(IN, A1, A4, ANS, "202", None, ("203", "202"))],
    "queue/queue_simple": [Want(IN, A1, A4, ANS, "202", None, ("202",))],
    "xfer_blind/xfer_blind_a_no_answer": [
        Want(INT, None, None, ANS, "202", "201", ("202",), (blind("201", "203"),))
    ],
    "xfer_blind/xfer_blind_abacbc": [
        Want(INT, None, None, ANS, "202", "201", ("202", "203"), (blind("201", "203"),))
    ],
    "xfer_blind/xfer_blind_abbcac": [
        Want(INT, None, None, ANS, "202", "201", ("202", "203"), (blind("202", "203"),))
    ],
    "xfer_blind/xfer_blind_b_no_answer": [
        Want(INT, None, None, ANS, "202", "201", ("202",), (blind("202", "203"),))
    ],
    # EXPECTED.md lists 201, 202, 203; in the capture 203 reaches Ringing before
    # 202 (Newstate order), and the contract orders by first ring.
    "xfer_blind/xfer_blind_group": [
        Want(IN, B1, A1, ANS, "201", None, ("201", "203", "202"), (blind("201", "401"),))
    ],
    "xfer_blind/xfer_blind_group_no_answer": [
        Want(IN, B1, A1, ANS, "201", None, ("201",), (blind("201", "401"),))
    ],
    "xfer_blind/xfer_blind_reject": [
        Want(INT, None, None, ANS, "202", "201", ("202", "203"), (blind("202", "203"),))
    ],
}

#: Who talks with the caller side when each answered call ends.
FINAL_AGENT = {
    "simple/ab_callgroup": "202",
    "simple/ab_success_a_hangup": "202",
    "queue/queue_attn_xfer": "202",
    "queue/queue_blind_xfer": "202",
    "queue/queue_group": "202",
    "xfer_blind/xfer_blind_abacbc": "203",  # 201 handed 202 over to 203
    "xfer_blind/xfer_blind_abbcac": "203",  # 202 handed 201 over to 203
    "xfer_blind/xfer_blind_group": "203",
    "xfer_blind/xfer_blind_group_no_answer": "201",  # nobody took over from 201
}


@pytest.mark.parametrize("name", sorted(CACOFONISK))
def test_cacofonisk_capture_gives_the_outcome_expected_md_states(name: str) -> None:
    messages = list(read_capture(TRACES / "cacofonisk" / f"{name}.ami"))
    got = track(messages, VOIPGRID)
    wants = CACOFONISK[name]
    assert len(got) == len(wants)
    # Two-clients: the inbound leg ends first; compare in a stable order.
    got = sorted(got, key=lambda c: c.direction.value, reverse=True)
    wants = sorted(wants, key=lambda w: w.direction.value, reverse=True)
    for call, want in zip(got, wants, strict=True):
        assert call.pbx == "voipgrid"
        assert call.direction is want.direction
        assert call.external_number == want.external
        assert call.did == want.did
        assert call.status is want.status
        assert call.answered_by == want.answered_by
        assert call.caller_extension == want.caller
        assert call.agents_rung == want.rung
        assert call.transfers == want.transfers
        assert call.queue == want.queue
        expected_trunk = None if want.direction is INT else "voipgrid-siproute-docker"
        assert call.trunk == expected_trunk
        # No Timestamp headers in these captures: no times.
        assert (call.started_at, call.answered_at, call.ended_at) == (None, None, None)
        assert call.talk_seconds is None
        if want.direction is OUT:
            assert call.final_agent == want.caller
        elif want.status is not ANS:
            assert call.final_agent is None
        elif name in FINAL_AGENT:
            assert call.final_agent == FINAL_AGENT[name]


def test_cacofonisk_attended_transfer_folds_the_consultation_leg_into_the_call() -> None:
    """queue_attn_xfer has two Linkedids; the conversation is reported once, under
    the original call's Linkedid (the consultation leg's channels were re-stamped)."""
    messages = list(read_capture(TRACES / "cacofonisk" / "queue" / "queue_attn_xfer.ami"))
    linkedids = {m["Linkedid"] for m in messages if "Linkedid" in m}
    assert len(linkedids) == 2
    (call,) = track(messages, VOIPGRID)
    assert call.call_id == "f29ea68048f6-1530022819.2433"


def test_default_config_without_peer_map_still_never_invents_parties() -> None:
    """With the default pbx section nothing in cacofonisk matches a trunk: every call is
    internal between account codes, and Local helpers are never reported as parties."""
    messages = list(read_capture(TRACES / "cacofonisk" / "simple" / "ab_callgroup.ami"))
    (call,) = track(messages, config.PbxConfig())
    assert call.direction is INT
    assert call.caller_extension == "150010001"
    assert call.answered_by == "150010002"
    assert not any(a.startswith("Local") for a in call.agents_rung)
