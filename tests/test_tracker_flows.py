"""Call flows the shared captures do not show, written as the events Asterisk 20 sends.

Each test builds the AMI event sequence of one flow (the headers the tracker
reads, as in the real captures) and checks the summary the contract asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ami_daemon.calls.summary import CallStatus, CallSummary, Direction, Transfer, TransferKind
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import PbxConfig

PBX = PbxConfig(name="main", region="ES")
Event = dict[str, str]


@dataclass
class Chan:
    name: str
    uid: str
    linkedid: str
    exten: str = "s"
    cid: str = ""


@dataclass
class Script:
    """Writes an event sequence; one second between events unless told."""

    now: float = 1_800_000_000.0
    events: list[Event] = field(default_factory=list)
    counter: int = 0

    def chan(self, name: str, linkedid: str | None = None, exten: str = "s", cid: str = "") -> Chan:
        self.counter += 1
        uid = f"{int(self.now)}.{self.counter}"
        chan = Chan(f"{name}-{self.counter:08x}", uid, linkedid or uid, exten, cid)
        self.emit("Newchannel", chan, ChannelState="0")
        return chan

    def local(self, target: str, linkedid: str) -> tuple[Chan, Chan]:
        self.counter += 1
        base = f"Local/{target}-{self.counter:08x}"
        one = Chan(base + ";1", f"{int(self.now)}.{self.counter}a", linkedid)
        two = Chan(base + ";2", f"{int(self.now)}.{self.counter}b", linkedid)
        self.emit("Newchannel", one, ChannelState="0")
        self.emit("Newchannel", two, ChannelState="4")
        self.add(
            "LocalBridge",
            LocalOneChannel=one.name,
            LocalOneUniqueid=one.uid,
            LocalTwoChannel=two.name,
            LocalTwoUniqueid=two.uid,
        )
        return one, two

    def snapshot(self, chan: Chan, prefix: str = "") -> Event:
        return {
            f"{prefix}Channel": chan.name,
            f"{prefix}Uniqueid": chan.uid,
            f"{prefix}Linkedid": chan.linkedid,
            f"{prefix}Exten": chan.exten,
            f"{prefix}CallerIDNum": chan.cid,
        }

    def add(self, name: str, **headers: str) -> None:
        self.now += 1.0
        self.events.append({"Event": name, "Timestamp": f"{self.now:.6f}", **headers})

    def emit(self, name: str, chan: Chan, **headers: str) -> None:
        self.add(name, **self.snapshot(chan), **headers)

    def ring(self, chan: Chan) -> None:
        self.emit("Newstate", chan, ChannelState="5", ChannelStateDesc="Ringing")

    def up(self, chan: Chan) -> None:
        self.emit("Newstate", chan, ChannelState="6", ChannelStateDesc="Up")

    def dial(self, src: Chan | None, dest: Chan, dial_string: str = "") -> None:
        headers = self.snapshot(dest, "Dest")
        if src is not None:
            headers.update(self.snapshot(src))
        self.add("DialBegin", DialString=dial_string, **headers)

    def dial_end(self, src: Chan | None, dest: Chan, status: str) -> None:
        headers = self.snapshot(dest, "Dest")
        if src is not None:
            headers.update(self.snapshot(src))
        self.add("DialEnd", DialStatus=status, **headers)

    def bridge(
        self, bridge: str, *chans: Chan, technology: str = "simple_bridge", kind: str = "basic"
    ) -> None:
        for chan in chans:
            self.emit(
                "BridgeEnter", chan, BridgeUniqueid=bridge, BridgeTechnology=technology,
                BridgeType=kind,
            )  # fmt: skip

    def unbridge(self, bridge: str, *chans: Chan) -> None:
        for chan in chans:
            self.emit("BridgeLeave", chan, BridgeUniqueid=bridge)

    def hangup(self, *chans: Chan, cause: str = "16") -> None:
        for chan in chans:
            self.emit("Hangup", chan, Cause=cause)

    def answered_call(self, caller: Chan, callee: Chan, bridge: str) -> None:
        self.dial(caller, callee)
        self.ring(callee)
        self.up(callee)
        self.dial_end(caller, callee, "ANSWER")
        self.bridge(bridge, callee, caller)

    def run(self, pbx: PbxConfig = PBX) -> list[CallSummary]:
        tracker = Tracker(pbx)
        out = [s for e in self.events for s in tracker.feed(e)]
        return out + tracker.finish()


def test_attended_transfer_through_a_local_channel_resolves_the_phone() -> None:
    """Asterisk 20's attended transfer (AMI Atxfer / feature code) dials the target
    through ``Local/202@internal;1/;2``; ``AttendedTransfer`` names the Local half."""
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    agent = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, agent, "b1")
    one, two = s.local("202@internal", trunk.linkedid)
    s.unbridge("b1", agent)
    s.bridge("b2", agent, one)
    target = s.chan("SIP/202", trunk.linkedid)
    s.answered_call(two, target, "b3")
    s.add(
        "AttendedTransfer",
        Result="Success",
        DestType="Bridge",
        OrigTransfererChannel=agent.name,
        OrigTransfererUniqueid=agent.uid,
        SecondTransfererChannel=agent.name,
        SecondTransfererUniqueid=agent.uid,
        SecondTransfererExten="911234567",
        TransferTargetChannel=one.name,
        TransferTargetUniqueid=one.uid,
        TransfereeChannel=trunk.name,
        TransfereeUniqueid=trunk.uid,
    )
    s.unbridge("b2", one, agent)
    s.hangup(agent)
    s.bridge("b1", one)
    s.hangup(trunk, one, two, target)
    (call,) = s.run()
    assert call.direction is Direction.INBOUND
    assert call.status is CallStatus.ANSWERED
    assert call.answered_by == "201"
    assert call.final_agent == "202"
    assert call.agents_rung == ("201", "202")
    assert call.transfers == (Transfer(TransferKind.ATTENDED, "201", "202"),)


def test_attended_transfer_with_a_consultation_call_folds_it_in() -> None:
    """The transferer places a separate consultation call (its own Linkedid); after the
    transfer Asterisk re-stamps the target with the original Linkedid: one call."""
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    agent = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, agent, "b1")
    consult = s.chan("SIP/201", exten="203")
    target = s.chan("SIP/203", consult.linkedid, exten="203")
    s.answered_call(consult, target, "b2")
    s.add(
        "AttendedTransfer",
        Result="Success",
        DestType="Bridge",
        OrigTransfererChannel=agent.name,
        OrigTransfererUniqueid=agent.uid,
        SecondTransfererChannel=consult.name,
        SecondTransfererUniqueid=consult.uid,
        SecondTransfererExten="203",
        TransferTargetChannel=target.name,
        TransferTargetUniqueid=target.uid,
        TransfereeChannel=trunk.name,
        TransfereeUniqueid=trunk.uid,
    )
    s.unbridge("b2", target, consult)
    s.unbridge("b1", agent)
    s.hangup(agent, consult)
    target.linkedid = trunk.linkedid
    s.bridge("b1", target)
    s.hangup(target, trunk)
    (call,) = s.run()
    assert call.call_id == trunk.linkedid
    assert (call.answered_by, call.final_agent) == ("201", "203")
    assert call.agents_rung == ("201", "203")
    assert call.transfers == (Transfer(TransferKind.ATTENDED, "201", "203"),)


def test_unfinished_consultation_is_a_call_of_its_own() -> None:
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    agent = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, agent, "b1")
    consult = s.chan("SIP/201", exten="203")
    target = s.chan("SIP/203", consult.linkedid, exten="203")
    s.dial(consult, target)
    s.ring(target)
    s.dial_end(consult, target, "CANCEL")
    s.hangup(target, consult)
    s.hangup(trunk, agent)
    calls = s.run()
    assert [c.direction for c in calls] == [Direction.INTERNAL, Direction.INBOUND]
    assert calls[0].status is CallStatus.NO_ANSWER and calls[0].caller_extension == "201"
    assert calls[1].status is CallStatus.ANSWERED and calls[1].final_agent == "201"


def test_pickup_leg_folds_into_the_picked_call() -> None:
    """202 rings; 203 dials *8 (its own Linkedid) and picks it up (``Pickup``)."""
    s = Script()
    caller = s.chan("SIP/201", exten="202")
    ringing = s.chan("SIP/202", caller.linkedid, exten="202")
    s.dial(caller, ringing)
    s.ring(ringing)
    picker = s.chan("SIP/203", exten="*8")
    s.add(
        "Pickup",
        **s.snapshot(picker),
        TargetChannel=ringing.name,
        TargetUniqueid=ringing.uid,
        TargetLinkedid=ringing.linkedid,
    )
    s.dial_end(caller, ringing, "CANCEL")
    s.hangup(ringing, cause="0")
    picker.linkedid = caller.linkedid
    s.bridge("b1", picker, caller)
    s.hangup(picker, caller)
    (call,) = s.run()
    assert call.call_id == caller.linkedid
    assert call.direction is Direction.INTERNAL
    assert call.status is CallStatus.ANSWERED
    assert (call.answered_by, call.final_agent, call.caller_extension) == ("203", "203", "201")
    assert call.agents_rung == ("202",)


def test_withheld_and_anonymous_callers_have_no_external_number() -> None:
    for cid, pres in (
        ("anonymous", ""),
        ("600111222", "32 (Presentation Prohibited, Not Screened)"),
        ("6001112XX", ""),
    ):
        s = Script()
        trunk = s.chan("SIP/trunk", exten="911234567", cid=cid)
        if pres:
            s.emit("NewCallerid", trunk, **{"CID-CallingPres": pres})
        s.hangup(trunk, cause="0")
        (call,) = s.run()
        assert call.direction is Direction.INBOUND and call.status is CallStatus.MISSED
        assert call.external_number is None
        assert call.did == "+34911234567"


def test_originate_whose_first_leg_never_answers_is_no_call() -> None:
    s = Script()
    phone = s.chan("SIP/201")
    s.dial(None, phone, "SIP/201")
    s.ring(phone)
    s.dial_end(None, phone, "NOANSWER")
    s.hangup(phone, cause="19")
    assert s.run() == []


def test_click_to_dial_through_a_local_originate_is_the_employees_outbound_call() -> None:
    """Originate ``Local/201@ctd``: the Local rings the employee's phone first, then
    dials the customer; the employee placed the call and did not "ring"."""
    s = Script()
    one, two = s.local("201@ctd", "")
    one.linkedid = two.linkedid = one.uid
    s.dial(None, one, "Local/201@ctd")
    phone = s.chan("SIP/201", one.linkedid)
    s.answered_call(two, phone, "b1")
    s.dial_end(None, one, "ANSWER")
    s.up(one)
    two.exten = "0600111222"
    outside = s.chan("SIP/trunk", one.linkedid)
    s.answered_call(two, outside, "b2")
    s.unbridge("b1", phone, two)
    s.bridge("b2", phone)
    s.hangup(outside, phone, one, two)
    (call,) = s.run(PbxConfig(region="ES", outside_prefix="0"))
    assert call.direction is Direction.OUTBOUND
    assert call.caller_extension == "201" and call.final_agent == "201"
    assert call.external_number == "+34600111222"
    assert call.agents_rung == ()
    assert call.status is CallStatus.ANSWERED and call.answered_by is None


def test_call_me_now_between_two_outside_numbers_is_outbound_without_employee() -> None:
    s = Script()
    first = s.chan("SIP/trunk", cid="600111222")
    s.dial(None, first, "trunk/600111222")
    s.up(first)
    s.dial_end(None, first, "ANSWER")
    first.exten = "600333444"
    second = s.chan("SIP/trunk", first.linkedid)
    s.answered_call(first, second, "b1")
    s.hangup(second, first)
    (call,) = s.run()
    assert call.direction is Direction.OUTBOUND
    assert call.caller_extension is None and call.final_agent is None
    assert call.external_number == "+34600111222"
    assert call.status is CallStatus.ANSWERED and call.agents_rung == ()


def test_inbound_call_forwarded_to_an_outside_number_is_answered_by_nobody_of_ours() -> None:
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    trunk.exten = "0034699000201"
    mobile = s.chan("SIP/trunk", trunk.linkedid)
    s.answered_call(trunk, mobile, "b1")
    s.hangup(mobile, trunk)
    (call,) = s.run()
    assert call.direction is Direction.INBOUND
    assert call.status is CallStatus.ANSWERED
    assert (call.answered_by, call.final_agent) == (None, None)
    assert call.did == "+34911234567" and call.external_number == "+34600111222"


def test_parked_callers_side_by_side_in_a_holding_bridge_did_not_talk() -> None:
    s = Script()
    a = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    b = s.chan("SIP/trunk", exten="911234567", cid="600111333")
    s.bridge("parking-lot", a, b, technology="holding_bridge", kind="parking")
    s.hangup(a, b, cause="0")
    calls = s.run()
    assert [c.status for c in calls] == [CallStatus.MISSED, CallStatus.MISSED]
    assert len({c.call_id for c in calls}) == 2


def test_outbound_results_map_to_busy_no_answer_and_failed() -> None:
    for dial_status, want in (
        ("BUSY", CallStatus.BUSY),
        ("NOANSWER", CallStatus.NO_ANSWER),
        ("CANCEL", CallStatus.NO_ANSWER),
        ("CHANUNAVAIL", CallStatus.FAILED),
        ("CONGESTION", CallStatus.FAILED),
    ):
        s = Script()
        phone = s.chan("SIP/201", exten="600111222")
        outside = s.chan("SIP/trunk", phone.linkedid)
        s.dial(phone, outside, "trunk/600111222")
        s.dial_end(phone, outside, dial_status)
        s.hangup(outside, phone)
        (call,) = s.run()
        assert call.direction is Direction.OUTBOUND and call.status is want, dial_status
        assert call.external_number == "+34600111222" and call.talk_seconds == 0


def test_interleaved_calls_are_tracked_apart() -> None:
    s = Script()
    t1 = s.chan("SIP/trunk", exten="911234567", cid="600000001")
    t2 = s.chan("SIP/trunk", exten="911234500", cid="600000002")
    p1 = s.chan("SIP/201", t1.linkedid)
    p2 = s.chan("SIP/202", t2.linkedid)
    s.dial(t1, p1)
    s.dial(t2, p2)
    s.ring(p2)
    s.ring(p1)
    s.up(p2)
    s.bridge("b2", p2, t2)
    s.hangup(p1, cause="19")
    s.hangup(t1, cause="0")
    s.hangup(p2, t2)
    calls = s.run()
    assert [(c.external_number, c.status, c.answered_by) for c in calls] == [
        ("+34600000001", CallStatus.MISSED, None),
        ("+34600000002", CallStatus.ANSWERED, "202"),
    ]


def test_times_come_from_received_at_when_events_have_no_timestamp() -> None:
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    phone = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, phone, "b1")
    s.hangup(phone, trunk)
    tracker = Tracker(PBX)
    out: list[CallSummary] = []
    for i, event in enumerate(s.events):
        del event["Timestamp"]
        out.extend(tracker.feed(event, received_at=1_800_000_000.0 + 2 * i))
    (call,) = out
    assert call.started_at is not None and call.answered_at is not None
    assert call.talk_seconds == round((call.ended_at - call.answered_at).total_seconds())
    assert call.talk_seconds == 4  # bridged at event 7, last hangup at event 9


def test_reconnect_reconciliation_ends_calls_whose_channels_vanished() -> None:
    s = Script()
    t1 = s.chan("SIP/trunk", exten="911234567", cid="600000001")
    p1 = s.chan("SIP/201", t1.linkedid)
    s.answered_call(t1, p1, "b1")
    t2 = s.chan("SIP/trunk", exten="911234567", cid="600000002")
    tracker = Tracker(PBX)
    for event in s.events:
        assert tracker.feed(event) == []
    assert tracker.open_calls() == 2
    assert tracker.live_uniqueids() == {t1.uid, p1.uid, t2.uid}
    (gone,) = tracker.end_missing({t2.uid})
    assert gone.call_id == t1.linkedid
    assert gone.status is CallStatus.INTERRUPTED and gone.answered_by == "201"
    assert tracker.open_calls() == 1 and tracker.live_uniqueids() == {t2.uid}
    (left,) = tracker.finish()
    assert left.call_id == t2.linkedid and left.status is CallStatus.INTERRUPTED


def test_blind_transfer_to_an_outside_number_leaves_no_employee_at_the_end() -> None:
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    agent = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, agent, "b1")
    s.add("BlindTransfer", Result="Success", Extension="0034699000201", Context="internal",
          TransfererChannel=agent.name, TransfererUniqueid=agent.uid,
          TransfereeChannel=trunk.name, TransfereeUniqueid=trunk.uid)  # fmt: skip
    s.unbridge("b1", trunk, agent)
    s.hangup(agent)
    trunk.exten = "0034699000201"
    mobile = s.chan("SIP/trunk", trunk.linkedid)
    s.answered_call(trunk, mobile, "b2")
    s.hangup(mobile, trunk)
    (call,) = s.run()
    assert call.status is CallStatus.ANSWERED and call.answered_by == "201"
    assert call.final_agent is None
    assert call.transfers == (Transfer(TransferKind.BLIND, "201", "0034699000201"),)
    assert call.agents_rung == ("201",)


def test_outbound_number_is_what_the_phone_dialled_with_the_outside_prefix_removed() -> None:
    s = Script()
    phone = s.chan("SIP/201", exten="90034600111222")
    outside = s.chan("SIP/trunk", phone.linkedid)
    phone.exten = "90034600111222"
    s.answered_call(phone, outside, "b1")
    s.hangup(outside, phone)
    (call,) = s.run(PbxConfig(region="ES", outside_prefix="9"))
    assert call.external_number == "+34600111222"
    assert call.status is CallStatus.ANSWERED and call.talk_seconds == 2


def test_callers_in_a_conference_room_stay_separate_calls_answered_by_the_employee() -> None:
    """ConfBridge rooms are plain ("base") bridges: Asterisk does not merge the
    Linkedids of their members, and neither does the tracker."""
    s = Script()
    t1 = s.chan("SIP/trunk", exten="911234567", cid="600000001")
    t2 = s.chan("SIP/trunk", exten="911234567", cid="600000002")
    host = s.chan("SIP/201", exten="800")
    s.up(t1)
    s.up(t2)
    s.up(host)
    s.bridge("room", host, t1, t2, technology="softmix", kind="base")
    s.hangup(t1, t2, host)
    calls = s.run()
    assert len(calls) == 3
    inbound = [c for c in calls if c.direction is Direction.INBOUND]
    assert [(c.external_number, c.status, c.answered_by) for c in inbound] == [
        ("+34600000001", CallStatus.ANSWERED, "201"),
        ("+34600000002", CallStatus.ANSWERED, "201"),
    ]


def test_a_phone_that_dials_nobody_held_no_conversation() -> None:
    """Checking voicemail (``*97``): the phone talks to an application, nobody else."""
    s = Script()
    phone = s.chan("SIP/201", exten="*97")
    s.up(phone)
    s.hangup(phone)
    assert s.run() == []
    s = Script()  # but dialling an extension that is unreachable is a (failed) call
    phone = s.chan("SIP/201", exten="209")
    callee = s.chan("SIP/209", phone.linkedid)
    s.dial(phone, callee, "SIP/209")
    s.dial_end(phone, callee, "CHANUNAVAIL")
    s.hangup(callee, phone)
    (call,) = s.run()
    assert call.status is CallStatus.FAILED and call.direction is Direction.INTERNAL


def test_a_masquerade_renames_the_channel_to_the_device_now_behind_it() -> None:
    """Older pickups masquerade the picker into the ringing channel: ``Rename`` gives
    that Uniqueid the picker's device name, so the answer is the picker's."""
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    ringing = s.chan("SIP/202", trunk.linkedid)
    s.dial(trunk, ringing)
    s.ring(ringing)
    s.add("Rename", Channel=ringing.name, Newname="SIP/203-0000abcd", Uniqueid=ringing.uid)
    s.add("Rename", Channel="SIP/203-0000abcd", Newname="SIP/203-0000abcd<ZOMBIE>",
          Uniqueid="unrelated.1")  # fmt: skip
    ringing.name = "SIP/203-0000abcd"
    s.up(ringing)
    s.bridge("b1", ringing, trunk)
    s.hangup(ringing, trunk)
    (call,) = s.run()
    assert call.agents_rung == ("202",)
    assert (call.answered_by, call.final_agent) == ("203", "203")


def test_a_dial_result_reported_after_the_target_hung_up_still_counts() -> None:
    s = Script()
    phone = s.chan("SIP/201", exten="202")
    callee = s.chan("SIP/202", phone.linkedid, exten="202")
    s.dial(phone, callee, "SIP/202")
    s.ring(callee)
    s.hangup(callee, cause="17")
    s.dial_end(phone, callee, "BUSY")
    s.hangup(phone, cause="16")
    (call,) = s.run()
    assert call.status is CallStatus.BUSY and call.agents_rung == ("202",)


def test_blonde_transfer_hands_the_ringing_target_to_the_transferee() -> None:
    """A "blonde" transfer: the transferer completes it while the consultation
    target still rings (cacofonisk ``xfer_blonde``).  Asterisk reports
    ``AttendedTransfer`` with ``DestType: App`` (``DestApp: Dial``) and no
    ``TransferTarget*`` headers, ends the transferer's own dial (NOANSWER) and
    continues the ``Dial`` from the transferee: a ``DialBegin`` whose
    ``Channel`` is the caller and whose ``Dest`` still carries the consultation's
    Linkedid.  The target answers after the transfer; one conversation."""
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    agent = s.chan("SIP/201", trunk.linkedid)
    s.answered_call(trunk, agent, "b1")
    consult = s.chan("SIP/201", exten="202")
    one, two = s.local("ID730151@route_phone", consult.linkedid)
    s.dial(consult, one)
    target = s.chan("SIP/202", consult.linkedid)
    s.dial(two, target)
    s.ring(target)
    s.add(
        "AttendedTransfer",
        Result="Success",
        DestType="App",
        DestApp="Dial",
        OrigTransfererChannel=agent.name,
        OrigTransfererUniqueid=agent.uid,
        SecondTransfererChannel=consult.name,
        SecondTransfererUniqueid=consult.uid,
        SecondTransfererExten="202",
        TransfereeChannel=trunk.name,
        TransfereeUniqueid=trunk.uid,
    )
    s.unbridge("b1", agent, trunk)
    s.hangup(agent)
    s.dial_end(consult, one, "NOANSWER")
    s.dial(trunk, one)
    s.hangup(consult)
    s.up(target)
    s.dial_end(two, target, "ANSWER")
    s.dial_end(trunk, one, "ANSWER")
    s.bridge("b2", target, two)
    s.bridge("b3", one, trunk)
    target.linkedid = trunk.linkedid
    s.hangup(target, two, one, trunk)
    (call,) = s.run()
    assert call.call_id == trunk.linkedid
    assert call.direction is Direction.INBOUND and call.status is CallStatus.ANSWERED
    assert (call.answered_by, call.final_agent) == ("201", "202")
    assert call.agents_rung == ("201", "202")
    assert call.transfers == (Transfer(TransferKind.ATTENDED, "201", "202"),)


def test_pickup_by_sip_replaces_continues_the_dial_to_the_picker() -> None:
    """A phone picks up a ringing colleague with SIP ``INVITE``/``Replaces``
    (cacofonisk ``xfer_misc/sip_pickup``): no ``Pickup`` event.  The picker's
    channel is created Up with its own Linkedid, then the ringing ``Dial``
    names it in a ``DialBegin`` (its ``Dest`` Linkedid still its own), the rung
    phone hangs up with cause 0 and the picker is bridged with the caller.  It
    answered without ringing: 202 rang, 203 answered."""
    s = Script()
    caller = s.chan("SIP/201", exten="202")
    one, two = s.local("ID730151@route_phone", caller.linkedid)
    s.dial(caller, one)
    ringing = s.chan("SIP/202", caller.linkedid)
    s.dial(two, ringing)
    s.ring(ringing)
    picker = s.chan("SIP/203", exten="202")
    s.up(picker)
    s.dial(two, picker)
    s.hangup(ringing, cause="0")
    s.dial_end(two, picker, "ANSWER")
    s.dial_end(caller, one, "ANSWER")
    s.bridge("b1", picker, two)
    s.bridge("b2", one, caller)
    picker.linkedid = caller.linkedid
    s.hangup(picker, two, one, caller)
    (call,) = s.run()
    assert call.call_id == caller.linkedid
    assert call.direction is Direction.INTERNAL and call.status is CallStatus.ANSWERED
    assert (call.caller_extension, call.answered_by, call.final_agent) == ("201", "203", "203")
    assert call.agents_rung == ("202",)


def test_forward_to_a_mobile_that_answers_but_never_accepts_is_missed() -> None:
    """Call acceptance on a forward to an outside number (cacofonisk
    ``mobile/acceptance_reject``): the mobile's trunk leg answers and is bridged
    with the ``world_out`` Local half that plays the "press 1" prompt, while the
    caller is never bridged with anything (the forward's ``Dial`` ends
    ``CONTINUE`` then ``NOANSWER``).  An Up, bridged outside leg is not an answer:
    nobody talked with the caller."""
    s = Script()
    trunk = s.chan("SIP/trunk", exten="911234567", cid="600111222")
    fwd_one, fwd_two = s.local("ID3@fixed_destination", trunk.linkedid)
    s.dial(trunk, fwd_one)
    out_one, out_two = s.local("+34699000201@world_out", trunk.linkedid)
    s.dial(fwd_two, out_one)
    mobile = s.chan("SIP/trunk", trunk.linkedid)
    s.answered_call(out_two, mobile, "prompt")
    s.unbridge("prompt", mobile, out_two)
    s.hangup(mobile, out_two)
    s.dial_end(fwd_two, out_one, "CONTINUE")
    s.hangup(out_one, fwd_two)
    s.dial_end(trunk, fwd_one, "NOANSWER")
    s.hangup(fwd_one, trunk)
    (call,) = s.run()
    assert call.direction is Direction.INBOUND and call.status is CallStatus.MISSED
    assert (call.answered_by, call.final_agent, call.answered_at) == (None, None, None)
    assert call.external_number == "+34600111222" and call.agents_rung == ()
