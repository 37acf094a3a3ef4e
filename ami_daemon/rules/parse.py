"""One rules file's node tree → entries of a :class:`Draft` shared by all files.

Each file may hold any of the top-level sections; the loader feeds the files
in name order into one draft, which detects what only shows across files
(a DID spelled differently in two files, a custom source declared twice) and
records references (sources, pipelines, stages, queue groups) to check once
everything is read, since a number may use a queue group declared in another
file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from typing import Any

import yaml

from ami_daemon import phones
from ami_daemon.rules.model import (
    STANDARD_SOURCES,
    WEEKDAYS,
    AnonymousCallers,
    AutomationRule,
    CallDirection,
    CreateFor,
    CrmMode,
    DealCreationMode,
    Override,
    OverrideKind,
    Pipeline,
    QueueGroup,
    TimeWindow,
    UnknownCallerScenario,
)
from ami_daemon.rules.yamlnodes import Entry, NodeReader, is_null, join, line_of

TOP_LEVEL = (
    "mode",
    "defaults",
    "numbers",
    "trunks",
    "queue_groups",
    "sources",
    "pipelines",
    "automation",
    "exceptions",
)
SETTINGS_KEYS = (
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
OVERRIDE_KEYS = ("label", *SETTINGS_KEYS)
RULE_KEYS = ("name", "when", "then")
WHEN_KEYS = (
    "numbers",
    "trunks",
    "queues",
    "direction",
    "answered",
    "caller_countries",
    "weekdays",
    "time",
)
THEN_KEYS = ("pipeline", "stage", "responsible", "source")
EXCEPTION_KEYS = ("phones", "emails")

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SOURCE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_DAY_NAMES = {
    **{d: i for i, d in enumerate(WEEKDAYS)},
    **{
        full: i
        for i, full in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Ref:
    """A name used somewhere that must be declared somewhere (checked at the end)."""

    kind: str  # "source" | "pipeline" | "stage" | "queue group"
    name: str
    file: str
    line: int
    key: str
    pipeline: str | None = None  # for a stage: the pipeline it must belong to


@dataclass
class Draft:
    """Everything read so far from the files, in order, plus pending references."""

    region: str
    mode: tuple[CrmMode, Where] | None = None
    defaults: dict[str, tuple[Any, Where]] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    numbers_seen: dict[str, tuple[str, Where]] = field(default_factory=dict)
    trunks_seen: dict[str, Where] = field(default_factory=dict)
    queue_groups: dict[str, QueueGroup] = field(default_factory=dict)
    custom_sources: dict[str, Where] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    automation: list[AutomationRule] = field(default_factory=list)
    rule_names: dict[str, Where] = field(default_factory=dict)
    exception_phones: set[str] = field(default_factory=set)
    exception_emails: set[str] = field(default_factory=set)
    refs: list[Ref] = field(default_factory=list)


def read_file(root: yaml.Node | None, r: NodeReader, draft: Draft) -> None:
    """Add one file's sections to ``draft``; mistakes go to ``r.problems``."""
    if root is None:
        return
    entries = r.entries(root, "", "a mapping of sections (mode, defaults, numbers, …)")
    if entries is None:
        return
    r.unknown_keys(entries, "", TOP_LEVEL)
    readers = {
        "mode": _read_mode,
        "defaults": _read_defaults,
        "numbers": _read_numbers,
        "trunks": _read_trunks,
        "queue_groups": _read_queue_groups,
        "sources": _read_sources,
        "pipelines": _read_pipelines,
        "automation": _read_automation,
        "exceptions": _read_exceptions,
    }
    for entry in entries:
        reader = readers.get(entry.key)
        if reader is not None:
            reader(entry, r, draft)


def _read_mode(entry: Entry, r: NodeReader, draft: Draft) -> None:
    value = r.choice(entry.value, "mode", tuple(m.value for m in CrmMode))
    if value is None:
        return
    if draft.mode is not None:
        r.problem(entry.line, "mode", f"already set at {draft.mode[1]}; set it once")
        return
    draft.mode = (CrmMode(value), Where(r.file, entry.line))


