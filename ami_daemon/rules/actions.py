"""What the CRM gets for one finished call: an outcome, actions, and the reasons.

The decision (:mod:`ami_daemon.rules.decide`) returns a :class:`Decision`;
``ami_daemon.crm.apply`` writes its actions in one transaction together with
the call's ``crm.calls`` row, and ``ami-daemon replay --dry-run`` prints them.
Actions are plain frozen values that name employees by their PBX extension
(``201``), the way Asterisk and the rules name them; the apply step resolves
extensions to ``crm.users`` ids.  Each action's :meth:`to_json_dict` is what
the dry run shows under ``"actions"``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from ami_daemon.crm.lookup import PhoneOwner


class CrmOutcome(str, enum.Enum):
    """``crm.calls.crm_outcome`` (DESIGN "contract: CRM tables")."""

    LEAD_CREATED = "lead_created"
    DEAL_CREATED = "deal_created"
    ACTIVITY_LOGGED = "activity_logged"
    PENDING_MANUAL = "pending_manual"
    SKIPPED_INTERNAL = "skipped_internal"
    SKIPPED_EMPLOYEE = "skipped_employee"
    SKIPPED_EXCEPTION = "skipped_exception"
    SKIPPED_DIRECTION = "skipped_direction"
    SKIPPED_ANONYMOUS = "skipped_anonymous"


class ActivityStatus(str, enum.Enum):
    """``crm.activities.status``: did someone talk with the client?"""

    ANSWERED = "answered"
    MISSED = "missed"


@dataclass(frozen=True)
class CallFacts:
    """What the CRM knows about the call's outside number, read before deciding.

    ``owner`` is the foundation's :func:`~ami_daemon.crm.lookup.lookup_phone`
    result (None when the call has no outside number); ``open_task_ids`` are
    the open callback tasks for that number (B3).
    """

    owner: PhoneOwner | None
    open_task_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Action:
    """Base of every CRM action; ``kind`` is its ``"type"`` in the dry-run JSON."""

    kind: ClassVar[str] = "action"

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True)
class CreateLead(Action):
    """Classic mode, new caller (S2, S9–S11): a lead, its phone, and the call logged on it."""

    kind: ClassVar[str] = "create_lead"
    title: str
    e164: str | None  # None: an anonymous caller (rules: anonymous_callers: create)
    source: str
    responsible: str | None  # extension
    activity: ActivityStatus


@dataclass(frozen=True)
class CreateDeal(Action):
    """Simple mode, new caller (S3, S12): a deal with a contact and/or a company.

    A lead is recorded too, already ``converted`` into them, as Bitrix24's
    simple mode does; the call is logged on the deal and on the new contact
    (or company).
    """

    kind: ClassVar[str] = "create_deal"
    title: str
    e164: str | None  # None: an anonymous caller (rules: anonymous_callers: create)
    source: str
    responsible: str | None
    pipeline: str
    stage: str
    with_contact: bool
    with_company: bool
    activity: ActivityStatus
    automation_rule: str | None


@dataclass(frozen=True)
class LogActivity(Action):
    """The call stored on an existing CRM item (S13): contact, company, lead or deal."""

    kind: ClassVar[str] = "log_activity"
    entity_type: str
    entity_id: int
    status: ActivityStatus
    responsible: str | None


@dataclass(frozen=True)
class CreatePendingCall(Action):
    """``unknown_caller: offer`` (S4): the call waits until an employee creates a record."""

    kind: ClassVar[str] = "create_pending_call"
    e164: str | None  # None: an anonymous caller (rules: anonymous_callers: create)
    did: str | None
    answered_by: str | None
    source: str


@dataclass(frozen=True)
class CreateCallbackTask(Action):
    """A missed call from an existing client (B3): call them back."""

    kind: ClassVar[str] = "create_callback_task"
    e164: str
    entity_type: str
    entity_id: int
    responsible: str | None
    title: str


@dataclass(frozen=True)
class CloseCallbackTasks(Action):
    """Someone talked with the client again: their open callback tasks are done (B3)."""

    kind: ClassVar[str] = "close_callback_tasks"
    e164: str
    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    """The decision about one call: what ``crm.calls`` records and what else is written."""

    outcome: CrmOutcome
    actions: tuple[Action, ...]
    reasons: tuple[str, ...]

    @property
    def reason_text(self) -> str:
        """``crm.calls.crm_reason``: the reasons joined into one sentence list."""
        return "; ".join(self.reasons)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "actions": [a.to_json_dict() for a in self.actions],
            "reasons": list(self.reasons),
        }


def when_text(moment: datetime | None) -> str:
    """``2026-11-27 17:28`` (local wall clock) for titles; ``unknown time`` without one."""
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "unknown time"
