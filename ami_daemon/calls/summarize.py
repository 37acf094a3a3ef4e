"""From a finished conversation's recorded facts to its :class:`CallSummary`.

The tracker records facts as events arrive (who was created first, who dialled
whom, who rang, who was bridged with the caller side, transfers, dial results);
this module turns them into the contract's fields once the last channel hung
up.  Deciding at the end keeps each field's rule in one place and makes it
independent of event order (cacofonisk ``simple/ab_success_o3`` delivers a
callee's ``Ringing`` before the ``DialBegin`` that created it).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from ami_daemon import phones
from ami_daemon.calls.channels import Kind
from ami_daemon.calls.state import Call, Chan
from ami_daemon.calls.summary import CallStatus, CallSummary, Direction
from ami_daemon.config import PbxConfig

_DIALLED = re.compile(r"\+?[0-9*#]+")

#: Q.850 hangup causes meaning "the called side was busy or refused": 17 user
#: busy, 21 call rejected.  Used only when no Dial result was seen at all.
_BUSY_CAUSES = frozenset({"17", "21"})


def summarize(call: Call, pbx: PbxConfig, interrupted: bool) -> CallSummary | None:
    """The summary of ``call``, or None when it is no call at all.

    No call: a conversation of helper channels only, a phone that dialled
    nobody (voicemail, feature codes), and an originate
    (click-to-dial, call-me-now) whose first leg never answered — Asterisk
    rang the employee's own phone (asterisk20 ``06_outbound_…``: ``DialBegin``
    without ``Channel``) and nobody picked up, so nobody called anybody.
    """
    parties = [c for c in call.channels if c.kind is not Kind.HELPER]
    if not parties:
        return None
    origin = call.origin if call.origin is not None else parties[0]
    originated = origin.dialled_in and (origin.dialer is None or origin.dialer.kind is Kind.HELPER)
    if originated and not origin.up:
        return None
    if (
        origin.kind is Kind.PHONE
        and len(parties) == 1
        and not call.answered
        and not any(c.dialled_in for c in call.channels if c is not origin)
    ):
        # A phone that reached no one and dialled nothing (voicemail, a feature
        # code, a wrong number played an announcement) held no conversation.
        return None
    phones_ = [c for c in parties if c.kind is Kind.PHONE]
    trunks = [c for c in parties if c.kind is Kind.TRUNK]

    caller: Chan | None
    outside: Chan | None
    if origin.kind is Kind.TRUNK:
        if originated:
            # call-me-now: Asterisk first rang an outside number for us.
            direction = Direction.OUTBOUND
            caller = phones_[0] if phones_ else None
        else:
            direction = Direction.INBOUND
            caller = None
        outside = origin
    else:
        caller = origin
        outside = trunks[0] if trunks else None
        direction = Direction.OUTBOUND if outside is not None else Direction.INTERNAL

    region = pbx.region
    if direction is Direction.INBOUND:
        assert outside is not None
        external = None if outside.withheld else phones.try_normalize(outside.cid, region)
        did = phones.try_normalize(outside.exten, region)
    elif outside is not None:
        placed = caller if caller is not None and not caller.dialled_in else None
        external = _dialled_number(outside, placed, pbx)
        did = None
    else:
        external = did = None

    answered = call.answered or (call.partial and _looks_answered(call, origin))
    answered_by, last_agent = call.answered_by, call.last_agent
    if answered and not call.answered:
        up = [c.label for c in call.channels if c.kind is Kind.PHONE and c.up and c is not origin]
        answered_by = last_agent = up[0] if up else None
    status = _status(call, direction, answered, interrupted)
    caller_ext = caller.label if caller is not None else None

    rung: list[str] = []
    for _seq, ext in sorted(call.rung):
        if ext not in rung and ext != caller_ext:
            rung.append(ext)

    if direction is Direction.OUTBOUND:
        answered_by = None
        final_agent = caller_ext
    else:
        answered_by = answered_by if answered else None
        final_agent = last_agent if answered else None

    started = _utc(call.started_at)
    answered_at = _utc(call.answered_at) if answered else None
    ended = None if interrupted else _utc(call.ended_at)
    talk: int | None = None
    if ended is not None and call.ended_at is not None:
        if not answered:
            talk = 0
        elif call.answered_at is not None:
            talk = math.floor(max(0.0, call.ended_at - call.answered_at) + 0.5)

    return CallSummary(
        pbx=pbx.name,
        call_id=call.linkedid,
        direction=direction,
        external_number=external,
        did=did,
        trunk=outside.label if outside is not None else None,
        status=status,
        answered_by=answered_by,
        final_agent=final_agent,
        caller_extension=caller_ext,
        agents_rung=tuple(rung),
        queue=call.queue,
        transfers=tuple(t for _seq, t in sorted(call.transfers, key=lambda x: x[0])),
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        talk_seconds=talk,
    )


def _dialled_number(trunk: Chan, placed_by: Chan | None, pbx: PbxConfig) -> str | None:
    """What the employee dialled for an outbound trunk leg, in E.164.

    First the digits the phone itself sent, when it placed the call (its
    ``Exten`` when created); then the ``Exten`` of whatever dialled the trunk
    (asterisk20 ``06_…``: the click-to-dial phone's ``Exten`` is
    ``0034911000111`` while the lab dialplan sent ``trunk/034911000111``;
    cacofonisk: ``Local/+31150010001@world_out;2``); then the trunk channel's
    ``CallerIDNum``, where Asterisk copies the dialled number; the
    ``DialString`` last, as the dialplan may have rewritten it.  The first
    candidate that is a phone number wins (an extension such as ``202``, dialled
    before a forward to a mobile, is not).
    """
    candidates = (
        placed_by.exten if placed_by is not None else None,
        trunk.dial_exten,
        trunk.cid,
        _dial_string_number(trunk.dial_string),
    )
    prefix = pbx.outside_prefix
    for raw in candidates:
        if raw and _DIALLED.fullmatch(raw):
            if prefix and raw.startswith(prefix) and len(raw) > len(prefix):
                raw = raw[len(prefix) :]
            number = phones.try_normalize(raw, pbx.region)
            if number is not None:
                return number
    return None


def _dial_string_number(dial_string: str | None) -> str | None:
    if not dial_string:
        return None
    tail = dial_string.rsplit("/", 1)[-1]
    return tail.split("@", 1)[0]


def _looks_answered(call: Call, origin: Chan) -> bool:
    """For a call whose start we missed (daemon connected mid-call): the caller
    side and another party both seen Up is the best evidence left that they talked."""
    return origin.up and any(
        c.up and c is not origin and c.kind is not Kind.HELPER for c in call.channels
    )


def _status(call: Call, direction: Direction, answered: bool, interrupted: bool) -> CallStatus:
    """DESIGN ``status``: inbound not answered is missed whatever the reason;
    outbound/internal take the result of the dials to the parties (cacofonisk
    ``simple/ab_callgroup_no_answer``: the caller's own ``DialEnd`` to a Local
    helper says NOANSWER while both phones answered BUSY, so the phones' results
    decide), falling back to the helpers' results and then the hangup cause."""
    if interrupted:
        return CallStatus.INTERRUPTED
    if answered:
        return CallStatus.ANSWERED
    if direction is Direction.INBOUND:
        return CallStatus.MISSED
    statuses = call.leaf_status or call.helper_status
    if "NOANSWER" in statuses or "CANCEL" in statuses:
        return CallStatus.NO_ANSWER
    if "BUSY" in statuses:
        return CallStatus.BUSY
    if statuses:
        return CallStatus.NO_ANSWER if set(statuses) <= {"ANSWER"} else CallStatus.FAILED
    if call.origin_cause in _BUSY_CAUSES:
        return CallStatus.BUSY
    return CallStatus.FAILED


def _utc(ts: float | None) -> datetime | None:
    """Seconds since the epoch → aware UTC datetime, to the millisecond the contract shows."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
