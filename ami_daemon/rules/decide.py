"""The CRM decision for one finished call: pure, from facts to actions and reasons.

``decide(summary, facts, rules, zone)`` answers the seed's questions in the
order Bitrix24 asks them, and says in words which setting, rule or CRM fact
decided (that text becomes ``crm.calls.crm_reason`` and the dry run's
``reasons``):

1. Internal calls (only employee phones took part) are never CRM material.
2. No outside number: Asterisk reported the caller ID as ``anonymous``, masked
   or not a number, so there is nothing to create or match.
3. A number in an employee's profile (``crm.phones`` of a user) is never saved
   to the CRM (S7); neither is one on the rules' exception list (S6).
4. The number's settings: an inbound call takes its DID's override, then the
   override of the trunk it came in on, then ``defaults:``; an outbound call
   takes its trunk's (S1).
5. A client the CRM knows (contact, then company, then an unconverted lead,
   per DESIGN's precedence) gets the call as an activity on that item and on
   its open deal (S13), whatever ``create_for`` says.  An inbound call nobody
   answered opens a callback task for the client's responsible (B3); any
   answered call with the number closes the open ones.  A transfer never
   changes an existing client's responsible (S11).
6. A new number creates only when ``create_for`` covers the call's direction
   (S8); then ``offer`` leaves a pending call (S4), ``create`` makes a lead in
   classic mode (S2) or a deal (with contact and/or company, lead recorded as
   converted) in simple mode (S3, S12).

What Asterisk counts as answered: for inbound and internal calls an employee
was bridged with the caller; for outbound the far end picked up.  The
tracker's ``status`` already says so (``answered``); anything else is missed
for an inbound call, except an ``interrupted`` call (the daemon lost the AMI
link before the end) in which an answer had already been seen.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from ami_daemon import phones
from ami_daemon.calls.summary import CallStatus, CallSummary, Direction
from ami_daemon.crm.lookup import CrmItem
from ami_daemon.rules.actions import (
    Action,
    ActivityStatus,
    CallFacts,
    CloseCallbackTasks,
    CreateCallbackTask,
    CreateDeal,
    CreateLead,
    CreatePendingCall,
    CrmOutcome,
    Decision,
    LogActivity,
    when_text,
)
from ami_daemon.rules.model import (
    AnonymousCallers,
    AutomationFacts,
    CrmMode,
    DealCreationMode,
    NumberSettings,
    RuleSet,
    UnknownCallerScenario,
    local_time,
)

__all__ = ["decide", "settings_for_call"]


def settings_for_call(summary: CallSummary, rules: RuleSet) -> NumberSettings:
    """The number's settings: inbound by DID then trunk, outbound by its trunk (S1)."""
    if summary.direction is Direction.INBOUND:
        return rules.settings_for(did=summary.did, trunk=summary.trunk)
    return rules.settings_for(trunk=summary.trunk)


def _where(summary: CallSummary) -> str:
    if summary.direction is Direction.INBOUND:
        return f"number {summary.did}" if summary.did else "an unknown number"
    return f"trunk {summary.trunk}" if summary.trunk else "an unknown trunk"


def _setting(settings: NumberSettings, name: str) -> str:
    """``unknown_caller: offer (number override +34911234500 (rules/10-numbers.yaml:12))``."""
    return f"{name}: {settings.value_text(name)} ({settings.origin_of(name)})"


def _answered(summary: CallSummary) -> bool:
    """Someone talked: ``answered``, or ``interrupted`` (the AMI link was lost before the
    end was seen) after an answer had been seen."""
    if summary.status is CallStatus.INTERRUPTED:
        return summary.answered_at is not None or summary.answered_by is not None
    return summary.status is CallStatus.ANSWERED


def _handler(summary: CallSummary) -> str | None:
    """The employee who dealt with the call: who took it last, or who placed it."""
    if summary.direction is Direction.OUTBOUND:
        return summary.caller_extension or summary.final_agent
    return summary.final_agent or summary.answered_by


def _skip(outcome: CrmOutcome, *reasons: str) -> Decision:
    return Decision(outcome, (), tuple(reasons))