def _read_settings(
    entries: list[Entry], path: str, r: NodeReader, draft: Draft
) -> dict[str, tuple[Any, int]]:
    """The per-number settings among ``entries`` (validated), by field name."""
    found: dict[str, tuple[Any, int]] = {}
    for entry in entries:
        key = join(path, entry.key)
        node = entry.value
        value: Any = None
        if entry.key == "unknown_caller":
            text = r.choice(node, key, tuple(s.value for s in UnknownCallerScenario))
            value = UnknownCallerScenario(text) if text else None
        elif entry.key == "create_for":
            text = r.choice(node, key, tuple(c.value for c in CreateFor))
            value = CreateFor(text) if text else None
        elif entry.key == "deal_creation":
            text = r.choice(node, key, tuple(d.value for d in DealCreationMode))
            value = DealCreationMode(text) if text else None
        elif entry.key == "anonymous_callers":
            text = r.choice(node, key, tuple(a.value for a in AnonymousCallers))
            value = AnonymousCallers(text) if text else None
        elif entry.key in ("route_to_responsible", "update_responsible_on_forward"):
            value = r.boolean(node, key)
        elif entry.key == "source":
            value = r.text(node, key)
            if value is not None:
                draft.refs.append(Ref("source", value, r.file, line_of(node), key))
        elif entry.key == "pipeline":
            value = r.text(node, key)
            if value is not None:
                draft.refs.append(Ref("pipeline", value, r.file, line_of(node), key))
        elif entry.key == "queue_group":
            if is_null(node):
                found["queue_group"] = (None, entry.line)  # explicitly none
                continue
            value = r.text(node, key)
            if value is not None:
                draft.refs.append(Ref("queue group", value, r.file, line_of(node), key))
        else:
            continue
        if value is not None:
            found[entry.key] = (value, entry.line)
    return found


def _read_defaults(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "defaults")
    if entries is None:
        return
    r.unknown_keys(entries, "defaults", SETTINGS_KEYS)
    for name, (value, line) in _read_settings(entries, "defaults", r, draft).items():
        if name in draft.defaults:
            first = draft.defaults[name][1]
            r.problem(line, f"defaults.{name}", f"already set at {first}; set it once")
            continue
        draft.defaults[name] = (value, Where(r.file, line))


def _read_override(
    kind: OverrideKind,
    key: str,
    spelled: str,
    line: int,
    node: yaml.Node,
    path: str,
    r: NodeReader,
    draft: Draft,
) -> None:
    entries = r.entries(node, path, "a mapping of settings (source, queue_group, …)")
    if entries is None:
        return
    r.unknown_keys(entries, path, OVERRIDE_KEYS)
    label: str | None = None
    for entry in entries:
        if entry.key == "label":
            label = r.text(entry.value, join(path, "label"))
    settings = _read_settings(entries, path, r, draft)
    draft.overrides.append(
        Override(
            kind=kind,
            key=key,
            spelled=spelled,
            file=r.file,
            line=line,
            label=label,
            values={name: value for name, (value, _) in settings.items()},
            lines={name: ln for name, (_, ln) in settings.items()},
        )
    )


def _read_numbers(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "numbers", "a mapping of DID: settings")
    for item in entries or []:
        path = join("numbers", item.key)
        try:
            e164 = phones.normalize(item.key, draft.region)
        except phones.NotANumber as exc:
            r.problem(item.line, path, f"{item.key!r} is not a phone number: {exc.reason.value}")
            continue
        if e164 in draft.numbers_seen:
            spelled, where = draft.numbers_seen[e164]
            r.problem(
                item.line,
                path,
                f"duplicate number: {spelled!r} at {where} is the same number ({e164})",
            )
            continue
        draft.numbers_seen[e164] = (item.key, Where(r.file, item.line))
        _read_override(OverrideKind.NUMBER, e164, item.key, item.line, item.value, path, r, draft)


