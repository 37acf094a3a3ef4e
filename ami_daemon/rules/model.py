"""The validated rule set: what the admin's YAML means, as immutable values.

These are the settings of Bitrix24's "Telephony ⇄ CRM integration" tab
(FEATURES S1–S13) applied to an Asterisk PBX: every number (a DID the carrier
delivers in ``Exten`` on the trunk context) or trunk (the peer name of a
``SIP/trunk-…`` channel) may override the defaults; queue groups mirror
``queues.conf`` (first member = default responsible of a new lead); sources,
pipelines with stages, automation for new deals and the CRM exception list.

Nothing here does I/O.  :func:`ami_daemon.rules.loader.load_rules` builds a
:class:`RuleSet`; the decision code only reads it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, tzinfo
from types import MappingProxyType
from typing import Any

from ami_daemon import phones


class CrmMode(str, enum.Enum):
    """Bitrix24's CRM modes: classic keeps leads; simple goes straight to deals."""

    CLASSIC = "classic"
    SIMPLE = "simple"


class UnknownCallerScenario(str, enum.Enum):
    """What a call from a number the CRM does not know does (seed, step 1)."""

    CREATE = "create"  # create a lead (classic) or a deal (simple) automatically
    OFFER = "offer"  # create nothing: the call waits as a pending unknown call


class AnonymousCallers(str, enum.Enum):
    """What a call without a usable caller number does (``anonymous``, masked, garbage).

    Such a call can match nothing in the CRM; by default it creates nothing
    (``skipped_anonymous``).  A line that wants every call followed up can
    create a lead (or pending call, or deal) without a phone for it instead.
    """

    SKIP = "skip"
    CREATE = "create"