def decide(
    summary: CallSummary,
    facts: CallFacts,
    rules: RuleSet,
    zone: tzinfo,
    now: datetime | None = None,
) -> Decision:
    """What the CRM gets for ``summary``; pure (no I/O, no clock unless ``now``).

    ``zone`` is ``pbx.timezone`` (time windows of automation, dates in
    titles); ``now`` dates a call whose capture had no ``Timestamp`` headers.
    """
    if summary.direction is Direction.INTERNAL:
        return _skip(
            CrmOutcome.SKIPPED_INTERNAL,
            "internal call between employees' phones: never saved to the CRM",
        )
    e164 = summary.external_number
    owner = facts.owner
    if e164 is None or owner is None:
        return _anonymous(summary, facts, rules, zone, now)
    if owner.employee is not None:
        emp = owner.employee
        return _skip(
            CrmOutcome.SKIPPED_EMPLOYEE,
            f"{e164} is a personal number of employee {emp.extension} ({emp.name}): "
            "employees' numbers are never saved to the CRM",
        )
    if rules.is_exception_phone(e164):
        return _skip(
            CrmOutcome.SKIPPED_EXCEPTION,
            f"{e164} is on the CRM exception list (exceptions.phones in the rules)",
        )
    settings = settings_for_call(summary, rules)
    moment = summary.started_at or summary.ended_at or now
    local = local_time(moment, zone) if moment is not None else None
    if owner.item is not None:
        return _existing_client(summary, facts, owner.item, settings, rules)
    return _new_caller(summary, facts, e164, settings, rules, local)


def _anonymous(
    summary: CallSummary,
    facts: CallFacts,
    rules: RuleSet,
    zone: tzinfo,
    now: datetime | None,
) -> Decision:
    """No usable outside number: nothing can be matched; created only if the rules say so.

    Asterisk reports a withheld caller ID as ``anonymous`` (or masked digits,
    or nothing usable at all).  An inbound line whose settings say
    ``anonymous_callers: create`` still gets its lead, pending call or deal,
    without a phone; anything else is ``skipped_anonymous``.
    """
    who = "caller" if summary.direction is Direction.INBOUND else "called number"
    no_number = f"the {who} has no usable number (withheld, masked or not a phone number)"
    settings = settings_for_call(summary, rules)
    wanted = settings.anonymous_callers is AnonymousCallers.CREATE
    if summary.direction is not Direction.INBOUND or not wanted:
        return _skip(
            CrmOutcome.SKIPPED_ANONYMOUS,
            f"{no_number}: nothing to create or match ({_setting(settings, 'anonymous_callers')})",
        )
    moment = summary.started_at or summary.ended_at or now
    local = local_time(moment, zone) if moment is not None else None
    decision = _new_caller(summary, facts, None, settings, rules, local)
    reason = (
        f"{no_number}; settings of {_where(summary)}; "
        f"{_setting(settings, 'anonymous_callers')}: created without a phone"
    )
    return Decision(decision.outcome, decision.actions, (reason, *decision.reasons[1:]))


def _close_tasks(summary: CallSummary, facts: CallFacts, e164: str | None) -> list[Action]:
    if e164 is None:
        return []
    if facts.open_task_ids and _answered(summary):
        return [CloseCallbackTasks(e164, facts.open_task_ids)]
    return []


def _close_reason(actions: list[Action], summary: CallSummary) -> list[str]:
    for action in actions:
        if isinstance(action, CloseCallbackTasks):
            ids = ", ".join(f"#{i}" for i in action.task_ids)
            return [
                f"answered {summary.direction.value} call with the number closes callback "
                f"task {ids}"
            ]
    return []