def _trunk_name_problem(name: str) -> str | None:
    if "/" in name:
        return (
            "a trunk is named as Asterisk's channel names it, without technology and "
            "sequence: 'trunk' for SIP/trunk-00000003"
        )
    if not _NAME.match(name):
        return "a trunk name has letters, digits, '_', '-' or '.' only"
    return None


def _read_trunks(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "trunks", "a mapping of trunk name: settings")
    for item in entries or []:
        path = join("trunks", item.key)
        reason = _trunk_name_problem(item.key)
        if reason:
            r.problem(item.line, path, reason)
            continue
        if item.key in draft.trunks_seen:
            r.problem(item.line, path, f"duplicate trunk: already at {draft.trunks_seen[item.key]}")
            continue
        draft.trunks_seen[item.key] = Where(r.file, item.line)
        _read_override(
            OverrideKind.TRUNK, item.key, item.key, item.line, item.value, path, r, draft
        )


def _read_queue_groups(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "queue_groups", "a mapping of queue name: [extensions]")
    for item in entries or []:
        path = join("queue_groups", item.key)
        if not _NAME.match(item.key):
            r.problem(item.line, path, "a queue name (as in queues.conf) has no spaces or '/'")
            continue
        if item.key in draft.queue_groups:
            first = draft.queue_groups[item.key]
            r.problem(
                item.line, path, f"duplicate queue group: already at {first.file}:{first.line}"
            )
            continue
        members: list[str] = []
        for ext, line in r.texts(item.value, path, "[201, 202]"):
            if not _NAME.match(ext):
                r.problem(line, path, f"{ext!r} is not an extension (e.g. 201)")
            elif ext in members:
                r.problem(line, path, f"extension {ext} is listed twice")
            else:
                members.append(ext)
        if isinstance(item.value, yaml.SequenceNode) and not item.value.value:
            r.problem(item.line, path, "a queue group needs at least one member extension")
            continue
        draft.queue_groups[item.key] = QueueGroup(item.key, tuple(members), r.file, item.line)


def _read_sources(entry: Entry, r: NodeReader, draft: Draft) -> None:
    for name, line in r.texts(entry.value, "sources", "[RADIO_CAMPAIGN]"):
        if name in STANDARD_SOURCES:
            r.problem(line, "sources", f"{name} is a standard source; declare only custom ones")
        elif not _SOURCE.match(name):
            r.problem(
                line,
                "sources",
                f"{name!r}: a source is an upper-case identifier such as RADIO_CAMPAIGN",
            )
        elif name in draft.custom_sources:
            r.problem(
                line,
                "sources",
                f"custom source {name} declared twice (first at {draft.custom_sources[name]})",
            )
        else:
            draft.custom_sources[name] = Where(r.file, line)


def _read_pipelines(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "pipelines", "a mapping of pipeline: [stages]")
    for item in entries or []:
        path = join("pipelines", item.key)
        if not _NAME.match(item.key):
            r.problem(item.line, path, "a pipeline name has letters, digits, '_', '-' or '.' only")
            continue
        if item.key in draft.pipelines:
            first = draft.pipelines[item.key]
            r.problem(item.line, path, f"duplicate pipeline: already at {first.file}:{first.line}")
            continue
        stages: list[str] = []
        for stage, line in r.texts(item.value, path, "[NEW, IN_PROGRESS, WON, LOSE]"):
            if stage in stages:
                r.problem(line, path, f"stage {stage} is listed twice")
            else:
                stages.append(stage)
        if isinstance(item.value, yaml.SequenceNode) and not item.value.value:
            r.problem(item.line, path, "a pipeline needs at least one stage")
            continue
        if stages:
            draft.pipelines[item.key] = Pipeline(item.key, tuple(stages), r.file, item.line)