class CreateFor(str, enum.Enum):
    """Which calls create new CRM records (seed, step 2)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    ALL = "all"

    def covers(self, direction: str) -> bool:
        """True when a call in ``direction`` (``inbound``/``incoming``…) may create records."""
        wanted = _DIRECTION_WORDS.get(direction.lower())
        if wanted is None:
            return False
        return self is CreateFor.ALL or self is wanted


class DealCreationMode(str, enum.Enum):
    """Simple mode: what is created together with the deal."""

    CONTACT = "contact"
    COMPANY = "company"
    CONTACT_AND_COMPANY = "contact_and_company"


class CallDirection(str, enum.Enum):
    """Direction condition of an automation rule (the tracker's inbound/outbound)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


_DIRECTION_WORDS: dict[str, CreateFor] = {
    "incoming": CreateFor.INCOMING,
    "inbound": CreateFor.INCOMING,
    "outgoing": CreateFor.OUTGOING,
    "outbound": CreateFor.OUTGOING,
}

#: Bitrix24's standard sources; ``CALL`` first (the default for telephony).
STANDARD_SOURCES: tuple[str, ...] = (
    "CALL",
    "EMAIL",
    "WEB",
    "ADVERTISING",
    "PARTNER",
    "RECOMMENDATION",
    "TRADE_SHOW",
    "WEBFORM",
    "CALLBACK",
    "OTHER",
)

#: The pipeline every CRM has; its stages unless the rules redefine them.
GENERAL_PIPELINE = "general"
GENERAL_STAGES: tuple[str, ...] = (
    "NEW",
    "PREPARATION",
    "PREPAYMENT_INVOICE",
    "EXECUTING",
    "FINAL_INVOICE",
    "WON",
    "LOSE",
)

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Origin(str, enum.Enum):
    """Where one effective setting came from, most specific last."""

    BUILTIN = "built-in default"
    SET = "set"
    DEFAULTS = "defaults"
    TRUNK = "trunk override"
    NUMBER = "number override"


@dataclass(frozen=True)
class Provenance:
    """Origin of one value: ``number override +34911234567 (rules/10-numbers.yaml:21)``."""

    origin: Origin
    file: str | None = None
    line: int | None = None
    key: str | None = None  # the DID (E.164) or trunk name of an override

    def __str__(self) -> str:
        if self.origin is Origin.SET and self.file:
            return f"set at {self.file}:{self.line}"
        text = self.origin.value
        if self.key:
            text += f" {self.key}"
        if self.file:
            text += f" ({self.file}:{self.line})" if self.line else f" ({self.file})"
        return text


#: The per-number settings, in the order the seed presents them.
SETTING_FIELDS: tuple[str, ...] = (
    "unknown_caller",
    "create_for",
    "source",
    "route_to_responsible",
    "update_responsible_on_forward",
    "queue_group",
    "pipeline",
    "deal_creation",
    "anonymous_callers",
)


@dataclass(frozen=True)
class NumberSettings:
    """Effective CRM settings of one DID or trunk (seed steps 1–4 and simple mode).

    ``provenance`` maps each field name of :data:`SETTING_FIELDS` to where its
    value came from; ``label`` is the admin's name for the number, if any.
    """

    unknown_caller: UnknownCallerScenario = UnknownCallerScenario.CREATE
    create_for: CreateFor = CreateFor.ALL
    source: str = "CALL"
    route_to_responsible: bool = False
    update_responsible_on_forward: bool = False
    queue_group: str | None = None
    pipeline: str = GENERAL_PIPELINE
    deal_creation: DealCreationMode = DealCreationMode.CONTACT
    anonymous_callers: AnonymousCallers = AnonymousCallers.SKIP
    label: str | None = None
    provenance: Mapping[str, Provenance] = field(
        default_factory=lambda: MappingProxyType(
            {name: Provenance(Origin.BUILTIN) for name in SETTING_FIELDS}
        ),
        compare=False,
        hash=False,
    )

    def origin_of(self, name: str) -> Provenance:
        """Where the value of setting ``name`` came from."""
        return self.provenance.get(name, Provenance(Origin.BUILTIN))

    def value_text(self, name: str) -> str:
        """The value of setting ``name`` as the YAML spells it."""
        value = getattr(self, name)
        if isinstance(value, enum.Enum):
            return str(value.value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "(none)" if value is None else str(value)


class OverrideKind(str, enum.Enum):
    NUMBER = "number"
    TRUNK = "trunk"


@dataclass(frozen=True)
class Override:
    """One ``numbers:`` or ``trunks:`` entry: only the settings it names.

    ``key`` is the DID in E.164 (or the trunk name), ``spelled`` as the admin
    wrote it; ``values`` holds validated values by field name and ``lines``
    the line of each.
    """

    kind: OverrideKind
    key: str
    spelled: str
    file: str
    line: int
    label: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)

    def apply(self, base: NumberSettings) -> NumberSettings:
        """``base`` with this override's values on top, provenance updated."""
        origin = Origin.NUMBER if self.kind is OverrideKind.NUMBER else Origin.TRUNK
        prov = dict(base.provenance)
        for name in self.values:
            prov[name] = Provenance(origin, self.file, self.lines.get(name, self.line), self.key)
        label = self.label if self.label is not None else base.label
        return replace(base, **self.values, label=label, provenance=MappingProxyType(prov))


@dataclass(frozen=True)
class QueueGroup:
    """An Asterisk queue (queues.conf name) and its members' extensions, in order.

    The first member is the default responsible of a new lead (seed step 4).
    """

    name: str
    members: tuple[str, ...]
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def default_responsible(self) -> str | None:
        return self.members[0] if self.members else None


@dataclass(frozen=True)
class Pipeline:
    """A deal pipeline and its stages in order (the first is where new deals start)."""

    name: str
    stages: tuple[str, ...]
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def first_stage(self) -> str:
        return self.stages[0]


@dataclass(frozen=True)
class TimeWindow:
    """Local wall-clock interval ``[start, end)``; ``start > end`` crosses midnight.

    ``22:00-06:00`` covers 22:00 up to 05:59:59 of the next day; that night
    belongs to the weekday on which it started (see :meth:`day_of`).
    """

    start: time
    end: time

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def day_of(self, local_time: datetime) -> int | None:
        """Weekday (0 = Monday) of the window that contains ``local_time``, or None.

        For a window crossing midnight, 02:00 on Saturday is in Friday's night.
        """
        t = local_time.time().replace(tzinfo=None)
        day = local_time.weekday()
        if not self.crosses_midnight:
            return day if self.start <= t < self.end else None
        if t >= self.start:
            return day
        if t < self.end:
            return (day - 1) % 7
        return None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class AutomationFacts:
    """What an automation rule may look at, about one finished call.

    ``direction`` is the tracker's word (``inbound``/``outbound``/``internal``;
    ``incoming``/``outgoing`` are accepted too); ``caller_country`` is the ISO
    country of the outside party's number (:func:`ami_daemon.phones.country_of`
    of the caller on inbound calls, of the number dialled on outbound ones),
    None when withheld; ``local_time`` is when the call started, as wall-clock
    time in ``pbx.timezone`` (see :func:`local_time`).
    """

    did: str | None
    trunk: str | None
    queue: str | None
    direction: str
    answered: bool
    caller_country: str | None
    local_time: datetime


def local_time(when: datetime, zone: tzinfo) -> datetime:
    """``when`` as wall-clock time in ``zone`` (a naive datetime is taken as UTC)."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone(zone)


@dataclass(frozen=True)
class AutomationRule:
    """One automation rule for new deals: conditions (all must hold) and actions.

    Empty condition sets and None mean "any".  Rules are tried in file order
    (files sorted by name); the first that matches decides (FEATURES S12).
    """

    name: str
    file: str
    line: int
    # conditions
    numbers: frozenset[str] = frozenset()  # DIDs, E.164
    trunks: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    direction: CallDirection | None = None
    answered: bool | None = None
    caller_countries: frozenset[str] = frozenset()  # ISO 3166 alpha-2, upper case
    weekdays: frozenset[int] = frozenset()  # 0 = Monday
    time_window: TimeWindow | None = None
    # actions
    pipeline: str | None = None
    stage: str | None = None
    responsible: str | None = None  # an extension
    source: str | None = None

    def matches(self, facts: AutomationFacts) -> bool:
        """True when every condition of this rule holds for ``facts``."""
        if self.numbers and facts.did not in self.numbers:
            return False
        if self.trunks and facts.trunk not in self.trunks:
            return False
        if self.queues and facts.queue not in self.queues:
            return False
        if self.direction is not None:
            seen = _DIRECTION_WORDS.get(facts.direction.lower())
            if seen is None or seen.value != self.direction.value:
                return False
        if self.answered is not None and facts.answered != self.answered:
            return False
        if self.caller_countries and (
            facts.caller_country is None
            or facts.caller_country.upper() not in self.caller_countries
        ):
            return False
        if self.time_window is not None:
            day = self.time_window.day_of(facts.local_time)
            if day is None:
                return False
        else:
            day = facts.local_time.weekday()
        return not self.weekdays or day in self.weekdays

    def describe_conditions(self) -> str:
        """The conditions in words, for ``rules check`` and decision reasons."""
        parts: list[str] = []
        if self.numbers:
            parts.append("number " + " or ".join(sorted(self.numbers)))
        if self.trunks:
            parts.append("trunk " + " or ".join(sorted(self.trunks)))
        if self.queues:
            parts.append("queue " + " or ".join(sorted(self.queues)))
        if self.direction is not None:
            parts.append(self.direction.value)
        if self.answered is not None:
            parts.append("answered" if self.answered else "missed")
        if self.caller_countries:
            parts.append("caller from " + " or ".join(sorted(self.caller_countries)))
        if self.weekdays:
            parts.append("on " + ",".join(WEEKDAYS[d] for d in sorted(self.weekdays)))
        if self.time_window is not None:
            parts.append(f"between {self.time_window}")
        return ", ".join(parts) if parts else "every new deal"

    def describe_actions(self) -> str:
        parts: list[str] = []
        if self.pipeline is not None:
            parts.append(f"pipeline {self.pipeline}")
        if self.stage is not None:
            parts.append(f"stage {self.stage}")
        if self.responsible is not None:
            parts.append(f"responsible {self.responsible}")
        if self.source is not None:
            parts.append(f"source {self.source}")
        return ", ".join(parts)


@dataclass(frozen=True)
class RuleSet:
    """Everything the rules YAML says, validated; never half of it.

    ``overrides`` keeps every ``numbers:``/``trunks:`` entry in file order;
    lookups go through :meth:`settings_for`.  Settings layer per key: a DID's
    override, then its trunk's override, then ``defaults:``, then the built-in
    default.  ``region`` is the one the numbers were read with.
    """

    mode: CrmMode
    defaults: NumberSettings
    overrides: tuple[Override, ...]
    queue_groups: Mapping[str, QueueGroup]
    sources: tuple[str, ...]
    pipelines: Mapping[str, Pipeline]
    automation: tuple[AutomationRule, ...]
    exception_phones: frozenset[str]
    exception_emails: frozenset[str]
    region: str = "ES"
    files: tuple[str, ...] = ()
    mode_origin: Provenance = field(default=Provenance(Origin.BUILTIN), compare=False)
    custom_sources: tuple[str, ...] = ()
    _by_number: Mapping[str, Override] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _by_trunk: Mapping[str, Override] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        numbers = {o.key: o for o in self.overrides if o.kind is OverrideKind.NUMBER}
        trunks = {o.key: o for o in self.overrides if o.kind is OverrideKind.TRUNK}
        object.__setattr__(self, "_by_number", MappingProxyType(numbers))
        object.__setattr__(self, "_by_trunk", MappingProxyType(trunks))

    def number_override(self, did: str | None) -> Override | None:
        """The ``numbers:`` entry of ``did`` (any spelling), if any."""
        e164 = self._e164(did)
        return self._by_number.get(e164) if e164 else None

    def trunk_override(self, trunk: str | None) -> Override | None:
        return self._by_trunk.get(trunk) if trunk else None

    def settings_for(self, did: str | None = None, trunk: str | None = None) -> NumberSettings:
        """Effective settings of a call on ``did`` arriving over ``trunk``.

        Inbound calls pass both (the DID decides first); outbound calls pass
        only their trunk.  Unknown DIDs and trunks get the defaults.
        """
        settings = self.defaults
        by_trunk = self.trunk_override(trunk)
        if by_trunk is not None:
            settings = by_trunk.apply(settings)
        by_number = self.number_override(did)
        if by_number is not None:
            settings = by_number.apply(settings)
        return settings

    def is_exception_phone(self, e164: str | None) -> bool:
        """True when calls of this number must not be saved to the CRM (S6)."""
        number = self._e164(e164)
        return number is not None and number in self.exception_phones

    def is_exception_email(self, email: str | None) -> bool:
        return email is not None and email.strip().lower() in self.exception_emails

    def first_automation_match(self, facts: AutomationFacts) -> AutomationRule | None:
        """The first automation rule, in order, whose conditions all hold."""
        for rule in self.automation:
            if rule.matches(facts):
                return rule
        return None

    def queue_group(self, name: str | None) -> QueueGroup | None:
        return self.queue_groups.get(name) if name else None

    def pipeline(self, name: str | None) -> Pipeline | None:
        return self.pipelines.get(name) if name else None

    def _e164(self, number: str | None) -> str | None:
        if not number:
            return None
        if number.startswith("+") and number[1:].isdigit():
            return number
        return phones.try_normalize(number, self.region)