def _existing_client(
    summary: CallSummary,
    facts: CallFacts,
    item: CrmItem,
    settings: NumberSettings,
    rules: RuleSet,
) -> Decision:
    e164 = summary.external_number or ""
    status = ActivityStatus.ANSWERED if _answered(summary) else ActivityStatus.MISSED
    owner_ext = item.responsible.extension if item.responsible else None
    handler = _handler(summary) if status is ActivityStatus.ANSWERED else None
    responsible = handler or owner_ext
    reasons = [
        f"{e164} belongs to {item.ref} ({item.name}) "
        "(precedence: contact, company, unconverted lead)",
    ]
    actions: list[Action] = [LogActivity(item.entity_type, item.entity_id, status, responsible)]
    logged = item.ref
    if item.open_deal_id is not None:
        actions.append(LogActivity("deal", item.open_deal_id, status, responsible))
        logged += f" and its open deal:{item.open_deal_id}"
    reasons.append(f"{status.value} {summary.direction.value} call logged on {logged} (S13)")
    if not settings.create_for.covers(summary.direction.value):
        reasons.append(
            f"{_setting(settings, 'create_for')} creates nothing for {summary.direction.value} "
            "calls, but calls of existing clients are always logged"
        )
    if summary.transfers:
        reasons.append(
            "the call was transferred; the responsible of an existing client never changes "
            "because of a transfer (S11)"
        )
    if summary.direction is Direction.INBOUND and status is ActivityStatus.MISSED:
        if facts.open_task_ids:
            open_ids = ", ".join(f"#{i}" for i in facts.open_task_ids)
            reasons.append(f"missed call: callback task {open_ids} is already open for {e164}")
        else:
            task_for = owner_ext or _default_responsible(summary, settings, rules)[0]
            actions.append(
                CreateCallbackTask(
                    e164,
                    item.entity_type,
                    item.entity_id,
                    task_for,
                    f"Call back {item.name} ({e164}): missed call",
                )
            )
            who = f"employee {task_for}" if task_for else "nobody (no responsible known)"
            reasons.append(f"missed inbound call of a client: callback task for {who} (B3)")
    closing = _close_tasks(summary, facts, e164)
    actions.extend(closing)
    reasons.extend(_close_reason(closing, summary))
    return Decision(CrmOutcome.ACTIVITY_LOGGED, tuple(actions), tuple(reasons))


def _default_responsible(
    summary: CallSummary, settings: NumberSettings, rules: RuleSet
) -> tuple[str | None, str]:
    """Responsible of a new item and why (S10): the queue group's first member.

    An outbound call's new item belongs to the employee who placed it.  For an
    inbound call: the first member of the number's ``queue_group``; without
    one, the first member of the queue group named like the Asterisk queue the
    call went through, else the first agent that queue rang; else whoever
    answered.
    """
    if summary.direction is Direction.OUTBOUND and summary.caller_extension:
        return summary.caller_extension, (
            f"responsible {summary.caller_extension}: the employee who placed the call"
        )
    group = rules.queue_group(settings.queue_group)
    if group is not None and group.default_responsible:
        return group.default_responsible, (
            f"responsible {group.default_responsible}: first member of queue group {group.name} "
            f"({_setting(settings, 'queue_group')}) (S10)"
        )
    call_group = rules.queue_group(summary.queue)
    if call_group is not None and call_group.default_responsible:
        return call_group.default_responsible, (
            f"responsible {call_group.default_responsible}: first member of queue group "
            f"{call_group.name}, the queue the call went through (S10)"
        )
    if summary.queue and summary.agents_rung:
        first = summary.agents_rung[0]
        return first, (
            f"responsible {first}: first agent rung by queue {summary.queue}, which the rules "
            "do not declare as a queue group (S10)"
        )
    taker = summary.answered_by or (summary.agents_rung[0] if summary.agents_rung else None)
    if taker:
        return taker, f"responsible {taker}: no queue group for {_where(summary)}; took the call"
    return None, f"no responsible: no queue group for {_where(summary)} and nobody answered"


def _forwarded_to(summary: CallSummary, settings: NumberSettings) -> tuple[str | None, str | None]:
    """S11: the employee a NEW client's call was forwarded to and who took it."""
    if not summary.transfers or not summary.final_agent or not _answered(summary):
        return None, None
    last = summary.transfers[-1]
    if not settings.update_responsible_on_forward:
        return None, (
            f"the call was transferred to {last.to}, but "
            f"{_setting(settings, 'update_responsible_on_forward')}"
        )
    return summary.final_agent, (
        f"responsible {summary.final_agent}: {last.from_ext or 'an employee'} forwarded the call "
        f"to {last.to} and {summary.final_agent} took it "
        f"({_setting(settings, 'update_responsible_on_forward')}) (S11)"
    )