def _read_exceptions(entry: Entry, r: NodeReader, draft: Draft) -> None:
    entries = r.entries(entry.value, "exceptions", "a mapping with phones and emails")
    if entries is None:
        return
    r.unknown_keys(entries, "exceptions", EXCEPTION_KEYS)
    for item in entries:
        path = join("exceptions", item.key)
        if item.key == "phones":
            for raw, line in r.texts(item.value, path, "['+34 600 000 000']"):
                try:
                    draft.exception_phones.add(phones.normalize(raw, draft.region))
                except phones.NotANumber as exc:
                    r.problem(line, path, f"{raw!r} is not a phone number: {exc.reason.value}")
        elif item.key == "emails":
            for raw, line in r.texts(item.value, path, "[noreply@example.com]"):
                if _EMAIL.match(raw):
                    draft.exception_emails.add(raw.lower())
                else:
                    r.problem(line, path, f"{raw!r} is not an e-mail address")


def _read_automation(entry: Entry, r: NodeReader, draft: Draft) -> None:
    for index, node in enumerate(r.items(entry.value, "automation", "[{name: …, when: …}]") or []):
        _read_rule(index + 1, node, r, draft)


def _read_rule(index: int, node: yaml.Node, r: NodeReader, draft: Draft) -> None:
    path = f"automation[{index}]"
    entries = r.entries(node, path, "a mapping with name, when and then")
    if entries is None:
        return
    by_key = {e.key: e for e in entries}
    name: str | None = None
    if "name" in by_key:
        name = r.text(by_key["name"].value, f"{path}.name")
    else:
        r.problem(node, path, "a rule needs a name (used in check output and decision reasons)")
    if name is not None:
        path = f"automation[{name}]"
        if name in draft.rule_names:
            r.problem(
                by_key["name"].line,
                path,
                f"duplicate rule name (first at {draft.rule_names[name]})",
            )
        else:
            draft.rule_names[name] = Where(r.file, line_of(node))
    r.unknown_keys(entries, path, RULE_KEYS)
    when = _read_when(by_key.get("when"), path, r, draft)
    then = _read_then(by_key.get("then"), node, path, r, draft)
    if when is None or then is None or name is None:
        return
    draft.automation.append(
        AutomationRule(name=name, file=r.file, line=line_of(node), **when, **then)
    )


def _read_when(
    entry: Entry | None, path: str, r: NodeReader, draft: Draft
) -> dict[str, Any] | None:
    if entry is None:
        return {}
    path = join(path, "when")
    entries = r.entries(entry.value, path, "a mapping of conditions")
    if entries is None:
        return None
    before = len(r.problems)
    r.unknown_keys(entries, path, WHEN_KEYS)
    found: dict[str, Any] = {}
    for item in entries:
        key = join(path, item.key)
        node = item.value
        if isinstance(node, yaml.SequenceNode) and not node.value:
            r.problem(node, key, "an empty list; leave the condition out to accept any value")
        elif item.key == "numbers":
            numbers = set()
            for raw, line in r.texts(node, key, "['911234567']"):
                try:
                    numbers.add(phones.normalize(raw, draft.region))
                except phones.NotANumber as exc:
                    r.problem(line, key, f"{raw!r} is not a phone number: {exc.reason.value}")
            found["numbers"] = frozenset(numbers)
        elif item.key == "trunks":
            trunks = set()
            for name, line in r.texts(node, key, "[trunk]"):
                reason = _trunk_name_problem(name)
                if reason:
                    r.problem(line, key, f"{name!r}: {reason}")
                trunks.add(name)
            found["trunks"] = frozenset(trunks)
        elif item.key == "queues":
            queues = set()
            for name, line in r.texts(node, key, "[sales]"):
                draft.refs.append(Ref("queue group", name, r.file, line, key))
                queues.add(name)
            found["queues"] = frozenset(queues)
        elif item.key == "direction":
            text = r.choice(node, key, tuple(d.value for d in CallDirection))
            if text:
                found["direction"] = CallDirection(text)
        elif item.key == "answered":
            answered = r.boolean(node, key)
            if answered is not None:
                found["answered"] = answered
        elif item.key == "caller_countries":
            countries = set()
            for code, line in r.texts(node, key, "[ES, PT]"):
                if phones.is_valid_region(code) and len(code) == 2:
                    countries.add(code.upper())
                else:
                    r.problem(line, key, f"{code!r} is not a country code (ISO 3166, e.g. ES, PT)")
            found["caller_countries"] = frozenset(countries)
        elif item.key == "weekdays":
            days: set[int] = set()
            for text, line in r.texts(node, key, "[mon-fri, sat]"):
                parsed = _weekdays(text)
                if parsed is None:
                    r.problem(
                        line,
                        key,
                        f"{text!r} is not a weekday (mon, tue, wed, thu, fri, sat, sun, "
                        "or a range such as mon-fri)",
                    )
                else:
                    days |= parsed
            found["weekdays"] = frozenset(days)
        elif item.key == "time":
            text = r.text(node, key)
            if text is not None:
                window, reason = parse_window(text)
                if window is None:
                    r.problem(node, key, reason)
                else:
                    found["time_window"] = window
    return found if len(r.problems) == before else None


