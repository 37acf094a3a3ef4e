"""CDR legs grouped into call summaries: what a CDR can tell about a call.

Used to recover calls that ended while the daemon was down or its AMI link
was cut (FEATURES B6).  A CDR knows the numbers, the DID, the trunk, which
phones were dialled, who answered, and the durations; it does not know
transfers reliably (after a blind transfer Asterisk rewrites ``dst`` of the
first leg to the transfer target, capture 04), so ``transfers`` stays empty.

Rules, per conversation (legs sorted by start, then sequence):

- a leg whose ``channel`` is a trunk makes the call inbound; else a leg whose
  ``dstchannel`` is a trunk makes it outbound; else it is internal;
- legs without a ``dstchannel`` are dialplan bookkeeping, not dial attempts —
  notably the extra 0-second ``ANSWERED``/``Hangup`` leg ``cdr_csv`` writes for
  a caller whose dial failed (capture 07) — and are ignored for the outcome;
- answered = a leg to an employee phone (inbound, internal) or to the trunk
  (outbound) with disposition ``ANSWERED`` and an answer time; the first such
  leg's phone answered, the last one's phone was on the call at its end;
- unanswered outbound/internal: ``BUSY`` → busy, ``NO ANSWER`` → no_answer,
  anything else (``FAILED``, ``CONGESTION``) → failed; unanswered inbound is missed;
- ``queue`` comes from a ``Queue`` leg's ``lastdata`` (``sales,t,,,20``);
- talk seconds: the ``billsec`` of the answered leg when there is one, else
  from the first answer to the last end (transfers: ringing and hold included).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from ami_daemon import phones
from ami_daemon.calls.channels import Classifier, Kind
from ami_daemon.calls.summary import CallStatus, CallSummary, Direction
from ami_daemon.cdr.records import CdrRecord
from ami_daemon.config import PbxConfig


def group_legs(records: Iterable[CdrRecord]) -> OrderedDict[str, list[CdrRecord]]:
    """Legs by conversation key (linkedid, else uniqueid), in order of first start."""
    grouped: dict[str, list[CdrRecord]] = {}
    for record in records:
        key = record.call_key
        if key is None:
            continue
        grouped.setdefault(key, []).append(record)
    ordered = sorted(grouped.items(), key=lambda item: min(r.start for r in item[1]))
    result: OrderedDict[str, list[CdrRecord]] = OrderedDict()
    for key, legs in ordered:
        legs.sort(key=lambda r: (r.start, r.sequence if r.sequence is not None else 0))
        result[key] = legs
    return result


class CdrSummarizer:
    """Turns the legs of one conversation into a :class:`CallSummary`."""

    def __init__(self, pbx: PbxConfig) -> None:
        self.pbx = pbx
        self.classifier = Classifier(pbx)

    def _kind(self, channel: str) -> tuple[Kind, str | None]:
        if not channel:
            return Kind.HELPER, None
        return self.classifier.classify(channel)

    def _number(self, raw: str, strip_prefix: bool = False) -> str | None:
        value = raw.strip()
        prefix = self.pbx.outside_prefix
        if strip_prefix and prefix and value.startswith(prefix):
            value = value[len(prefix) :]
        return phones.try_normalize(value, self.pbx.region)

    def summarize(self, call_id: str, legs: list[CdrRecord]) -> CallSummary:
        first = legs[0]
        kinds = [(self._kind(leg.channel), self._kind(leg.dstchannel)) for leg in legs]
        dials = [
            (leg, src, dst) for leg, (src, dst) in zip(legs, kinds, strict=True) if leg.dstchannel
        ]
        if any(src[0] is Kind.TRUNK for src, _ in kinds):
            direction = Direction.INBOUND
        elif any(dst[0] is Kind.TRUNK for _, dst in kinds):
            direction = Direction.OUTBOUND
        else:
            direction = Direction.INTERNAL

        trunk = next(
            (label for (src, dst) in kinds for kind, label in (src, dst) if kind is Kind.TRUNK),
            None,
        )
        caller_extension = None
        if direction is not Direction.INBOUND:
            caller_extension = next((src[1] for src, _ in kinds if src[0] is Kind.PHONE), None)

        target = Kind.TRUNK if direction is Direction.OUTBOUND else Kind.PHONE
        attempts = [(leg, dst) for leg, _, dst in dials if dst[0] is target]
        answered = [
            (leg, dst)
            for leg, dst in attempts
            if leg.disposition == "ANSWERED" and leg.answer is not None
        ]
        agents_rung = tuple(
            OrderedDict.fromkeys(
                dst[1]
                for leg, _, dst in dials
                if dst[0] is Kind.PHONE and dst[1] and dst[1] != caller_extension
            )
        )

        status = self._status(direction, answered, attempts)
        answered_by = final_agent = None
        if direction is not Direction.OUTBOUND and answered:
            answered_by, final_agent = answered[0][1][1], answered[-1][1][1]
        if direction is Direction.OUTBOUND:
            final_agent = caller_extension

        if direction is Direction.INBOUND:
            external = self._number(first.src)
            did = self._number(first.dst)
        elif direction is Direction.OUTBOUND:
            external = self._number(first.dst, strip_prefix=True)
            did = None
        else:
            external = did = None

        queue = next(
            (leg.lastdata.split(",")[0] or None for leg in legs if leg.lastapp.lower() == "queue"),
            None,
        )
        started_at = min(leg.start for leg in legs)
        ended_at = max(leg.end for leg in legs)
        answered_at = min((leg.answer for leg, _ in answered if leg.answer), default=None)
        if len(answered) == 1:
            # billsec is Asterisk's own count for the one answered leg: more exact
            # than the whole-second start/end stamps of cdr_csv.
            talk = answered[0][0].billsec
        else:
            talk = round((ended_at - answered_at).total_seconds()) if answered_at else 0
        return CallSummary(
            pbx=self.pbx.name,
            call_id=call_id,
            direction=direction,
            external_number=external,
            did=did,
            trunk=trunk,
            status=status,
            answered_by=answered_by,
            final_agent=final_agent,
            caller_extension=caller_extension,
            agents_rung=agents_rung,
            queue=queue,
            transfers=(),
            started_at=started_at,
            answered_at=answered_at,
            ended_at=ended_at,
            talk_seconds=max(0, talk),
        )

    @staticmethod
    def _status(
        direction: Direction,
        answered: Sequence[tuple[CdrRecord, object]],
        attempts: Sequence[tuple[CdrRecord, object]],
    ) -> CallStatus:
        if answered:
            return CallStatus.ANSWERED
        if direction is Direction.INBOUND:
            return CallStatus.MISSED
        dispositions = {leg.disposition for leg, _ in attempts}
        if dispositions and dispositions <= {"BUSY"}:
            return CallStatus.BUSY
        if "NO ANSWER" in dispositions or not dispositions:
            return CallStatus.NO_ANSWER
        return CallStatus.FAILED


def summaries_from_records(
    records: Iterable[CdrRecord],
    pbx: PbxConfig,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[CallSummary]:
    """Every conversation whose first leg started in [since, until)."""
    summarizer = CdrSummarizer(pbx)
    out = []
    for key, legs in group_legs(records).items():
        start = legs[0].start
        if since is not None and start < since.astimezone(UTC):
            continue
        if until is not None and start >= until.astimezone(UTC):
            continue
        out.append(summarizer.summarize(key, legs))
    return out
