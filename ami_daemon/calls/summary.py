"""What the tracker reports for one finished conversation (DESIGN "contract: ami-daemon calls").

A :class:`CallSummary` is the single fact the rest of the daemon (rules, CRM,
the ``calls``/``replay`` commands) consumes: frozen, JSON-round-trippable, with
exactly the contract's keys in the contract's order.  Every field's meaning is
defined in shared/docs/DESIGN.md; the tracker (``tracker.py``) explains how
each is read from Asterisk's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any


class Direction(str, Enum):
    """Who started the conversation: the outside world, an employee, or employees only."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class CallStatus(str, Enum):
    """How the conversation ended (DESIGN: ``status``)."""

    ANSWERED = "answered"
    MISSED = "missed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class TransferKind(str, Enum):
    """``BlindTransfer`` → blind; ``AttendedTransfer`` (also "blonde", DestType App) → attended."""

    BLIND = "blind"
    ATTENDED = "attended"


@dataclass(frozen=True)
class Transfer:
    """One transfer Asterisk reported as successful: who transferred, to what was dialled."""

    kind: TransferKind
    from_ext: str | None
    to: str | None

    def to_json_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "from": self.from_ext, "to": self.to}

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> Transfer:
        return cls(TransferKind(d["kind"]), d.get("from"), d.get("to"))


def _time_to_json(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _time_from_json(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class CallSummary:
    """One finished conversation, every field as DESIGN's ``ami-daemon calls`` contract defines.

    Times are timezone-aware UTC datetimes (None when the capture had no
    ``Timestamp`` headers and no clock was given); ``talk_seconds`` is
    ``ended_at - answered_at`` rounded, 0 when never answered, None without times.
    """

    pbx: str
    call_id: str
    direction: Direction
    external_number: str | None
    did: str | None
    trunk: str | None
    status: CallStatus
    answered_by: str | None
    final_agent: str | None
    caller_extension: str | None
    agents_rung: tuple[str, ...]
    queue: str | None
    transfers: tuple[Transfer, ...]
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    talk_seconds: int | None

    def to_json_dict(self) -> dict[str, Any]:
        """The contract's JSON object, keys in the contract's order."""
        return {
            "pbx": self.pbx,
            "call_id": self.call_id,
            "direction": self.direction.value,
            "external_number": self.external_number,
            "did": self.did,
            "trunk": self.trunk,
            "status": self.status.value,
            "answered_by": self.answered_by,
            "final_agent": self.final_agent,
            "caller_extension": self.caller_extension,
            "agents_rung": list(self.agents_rung),
            "queue": self.queue,
            "transfers": [t.to_json_dict() for t in self.transfers],
            "started_at": _time_to_json(self.started_at),
            "answered_at": _time_to_json(self.answered_at),
            "ended_at": _time_to_json(self.ended_at),
            "talk_seconds": self.talk_seconds,
        }

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> CallSummary:
        """The exact inverse of :meth:`to_json_dict` (times to millisecond precision)."""
        talk = d.get("talk_seconds")
        return cls(
            pbx=str(d["pbx"]),
            call_id=str(d["call_id"]),
            direction=Direction(d["direction"]),
            external_number=d.get("external_number"),
            did=d.get("did"),
            trunk=d.get("trunk"),
            status=CallStatus(d["status"]),
            answered_by=d.get("answered_by"),
            final_agent=d.get("final_agent"),
            caller_extension=d.get("caller_extension"),
            agents_rung=tuple(str(x) for x in d.get("agents_rung") or ()),
            queue=d.get("queue"),
            transfers=tuple(Transfer.from_json_dict(t) for t in d.get("transfers") or ()),
            started_at=_time_from_json(d.get("started_at")),
            answered_at=_time_from_json(d.get("answered_at")),
            ended_at=_time_from_json(d.get("ended_at")),
            talk_seconds=None if talk is None else int(talk),
        )