def _read_then(
    entry: Entry | None, rule_node: yaml.Node, path: str, r: NodeReader, draft: Draft
) -> dict[str, Any] | None:
    if entry is None:
        r.problem(rule_node, path, "a rule needs 'then' (pipeline, stage, responsible or source)")
        return None
    path = join(path, "then")
    entries = r.entries(entry.value, path, "a mapping of actions")
    if entries is None:
        return None
    before = len(r.problems)
    r.unknown_keys(entries, path, THEN_KEYS)
    found: dict[str, Any] = {}
    for item in entries:
        if item.key in THEN_KEYS:
            value = r.text(item.value, join(path, item.key))
            if value is not None:
                found[item.key] = value
    if len(r.problems) != before:
        return None
    if not found:
        r.problem(entry.line, path, "no action: set pipeline, stage, responsible or source")
        return None
    if "stage" in found and "pipeline" not in found:
        r.problem(
            entry.line,
            join(path, "stage"),
            "a stage belongs to a pipeline: set 'pipeline' in the same rule",
        )
        return None
    lines = {e.key: line_of(e.value) for e in entries}
    if "pipeline" in found:
        draft.refs.append(
            Ref("pipeline", found["pipeline"], r.file, lines["pipeline"], join(path, "pipeline"))
        )
    if "stage" in found:
        draft.refs.append(
            Ref(
                "stage",
                found["stage"],
                r.file,
                lines["stage"],
                join(path, "stage"),
                found["pipeline"],
            )
        )
    if "source" in found:
        draft.refs.append(
            Ref("source", found["source"], r.file, lines["source"], join(path, "source"))
        )
    if "responsible" in found and not _NAME.match(found["responsible"]):
        r.problem(lines["responsible"], join(path, "responsible"), "must be an extension, e.g. 201")
        return None
    return found


def _weekdays(text: str) -> set[int] | None:
    """``mon`` → {0}; ``mon-fri`` → {0..4}; ``fri-mon`` wraps over the weekend."""
    first, dash, last = text.lower().partition("-")
    start = _DAY_NAMES.get(first.strip())
    if start is None:
        return None
    if not dash:
        return {start}
    end = _DAY_NAMES.get(last.strip())
    if end is None:
        return None
    days = {start}
    day = start
    while day != end:
        day = (day + 1) % 7
        days.add(day)
    return days


def parse_window(text: str) -> tuple[TimeWindow | None, str]:
    """``"09:00-18:00"`` → a window; or None and why it is impossible."""
    match = _WINDOW.match(text)
    if match is None:
        return None, f"{text!r} is not a time window; write HH:MM-HH:MM, e.g. 09:00-18:00"
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    for hour, minute in ((h1, m1), (h2, m2)):
        if hour > 23 or minute > 59:
            return None, (
                f"impossible time {hour:02d}:{minute:02d} in {text!r} "
                "(hours 00-23, minutes 00-59; 00:00 is midnight)"
            )
    start, end = time(h1, m1), time(h2, m2)
    if start == end:
        return None, (
            f"impossible time window {text!r}: it starts when it ends; "
            "leave 'time' out to match the whole day"
        )
    return TimeWindow(start, end), ""