def _new_caller(
    summary: CallSummary,
    facts: CallFacts,
    e164: str | None,
    settings: NumberSettings,
    rules: RuleSet,
    local: datetime | None,
) -> Decision:
    direction = summary.direction.value
    reasons = [f"{e164} is not in the CRM; settings of {_where(summary)}"]
    if not settings.create_for.covers(direction):
        reasons.append(f"{_setting(settings, 'create_for')}: {direction} calls create nothing")
        return Decision(CrmOutcome.SKIPPED_DIRECTION, (), tuple(reasons))
    closing = _close_tasks(summary, facts, e164)
    if settings.unknown_caller is UnknownCallerScenario.OFFER:
        taker = summary.answered_by or _handler(summary)
        reasons.append(
            f"{_setting(settings, 'unknown_caller')}: the call waits for an employee to create "
            "a lead or contact from it (S4)"
        )
        actions: list[Action] = [CreatePendingCall(e164, summary.did, taker, settings.source)]
        actions.extend(closing)
        reasons.extend(_close_reason(closing, summary))
        return Decision(CrmOutcome.PENDING_MANUAL, tuple(actions), tuple(reasons))

    status = ActivityStatus.ANSWERED if _answered(summary) else ActivityStatus.MISSED
    responsible, why = _default_responsible(summary, settings, rules)
    forwarded, forward_why = _forwarded_to(summary, settings)
    if forwarded is not None:
        responsible, why = forwarded, forward_why or why
    elif forward_why:
        reasons.append(forward_why)
    source = settings.source
    source_why = f"source {source} ({settings.origin_of('source')}) (S9)"
    title = f"Call from {e164 or 'an anonymous caller'} on {when_text(local)}"
    if rules.mode is CrmMode.CLASSIC:
        reasons.append(
            f"mode classic ({rules.mode_origin}), {_setting(settings, 'unknown_caller')}: "
            f"new lead (S2)"
        )
        reasons.extend([source_why, why])
        lead: list[Action] = [CreateLead(title, e164, source, responsible, status)]
        lead.extend(closing)
        reasons.extend(_close_reason(closing, summary))
        return Decision(CrmOutcome.LEAD_CREATED, tuple(lead), tuple(reasons))

    pipeline_name = settings.pipeline
    pipeline = rules.pipeline(pipeline_name)
    stage = pipeline.first_stage if pipeline is not None else "NEW"
    rule_name: str | None = None
    place_why = (
        f"pipeline {pipeline_name}, first stage {stage} ({_setting(settings, 'pipeline')}; "
        "no automation rule matched)"
    )
    if local is not None:
        facts_for_rules = AutomationFacts(
            did=summary.did,
            trunk=summary.trunk,
            queue=summary.queue,
            direction=direction,
            answered=_answered(summary),
            caller_country=phones.country_of(e164) if e164 else None,
            local_time=local,
        )
        rule = rules.first_automation_match(facts_for_rules)
    else:
        rule = None
        place_why += "; the call has no time, so automation was not consulted"
    if rule is not None:
        rule_name = rule.name
        if rule.pipeline is not None:
            pipeline_name = rule.pipeline
            chosen = rules.pipeline(pipeline_name)
            stage = rule.stage or (chosen.first_stage if chosen is not None else "NEW")
        place_why = (
            f"pipeline {pipeline_name}, stage {stage}: automation rule {rule.name} "
            f"({rule.file}:{rule.line}) matched ({rule.describe_conditions()}) (S12)"
        )
        if rule.responsible is not None and forwarded is None:
            responsible = rule.responsible
            why = f"responsible {responsible}: automation rule {rule.name}"
        if rule.source is not None:
            source = rule.source
            source_why = f"source {source}: automation rule {rule.name} (S9)"
    creation = settings.deal_creation
    with_contact = creation in (DealCreationMode.CONTACT, DealCreationMode.CONTACT_AND_COMPANY)
    with_company = creation in (DealCreationMode.COMPANY, DealCreationMode.CONTACT_AND_COMPANY)
    made = " and ".join(
        w for w, on in (("a contact", with_contact), ("a company", with_company)) if on
    )
    reasons.append(
        f"mode simple ({rules.mode_origin}), {_setting(settings, 'unknown_caller')}: new deal "
        f"with {made} ({_setting(settings, 'deal_creation')}); a lead is recorded as "
        "converted (S3)"
    )
    reasons.extend([place_why, source_why, why])
    deal: list[Action] = [
        CreateDeal(
            title,
            e164,
            source,
            responsible,
            pipeline_name,
            stage,
            with_contact,
            with_company,
            status,
            rule_name,
        )
    ]
    deal.extend(closing)
    reasons.extend(_close_reason(closing, summary))
    return Decision(CrmOutcome.DEAL_CREATED, tuple(deal), tuple(reasons))
