"""Rule sets in words: the ``rules check`` summary and ``rules explain`` for one number.

Pure text building, so the CLI stays a thin shell and tests can read the same
words an admin reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ami_daemon import phones
from ami_daemon.rules.model import (
    SETTING_FIELDS,
    AnonymousCallers,
    CreateFor,
    CrmMode,
    NumberSettings,
    OverrideKind,
    RuleSet,
    UnknownCallerScenario,
)


def behaviour(rules: RuleSet, settings: NumberSettings) -> str:
    """What a number with ``settings`` does, in one sentence (mode-aware)."""
    group = rules.queue_group(settings.queue_group)
    if group is not None:
        who = f"responsible {group.default_responsible} (first of queue group {group.name})"
    else:
        who = "responsible = first agent the call's queue rang"
    if settings.unknown_caller is UnknownCallerScenario.OFFER:
        new = "new callers create nothing (pending call, created by hand)"
    elif rules.mode is CrmMode.CLASSIC:
        new = f"new callers create a lead, source {settings.source}, {who}"
    else:
        pipeline = rules.pipeline(settings.pipeline)
        stage = pipeline.first_stage if pipeline is not None else "?"
        new = (
            f"new callers create a deal in {settings.pipeline}/{stage} with "
            f"{settings.deal_creation.value.replace('_', ' ')}, source {settings.source}, {who}"
        )
    calls = {
        CreateFor.ALL: "incoming and outgoing calls",
        CreateFor.INCOMING: "incoming calls only",
        CreateFor.OUTGOING: "outgoing calls only",
    }[settings.create_for]
    route = (
        "known clients ring their responsible first"
        if settings.route_to_responsible
        else "known clients go straight to the queue"
    )
    forward = (
        "a forwarded new client's lead goes to whoever took it"
        if settings.update_responsible_on_forward
        else "forwarding keeps the responsible"
    )
    anonymous = (
        "anonymous callers create too (without a phone)"
        if settings.anonymous_callers is AnonymousCallers.CREATE
        else "anonymous callers create nothing"
    )
    return f"{new} ({calls}); {anonymous}; {route}; {forward}"


def _changes(rules: RuleSet, values: Mapping[str, Any]) -> str:
    """An override's own settings as ``key=value``, queue groups with their responsible."""
    if not values:
        return "same as defaults"
    parts = []
    for name in SETTING_FIELDS:
        if name not in values:
            continue
        value = values[name]
        text = (
            "yes" if value is True else "no" if value is False else getattr(value, "value", value)
        )
        if name == "queue_group":
            group = rules.queue_group(value)
            text = f"{value} (responsible {group.default_responsible})" if group else "(none)"
        parts.append(f"{name}={text}")
    return ", ".join(parts) + "; the rest inherited"


def summary(rules: RuleSet, timezone: str | None = None) -> list[str]:
    """Short human summary for ``ami-daemon rules check`` (``timezone``: pbx.timezone)."""
    out = [f"rules: {', '.join(rules.files)} (region {rules.region})"]
    if rules.mode is CrmMode.CLASSIC:
        out.append("mode: classic (new callers become leads, converted by hand)")
    else:
        out.append("mode: simple (new callers become deals; leads recorded as converted)")
    out.append(f"defaults: {behaviour(rules, rules.defaults)}")
    for kind, title in ((OverrideKind.NUMBER, "numbers"), (OverrideKind.TRUNK, "trunks")):
        entries = [o for o in rules.overrides if o.kind is kind]
        out.append(f"{title}:" if entries else f"{title}: none (defaults apply)")
        for o in entries:
            label = f" ({o.label})" if o.label else ""
            out.append(f"  {o.key}{label}: {_changes(rules, o.values)}")
    groups = "; ".join(f"{g.name} = {', '.join(g.members)}" for g in rules.queue_groups.values())
    out.append(f"queue groups: {groups or 'none'}")
    custom = ", ".join(rules.custom_sources) or "none"
    out.append(f"sources: {', '.join(rules.sources[:1])} first; custom: {custom}")
    out.append(
        "pipelines: "
        + "; ".join(f"{p.name}: {' > '.join(p.stages)}" for p in rules.pipelines.values())
    )
    used = "" if rules.mode is CrmMode.SIMPLE else ", not used in classic mode"
    if timezone and any(r.time_window or r.weekdays for r in rules.automation):
        used += f"; times in {timezone}"
    if rules.automation:
        out.append(f"automation (new deals, first match wins{used}):")
        for i, rule in enumerate(rules.automation, 1):
            out.append(
                f"  {i}. {rule.name}: when {rule.describe_conditions()} -> "
                f"{rule.describe_actions()} ({rule.file}:{rule.line})"
            )
    else:
        out.append("automation: none (new deals go to their number's pipeline)")
    out.append(
        f"exceptions: {len(rules.exception_phones)} phone(s), "
        f"{len(rules.exception_emails)} e-mail(s) never saved to the CRM"
    )
    return out


@dataclass(frozen=True)
class Target:
    """What ``rules explain`` was asked about: a DID (E.164) and/or a trunk."""

    did: str | None
    trunk: str | None
    note: str = ""


def resolve_target(rules: RuleSet, text: str, trunk: str | None = None) -> Target:
    """Read ``text`` as a declared trunk name, else a DID in any spelling, else a trunk."""
    if rules.trunk_override(text) is not None:
        return Target(None, text)
    try:
        return Target(phones.normalize(text, rules.region), trunk)
    except phones.NotANumber as exc:
        note = f"{text!r} is not a phone number ({exc.reason.value}); read as a trunk name"
        return Target(None, text, note)


def explain(rules: RuleSet, target: Target) -> list[str]:
    """Effective settings of one DID or trunk, each with where it comes from."""
    settings = rules.settings_for(did=target.did, trunk=target.trunk)
    out: list[str] = []
    if target.note:
        out.append(f"note: {target.note}")
    if target.did is not None:
        override = rules.number_override(target.did)
        found = f"override at {override.file}:{override.line}" if override else "no override"
        out.append(f"number {target.did}: {found}")
    if target.trunk is not None:
        override = rules.trunk_override(target.trunk)
        found = f"override at {override.file}:{override.line}" if override else "no override"
        out.append(f"trunk {target.trunk}: {found}")
    elif any(o.kind is OverrideKind.TRUNK for o in rules.overrides):
        out.append("trunk: not given (add --trunk NAME to include a trunk's override)")
    if settings.label:
        out.append(f"label: {settings.label}")
    out.append(f"mode: {rules.mode.value} ({rules.mode_origin})")
    width = max(len(name) for name in SETTING_FIELDS)
    for name in SETTING_FIELDS:
        value = settings.value_text(name)
        if name == "queue_group":
            group = rules.queue_group(settings.queue_group)
            if group is not None:
                value += f" ({', '.join(group.members)})"
        out.append(f"  {name:<{width}}  {value:<16}  {settings.origin_of(name)}")
    out.append(f"in words: {behaviour(rules, settings)}")
    if target.did is not None and rules.is_exception_phone(target.did):
        out.append("exception list: this number is on it; its calls are never saved to the CRM")
    named = [
        r
        for r in rules.automation
        if (target.did is not None and target.did in r.numbers)
        or (target.trunk is not None and target.trunk in r.trunks)
    ]
    for rule in named:
        out.append(f"automation naming it: {rule.name} ({rule.file}:{rule.line})")
    return out
