"""The call tracker: AMI events in, one :class:`CallSummary` per finished conversation out.

Pure: no I/O, no clock, no asyncio.  The daemon's single consumer task (DESIGN
"Flow inside the daemon") and ``ami-daemon calls`` feed it events in arrival
order; :meth:`Tracker.feed` returns the calls that ended with that event.

How Asterisk's events become calls (Asterisk 12+ AMI, as in every shared capture):

* **Channels and calls.**  Every channel event carries a snapshot: ``Channel``,
  ``Uniqueid``, ``Linkedid``.  ``Linkedid`` is the Uniqueid of the call's first
  channel and is inherited by every channel created on its behalf (queue member
  calls, Dial targets, Local pairs), so channels are grouped by the Linkedid
  they were created with.  When channels of two calls end up bridged — the
  consultation leg of an attended transfer, a pickup — Asterisk re-stamps them
  with the oldest Linkedid; the tracker sees the new Linkedid on their next
  event (or sees the bridge, ``AttendedTransfer`` or ``Pickup`` first) and
  folds the newer call into the older (cacofonisk ``queue/queue_attn_xfer``).
* **Parties and helpers.**  Trunk and phone channels are parties (``channels.py``);
  ``Local/…;1``/``;2`` halves are helpers joined by ``LocalBridge`` or their
  common name, followed but never reported.
* **Answered** means the caller side was *bridged* with another party, through
  any chain of bridges and Local pairs (cacofonisk ``simple/ab_callgroup``:
  201 ↔ ``Local;1`` … ``Local;2`` ↔ 202), never that a channel went Up: a queue
  or IVR answers the trunk channel long before any phone does (cacofonisk
  ``queue/queue_a_cancel``, ``simple/a_created_no_answer``; asterisk20
  ``03_inbound_support_queue_no_answer_caller_gives_up``).  Holding bridges
  (parking lots, where strangers wait side by side) are not conversations.
* **Rung** means a phone reached ``Ringing`` (``Newstate`` ChannelState 5), or
  went Up after being dialled without ringing; a phone answering ``DialEnd
  BUSY`` at once (do-not-disturb, cacofonisk ``simple/ab_dnd``) never rang.
* **The end** of a conversation is the ``Hangup`` of its last channel; the one
  ``Hangup`` per channel comes after any ``HangupRequest``/``SoftHangupRequest``
  and may follow the ``Cdr`` event, which carries no Linkedid and is ignored.

Every other event (``VarSet``, ``Newexten``, ``DeviceStateChange``, ``Cdr``,
``AGIExec*``, responses…) costs one dictionary lookup.  A malformed event is
logged with its byte offset (``event.offset`` when the reader made it) and
skipped; nothing an event contains makes :meth:`Tracker.feed` raise.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from ami_daemon.calls.channels import (
    Classifier,
    Kind,
    is_masquerade_name,
    local_exten,
    local_pair_key,
)
from ami_daemon.calls.state import Call, Chan
from ami_daemon.calls.summarize import summarize
from ami_daemon.calls.summary import CallSummary, Transfer, TransferKind
from ami_daemon.config import PbxConfig

log = logging.getLogger(__name__)

Event = Mapping[str, str]
_Handler = Callable[[Event, "float | None"], "list[CallSummary] | None"]

#: How many hung-up Uniqueids and reported Linkedids to remember, so that a
#: straggling event about them (a late ``DialEnd``, a repeated ``Hangup``)
#: does not start a phantom call.
_MEMORY: Final = 65536
_DIALLED: Final = re.compile(r"\+?[0-9*#]+")
_RINGING: Final = "5"
_UP: Final = "6"


class Tracker:
    """Follows every channel of one PBX and reports each conversation when it ends."""

    def __init__(self, pbx: PbxConfig) -> None:
        self._pbx = pbx
        self._classifier = Classifier(pbx)
        self._chans: dict[str, Chan] = {}
        self._calls: dict[str, Call] = {}  # every Linkedid (aliases included) → its call
        self._open: dict[Call, None] = {}  # open calls in creation order
        self._bridges: dict[str, list[Chan]] = {}
        self._local_halves: dict[str, Chan] = {}  # Local pair name → the half seen first
        self._dead_chans: dict[str, None] = {}
        self._dead_calls: dict[str, None] = {}
        self._seq = 0
        self._handlers: dict[str, _Handler] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BridgeDestroy": self._on_bridge_destroy,
            "Hangup": self._on_hangup,
            "LocalBridge": self._on_local_bridge,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "Pickup": self._on_pickup,
            "Rename": self._on_rename,
        }
        for name in _QUEUE_EVENTS:
            self._handlers[name] = self._on_queue_event

    # ------------------------------------------------------------------ public

    def handled_events(self) -> frozenset[str]:
        """The event names the tracker reads; the AMI subscription needs no others."""
        return frozenset(self._handlers)

    def feed(self, event: Event, received_at: float | None = None) -> list[CallSummary]:
        """Take one event; return the calls it ended (usually none).

        Times come from the event's ``Timestamp`` header (manager.conf
        ``timestampevents = yes``), else ``received_at`` (the daemon's clock),
        else stay unknown.
        """
        handler = self._handlers.get(event.get("Event", ""))
        if handler is None:
            return []  # a fresh list: callers may extend what they get
        self._seq += 1
        stamp = event.get("Timestamp")
        at = received_at
        if stamp:
            try:
                at = float(stamp)
            except ValueError:
                self._malformed(event, f"Timestamp {stamp[:40]!r} is not a number")
        try:
            return handler(event, at) or []
        except Exception:  # never let one odd event stop the tracking of every call
            log.exception(
                "tracker: %s event at %s could not be handled; skipped",
                event.get("Event"),
                _where(event),
            )
            return []

    def finish(self) -> list[CallSummary]:
        """End of input: every call still open is reported as ``interrupted``."""
        out = []
        for call in list(self._open):
            summary = self._close(call, interrupted=True)
            if summary is not None:
                out.append(summary)
        self._chans.clear()
        self._bridges.clear()
        self._local_halves.clear()
        return out

    def open_calls(self) -> int:
        """How many conversations are in progress."""
        return len(self._open)

    def live_uniqueids(self) -> set[str]:
        """Uniqueids of every channel believed alive (to compare with ``CoreShowChannels``)."""
        return set(self._chans)

    def end_missing(self, alive: Iterable[str]) -> list[CallSummary]:
        """Reconcile after an AMI reconnect: channels not in ``alive`` died unseen.

        A call left without any live channel is reported ``interrupted``: its
        end happened while we were not listening.
        """
        alive = set(alive)
        out = []
        for uid in [u for u in self._chans if u not in alive]:
            chan = self._chans.pop(uid)
            self._forget_channel(chan)
            call = chan.call
            call.live.discard(uid)
            if not call.live and call in self._open:
                summary = self._close(call, interrupted=True)
                if summary is not None:
                    out.append(summary)
        return out

    # ---------------------------------------------------------------- channels

    def _channel(
        self, event: Event, at: float | None, prefix: str = "", create: bool = True
    ) -> Chan | None:
        """The channel an event's snapshot (``Uniqueid`` or ``DestUniqueid``…) names.

        A channel never seen is created from the snapshot: that is how a
        tracker started in the middle of calls picks them up.  A changed
        ``Linkedid`` is Asterisk telling us two calls became one.
        """
        uid = event.get(prefix + "Uniqueid")
        if not uid:
            self._malformed(event, f"no {prefix}Uniqueid")
            return None
        chan = self._chans.get(uid)
        linkedid = event.get(prefix + "Linkedid")
        if chan is not None:
            if linkedid and self._calls.get(linkedid) is not chan.call:
                self._relink(chan, linkedid)
            return chan
        if not create or uid in self._dead_chans:
            return None
        name = event.get(prefix + "Channel")
        if not name:
            self._malformed(event, f"no {prefix}Channel for {uid}")
            return None
        linkedid = linkedid or uid
        if linkedid in self._dead_calls:
            return None
        call = self._calls.get(linkedid)
        if call is None:
            call = Call(linkedid, self._seq)
            self._calls[linkedid] = call
            self._open[call] = None
            call.partial = event.get("Event") != "Newchannel" or prefix != ""
        kind, label = self._classifier.classify(name)
        chan = Chan(uid, name, kind, label, call)
        self._chans[uid] = chan
        call.channels.append(chan)
        call.live.add(uid)
        chan.created_at = at
        if at is not None and (call.started_at is None or at < call.started_at):
            call.started_at = at
        self._note_ids(chan, event, prefix)
        if kind is not Kind.HELPER and (call.origin is None or uid == call.linkedid):
            if call.anchor is None or call.anchor is call.origin:
                call.anchor = chan
            call.origin = chan
        pair = local_pair_key(name)
        if pair is not None:
            other = self._local_halves.pop(pair[0], None)
            if other is not None and other is not chan:
                chan.partner, other.partner = other, chan
            else:
                self._local_halves[pair[0]] = chan
        state = event.get(prefix + "ChannelState")
        if state == _RINGING:
            self._rang(chan)
        elif state == _UP:
            chan.up = True
        return chan

    def _note_ids(self, chan: Chan, event: Event, prefix: str) -> None:
        """Remember the first caller ID and the first real extension (the DID on a trunk)."""
        if chan.cid is None:
            cid = event.get(prefix + "CallerIDNum")
            if cid and cid != "<unknown>":
                chan.cid = cid
        if chan.exten is None:
            exten = event.get(prefix + "Exten")
            if exten and exten != "s":
                chan.exten = exten

    def _relink(self, chan: Chan, linkedid: str) -> None:
        other = self._calls.get(linkedid)
        if other is None:
            if linkedid in self._dead_calls:
                return
            # A Linkedid we never saw created (mid-call start): an alias of this call.
            self._calls[linkedid] = chan.call
            chan.call.ids.append(linkedid)
        else:
            # Asterisk re-stamped the channel with the older call's Linkedid.
            self._merge(other, chan.call)

    def _merge(self, keep: Call, gone: Call) -> None:
        """Fold ``gone`` into ``keep``: one conversation from now on."""
        if keep is gone:
            return
        for chan in gone.channels:
            chan.call = keep
        keep.channels.extend(gone.channels)
        keep.live |= gone.live
        keep.rung.extend(gone.rung)
        keep.transfers.extend(gone.transfers)
        keep.leaf_status.extend(gone.leaf_status)
        keep.helper_status.extend(gone.helper_status)
        if keep.queue is None:
            keep.queue = gone.queue
        if gone.started_at is not None and (
            keep.started_at is None or gone.started_at < keep.started_at
        ):
            keep.started_at = gone.started_at
        if keep.origin is None:
            keep.origin, keep.anchor = gone.origin, gone.anchor
            keep.answered, keep.answered_at = gone.answered, gone.answered_at
            keep.answered_by, keep.last_agent = gone.answered_by, gone.last_agent
        for linkedid in gone.ids:
            self._calls[linkedid] = keep
        keep.ids.extend(gone.ids)
        self._open.pop(gone, None)

    def _rang(self, chan: Chan) -> None:
        if not chan.rang and chan.kind is Kind.PHONE and chan.label is not None:
            chan.rang = True
            chan.call.rung.append((self._seq, chan.label))

    def _forget_channel(self, chan: Chan) -> None:
        if chan.bridge is not None:
            self._leave_bridge(chan)
        pair = local_pair_key(chan.name)
        if pair is not None and self._local_halves.get(pair[0]) is chan:
            del self._local_halves[pair[0]]
        self._dead_chans[chan.uid] = None
        if len(self._dead_chans) > _MEMORY:
            del self._dead_chans[next(iter(self._dead_chans))]

    def _leave_bridge(self, chan: Chan) -> None:
        members = self._bridges.get(chan.bridge or "")
        if members is not None:
            with contextlib.suppress(ValueError):
                members.remove(chan)
            if not members:
                del self._bridges[chan.bridge or ""]
        chan.bridge = None

    def _close(self, call: Call, interrupted: bool) -> CallSummary | None:
        self._open.pop(call, None)
        for linkedid in call.ids:
            if self._calls.get(linkedid) is call:
                del self._calls[linkedid]
            self._dead_calls[linkedid] = None
        while len(self._dead_calls) > _MEMORY:
            del self._dead_calls[next(iter(self._dead_calls))]
        if interrupted:
            for uid in call.live:
                chan = self._chans.pop(uid, None)
                if chan is not None:
                    self._forget_channel(chan)
        return summarize(call, self._pbx, interrupted)

    # ------------------------------------------------------------------ events

    def _on_newchannel(self, event: Event, at: float | None) -> None:
        """A channel is born: in the call of its Linkedid (asterisk20 ``01_…``: the
        queue member ``SIP/201-00000001`` is created with the trunk's Linkedid)."""
        self._channel(event, at)

    def _on_newstate(self, event: Event, at: float | None) -> None:
        """``Ringing`` (5) on a phone means it rang; ``Up`` (6) is remembered but is
        not "answered" (a queue answers the trunk, asterisk20 ``01_…``)."""
        chan = self._channel(event, at)
        if chan is None:
            return
        if chan.exten is None:
            self._note_ids(chan, event, "")  # a trunk that arrived at ``s`` may move to its DID
        state = event.get("ChannelState")
        if state == _RINGING:
            self._rang(chan)
        elif state == _UP:
            chan.up = True
            if chan.dialled_in and chan.call.origin is not chan:
                self._rang(chan)  # answered without ringing first (auto-answer)

    def _on_newcallerid(self, event: Event, at: float | None) -> None:
        """A caller ID set late, or withheld: ``CID-CallingPres`` "Prohibited" means
        the caller hid the number, which then is no external number at all."""
        chan = self._channel(event, at)
        if chan is None:
            return
        self._note_ids(chan, event, "")
        if "Prohibited" in event.get("CID-CallingPres", "") and chan.kind is Kind.TRUNK:
            chan.withheld = True

    def _on_dial_begin(self, event: Event, at: float | None) -> None:
        """``Channel`` dials ``DestChannel``.  Without ``Channel`` it is an AMI
        Originate ringing its first leg (asterisk20 ``06_…``, ``08_…``): the
        employee's own phone in a click-to-dial, not a callee."""
        dest = self._channel(event, at, "Dest")
        if dest is None:
            return
        dest.dialled_in = True
        if dest.dial_string is None:
            dest.dial_string = event.get("DialString")
        if event.get("Uniqueid"):
            src = self._channel(event, at)
            if src is not None:
                if src.call is not dest.call:
                    self._merge_pair(src.call, dest.call)
                if dest.dialer is None:
                    dest.dialer = src
                    dest.dial_exten = event.get("Exten")
                src.dialled.append(dest)
        if event.get("DestChannelState") == _RINGING:
            self._rang(dest)

    def _on_dial_end(self, event: Event, at: float | None) -> None:
        """The result of one dial attempt.  A ``Forward`` header means the phone
        redirected the call (a 302), not a result; repeats are harmless (asterisk20
        ``03_…`` ends one attempt with NOANSWER then CANCEL)."""
        status = event.get("DialStatus")
        if not status or event.get("Forward"):
            return
        dest = self._chans.get(event.get("DestUniqueid", ""))
        if dest is not None:
            if dest.kind is Kind.HELPER:
                dest.call.helper_status.append(status)
            elif dest.dialer is not None or not dest.dialled_in:  # not an originate's leg
                dest.call.leaf_status.append(status)
            return
        # The target already hung up (its Hangup may come first): the dialler's call.
        src = self._chans.get(event.get("Uniqueid", ""))
        if src is not None:
            kind, _label = self._classifier.classify(event.get("DestChannel", ""))
            statuses = src.call.helper_status if kind is Kind.HELPER else src.call.leaf_status
            statuses.append(status)

    def _on_bridge_enter(self, event: Event, at: float | None) -> None:
        """A channel joins a bridge: if that connects the caller side with another
        party (directly or through Local pairs), the call is answered by it."""
        chan = self._channel(event, at)
        bridge = event.get("BridgeUniqueid")
        if chan is None or not bridge:
            return
        chan.up = True
        if chan.bridge is not None and chan.bridge != bridge:
            self._leave_bridge(chan)
        if event.get("BridgeTechnology") == "holding_bridge":
            return  # parked or on hold among strangers: nobody talks
        members = self._bridges.setdefault(bridge, [])
        if chan not in members:
            members.append(chan)
        chan.bridge = bridge
        # Only basic (Dial, Queue, transfer) and Stasis mixing bridges make their
        # channels one call (Asterisk's ast_bridge_channel_update_linkedids); a
        # ConfBridge room joins separate calls that merely hear each other.
        self._connect(chan, at, merge=event.get("BridgeType", "basic") in _MERGING_BRIDGES)

    def _on_bridge_leave(self, event: Event, at: float | None) -> None:
        """A channel leaves a bridge: a transfer moving it, a Local pair optimising
        itself away (cacofonisk ``simple/ab_callgroup``: 201 leaves the bridge with
        the Local half and enters 202's), or the call ending."""
        chan = self._known(event) or self._late_channel(event, at)
        if chan is not None and chan.bridge == event.get("BridgeUniqueid"):
            self._leave_bridge(chan)

    def _known(self, event: Event) -> Chan | None:
        """The live channel an event names, noticing a re-stamped Linkedid even on the
        channel's last events (re-stamped, then hung up at once)."""
        chan = self._chans.get(event.get("Uniqueid", ""))
        if chan is not None:
            linkedid = event.get("Linkedid")
            if linkedid and self._calls.get(linkedid) is not chan.call:
                self._relink(chan, linkedid)
        return chan

    def _late_channel(self, event: Event, at: float | None) -> Chan | None:
        """A channel first seen leaving: only worth creating for a call whose start we
        missed (connected mid-call), where its last snapshot (Up: it had been answered)
        is all we will learn of it and it keeps the call open until it hangs up."""
        known = self._calls.get(event.get("Linkedid", ""))
        if known is None or not known.partial:
            return None
        return self._channel(event, at)

    def _on_bridge_destroy(self, event: Event, at: float | None) -> None:
        """The bridge is gone (after its last BridgeLeave, asterisk20 ``01_…``)."""
        members = self._bridges.pop(event.get("BridgeUniqueid", ""), None)
        for chan in members or ():
            chan.bridge = None

    def _on_hangup(self, event: Event, at: float | None) -> list[CallSummary] | None:
        """A channel is gone; the last one of a call ends the call (asterisk20 ``01_…``:
        the agent's then the trunk's ``Hangup``; earlier ``HangupRequest`` and ``Cdr``
        events are not the end).  The origin's cause is kept for calls that dialled
        nobody (17 user busy)."""
        uid = event.get("Uniqueid")
        if not uid:
            self._malformed(event, "no Uniqueid")
            return None
        chan = self._known(event) or self._late_channel(event, at)
        if chan is None:
            return None
        del self._chans[uid]
        call = chan.call
        if event.get("ChannelState") == _UP:
            chan.up = True
        if chan is call.origin:
            call.origin_cause = event.get("Cause")
        self._forget_channel(chan)
        call.live.discard(uid)
        if at is not None and (call.ended_at is None or at > call.ended_at):
            call.ended_at = at
        if call.live:
            return None
        summary = self._close(call, interrupted=False)
        return [summary] if summary is not None else None

    def _on_local_bridge(self, event: Event, at: float | None) -> None:
        """``LocalBridge`` names both halves of a Local pair explicitly."""
        one = self._chans.get(event.get("LocalOneUniqueid", ""))
        two = self._chans.get(event.get("LocalTwoUniqueid", ""))
        if one is not None and two is not None:
            one.partner, two.partner = two, one
            if one.call is not two.call:
                self._merge_pair(one.call, two.call)

    def _on_queue_event(self, event: Event, at: float | None) -> None:
        """``Queue*``/``Agent*`` events name the queue (asterisk20 ``01_…``:
        ``QueueCallerJoin`` Queue ``sales``); the channel is the queue's caller."""
        queue = event.get("Queue")
        if not queue:
            return
        chan = self._channel(event, at)
        if chan is not None and chan.call.queue is None:
            chan.call.queue = queue

    def _on_blind_transfer(self, event: Event, at: float | None) -> None:
        """``BlindTransfer`` (asterisk20 ``04_…``): the transferer is released and the
        transferee runs ``Extension@Context``, which dials the target anew on the
        same Linkedid.  Listed when ``Result: Success`` even if the target never
        answers (cacofonisk ``xfer_blind/xfer_blind_b_no_answer``).  If the
        caller side transferred (cacofonisk ``xfer_blind/xfer_blind_abacbc``),
        the transferee becomes the caller side."""
        if event.get("Result") != "Success":
            return
        transferer = self._chans.get(event.get("TransfererUniqueid", ""))
        transferee = self._chans.get(event.get("TransfereeUniqueid", ""))
        anchor_chan = transferer or transferee
        if anchor_chan is None:
            if not (event.get("TransfererUniqueid") or event.get("TransfereeUniqueid")):
                self._malformed(event, "no TransfererUniqueid nor TransfereeUniqueid")
            else:  # channels we never saw: started mid-call
                log.debug("tracker: BlindTransfer at %s names no known channel", _where(event))
            return
        if (
            transferer is not None
            and transferee is not None
            and transferer.call is not transferee.call
        ):
            self._merge_pair(transferer.call, transferee.call)
        call = anchor_chan.call
        source = self._resolve(transferer) if transferer is not None else None
        to = event.get("Extension") or None
        call.transfers.append((self._seq, Transfer(TransferKind.BLIND, _label(source), to)))
        self._hand_over(call, source, transferee, at, connected=None)

    def _on_attended_transfer(self, event: Event, at: float | None) -> None:
        """``AttendedTransfer``: the transferer's two calls become one (cacofonisk
        ``queue/queue_attn_xfer``).  ``to`` is what the transferer dialled for the
        consultation (``SecondTransfererExten``), else the target phone, reached
        through ``LocalBridge`` and the ``;2`` half's ``DialBegin`` when Asterisk
        names the Local channel of the consultation instead of the phone."""
        if event.get("Result") != "Success":
            return
        get = self._chans.get
        orig = get(event.get("OrigTransfererUniqueid", ""))
        second = get(event.get("SecondTransfererUniqueid", ""))
        transferee = get(event.get("TransfereeUniqueid", ""))
        target = get(event.get("TransferTargetUniqueid", ""))
        known = [c for c in (transferee, orig, second, target) if c is not None]
        if not known:
            if not any(event.get(k) for k in _ATTENDED_IDS):
                self._malformed(event, "no transferer, transferee or target Uniqueid")
            else:
                log.debug("tracker: AttendedTransfer at %s names no known channel", _where(event))
            return
        calls = sorted({id(c.call): c.call for c in known}.values(), key=lambda c: c.seq)
        for other in calls[1:]:
            self._merge(calls[0], other)
        call = calls[0]
        source = self._resolve(orig) if orig is not None else None
        if source is None and second is not None:
            source = self._resolve(second)
        to: str | None = None
        second_exten = event.get("SecondTransfererExten", "")
        distinct = event.get("SecondTransfererUniqueid") != event.get("OrigTransfererUniqueid")
        if distinct and _DIALLED.fullmatch(second_exten):
            to = second_exten
        elif target is not None:
            reached = self._resolve(target)
            if reached is not None and reached.kind is Kind.PHONE:
                to = reached.label
            elif reached is not None:
                to = reached.dial_exten or reached.cid
            else:
                to = local_exten(target.name)
        call.transfers.append((self._seq, Transfer(TransferKind.ATTENDED, _label(source), to)))
        sources = frozenset(
            r for r in (self._resolve(c) for c in (orig, second) if c is not None) if r is not None
        )
        if call.anchor is not None and call.anchor in sources:
            self._hand_over(call, call.anchor, transferee or target, at, connected=sources)
        elif call.anchor is not None:
            self._connect(call.anchor, at)

    def _on_pickup(self, event: Event, at: float | None) -> None:
        """``Pickup``: a phone answered a call ringing elsewhere (``*8``, or a SIP
        Replaces).  The picker's own call is the pickup leg and folds into the
        picked call."""
        picker = self._chans.get(event.get("Uniqueid", ""))
        target = self._chans.get(event.get("TargetUniqueid", ""))
        if picker is not None and target is not None:
            self._merge_pair(target.call, picker.call)

    def _on_rename(self, event: Event, at: float | None) -> None:
        """A masquerade (pickup, old-style transfer) gives a channel another device's
        name: from then on it is that device."""
        chan = self._chans.get(event.get("Uniqueid", ""))
        name = event.get("Newname")
        if chan is None or not name:
            return
        chan.name = name
        if is_masquerade_name(name):
            return
        kind, label = self._classifier.classify(name)
        if kind is not Kind.HELPER:
            chan.kind, chan.label = kind, label

    # ---------------------------------------------------------------- topology

    def _merge_pair(self, a: Call, b: Call) -> None:
        if a is b:
            return
        if a.seq <= b.seq:
            self._merge(a, b)
        else:
            self._merge(b, a)

    def _component(self, start: Chan) -> list[Chan]:
        """Every channel connected to ``start`` by bridges and Local pairs."""
        found = [start]
        seen = {id(start)}
        i = 0
        bridges = self._bridges
        while i < len(found):
            chan = found[i]
            i += 1
            if chan.bridge is not None:
                for other in bridges.get(chan.bridge, ()):
                    if id(other) not in seen:
                        seen.add(id(other))
                        found.append(other)
            partner = chan.partner
            # A hung-up half no longer carries audio (and belongs to a finished call).
            if partner is not None and id(partner) not in seen and partner.uid in self._chans:
                seen.add(id(partner))
                found.append(partner)
        return found

    def _connect(
        self,
        chan: Chan,
        at: float | None,
        ignore: frozenset[Chan] = frozenset(),
        merge: bool = True,
    ) -> None:
        """Record who now talks with each caller side through ``chan``'s connections
        (``ignore``: transferers still bridged for an instant after handing over)."""
        component = self._component(chan)
        parties = [c for c in component if c.kind is not Kind.HELPER and c not in ignore]
        if len(parties) < 2:
            return
        calls = list({id(c.call): c.call for c in component}.values())
        if merge and len(calls) > 1:
            keep = min(calls, key=lambda c: c.seq)
            for other in calls:
                self._merge(keep, other)
            calls = [keep]
        for call in calls:
            anchor = call.anchor
            if anchor is None or anchor not in parties:
                continue
            agent: str | None = None
            for party in parties:
                if party is anchor:
                    continue
                if not call.answered:
                    call.answered = True
                    call.answered_at = at
                if party.kind is Kind.PHONE and agent is None:
                    agent = party.label
                    if call.answered_by is None:
                        call.answered_by = agent
            # Whoever talks with the caller side now is the agent at the end unless
            # someone takes over; handed to an outside number, no employee is left on it.
            call.last_agent = agent

    def _hand_over(
        self,
        call: Call,
        source: Chan | None,
        transferee: Chan | None,
        at: float | None,
        connected: frozenset[Chan] | None,
    ) -> None:
        """When the caller side itself transferred, the party it handed the call to
        becomes the caller side (the callee side keeps being the agents).  After an
        attended transfer (``connected`` = the transferer's channels) the new caller
        side may already be bridged with the target: that counts as talking now, the
        transferer excepted."""
        if source is None or transferee is None or call.anchor is not source:
            return
        new_anchor = self._resolve(transferee)
        if new_anchor is not None and new_anchor is not source:
            call.anchor = new_anchor
            if connected is not None:
                self._connect(new_anchor, at, connected)

    def _resolve(self, chan: Chan) -> Chan | None:
        """The party behind ``chan``: itself, or what its Local partner is bridged
        with or dialled (an attended transfer through ``Local/202@internal;1``
        resolves to ``SIP/202``)."""
        if chan.kind is not Kind.HELPER:
            return chan
        seen = {id(chan)}
        frontier = [chan]
        while frontier:
            entered = frontier.pop(0)
            if entered.kind is not Kind.HELPER:
                return entered
            partner = entered.partner
            if partner is None or id(partner) in seen:
                continue
            seen.add(id(partner))
            nexts: list[Chan] = []
            if partner.bridge is not None:
                nexts.extend(c for c in self._bridges.get(partner.bridge, ()) if c is not partner)
            nexts.extend(partner.dialled)
            for other in nexts:
                if id(other) not in seen:
                    seen.add(id(other))
                    frontier.append(other)
        return None

    def _malformed(self, event: Event, reason: str) -> None:
        log.warning(
            "tracker: skipped %s event at %s: %s", event.get("Event"), _where(event), reason
        )


#: Queue events that name the queue of the caller channel they describe
#: (Asterisk 12+ names, and the Asterisk 11 ``Join``/``Leave``).
_QUEUE_EVENTS: Final = (
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentConnect",
    "AgentComplete",
    "AgentRingNoAnswer",
    "AgentDump",
    "Join",
    "Leave",
)


#: Bridge types (``BridgeType``) whose members Asterisk re-stamps with one Linkedid.
_MERGING_BRIDGES: Final = frozenset({"basic", "stasis", ""})

_ATTENDED_IDS: Final = (
    "OrigTransfererUniqueid",
    "SecondTransfererUniqueid",
    "TransfereeUniqueid",
    "TransferTargetUniqueid",
)


def _label(chan: Chan | None) -> str | None:
    return chan.label if chan is not None else None


def _where(event: Event) -> str:
    offset = getattr(event, "offset", None)
    return f"byte {offset}" if offset is not None else "an unknown position"
