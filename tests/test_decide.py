"""The pure CRM decision: (call summary, CRM facts, rules) → outcome, actions, reasons.

No database here: the facts are built by hand.  The same scenarios against
PostgreSQL, with the rows they write, are in test_apply_features.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_daemon.calls.summary import CallStatus, CallSummary, Direction
from ami_daemon.crm.lookup import CrmItem, Employee, PhoneOwner
from ami_daemon.rules import RuleSet
from ami_daemon.rules.actions import (
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
)
from ami_daemon.rules.decide import decide
from tests.crm_world import (
    KNOWN_202,
    NEW,
    OFFER,
    SIMPLE,
    SUPPORT_DID,
    ZONE,
    blind,
    call,
    missed,
    outbound,
    rules_with,
    shipped_rules,
)

BEA = Employee(2, "Bea Agent", "202", True)
ANA = Employee(1, "Ana Agent", "201", True)
MARTA = CrmItem("contact", 17, "Marta Ruiz", BEA, open_deal_id=None)
MARTA_WITH_DEAL = CrmItem("contact", 17, "Marta Ruiz", BEA, open_deal_id=5)


def new_number(e164: str = NEW) -> CallFacts:
    return CallFacts(PhoneOwner(e164, None, None))


def client(item: CrmItem = MARTA, tasks: tuple[int, ...] = ()) -> CallFacts:
    return CallFacts(PhoneOwner(KNOWN_202, None, item), tasks)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return shipped_rules()


def run(summary: CallSummary, facts: CallFacts, rules: RuleSet) -> Decision:
    return decide(summary, facts, rules, ZONE)


SKIPS = [
    (
        "internal",
        call(direction=Direction.INTERNAL, external_number=None, did=None, trunk=None),
        CallFacts(None),
        CrmOutcome.SKIPPED_INTERNAL,
        "internal call",
    ),
    (
        "anonymous",
        call(external_number=None),
        CallFacts(None),
        CrmOutcome.SKIPPED_ANONYMOUS,
        "no usable number",
    ),
    (
        "employee mobile calls in",
        call(external_number="+34699000201"),
        CallFacts(PhoneOwner("+34699000201", ANA, None)),
        CrmOutcome.SKIPPED_EMPLOYEE,
        "personal number of employee 201",
    ),
    (
        "employee mobile called out",
        outbound(external_number="+34699000201"),
        CallFacts(PhoneOwner("+34699000201", ANA, None)),
        CrmOutcome.SKIPPED_EMPLOYEE,
        "personal number of employee 201",
    ),
    (
        "exception list (any spelling in the YAML)",
        call(external_number="+34910000000"),
        new_number("+34910000000"),
        CrmOutcome.SKIPPED_EXCEPTION,
        "exception list",
    ),
]


@pytest.mark.parametrize(
    ("summary", "facts", "outcome", "words"), [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS]
)
def test_skips_write_nothing_but_say_why(
    summary: CallSummary, facts: CallFacts, outcome: CrmOutcome, words: str, rules: RuleSet
) -> None:
    decision = run(summary, facts, rules)
    assert decision.outcome is outcome
    assert decision.actions == ()
    assert words in decision.reason_text


def test_classic_new_caller_lead_with_title_source_and_queue_group_responsible(
    rules: RuleSet,
) -> None:
    decision = run(call(), new_number(), rules)
    assert decision.outcome is CrmOutcome.LEAD_CREATED
    assert decision.actions == (
        CreateLead(
            title="Call from +34600111222 on 2026-11-27 17:33",  # local time, Europe/Madrid
            e164=NEW,
            source="CALL",
            responsible="201",
            activity=ActivityStatus.ANSWERED,
        ),
    )
    text = decision.reason_text
    assert "first member of queue group sales" in text
    assert "10-numbers.yaml" in text  # the number override that set queue_group


def test_support_number_responsible_is_its_queue_group_even_when_nobody_answers(
    rules: RuleSet,
) -> None:
    decision = run(
        missed(did=SUPPORT_DID, queue="support", agents_rung=("203",)), new_number(), rules
    )
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead)
    assert (lead.responsible, lead.activity) == ("203", ActivityStatus.MISSED)


def test_undeclared_queue_gives_its_first_agent_rung(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        {
            "00-crm.yaml": [("  queue_group: sales\n", "")],
            "10-numbers.yaml": [("    queue_group: sales            #", "    #")],
        },
    )
    decision = run(
        call(queue="night", agents_rung=("203", "201"), answered_by="201"), new_number(), rules
    )
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead) and lead.responsible == "203"
    assert "first agent rung by queue night" in decision.reason_text


def test_forwarded_new_client_lead_goes_to_who_took_the_transfer(rules: RuleSet) -> None:
    summary = call(final_agent="202", agents_rung=("201", "202"), transfers=(blind("201", "202"),))
    decision = run(summary, new_number(), rules)
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead) and lead.responsible == "202"
    assert "update_responsible_on_forward: yes" in decision.reason_text


def test_forward_without_the_option_keeps_the_queue_group_responsible(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        {
            "00-crm.yaml": [
                ("update_responsible_on_forward: yes", "update_responsible_on_forward: no")
            ]
        },
    )
    summary = call(final_agent="202", agents_rung=("201", "202"), transfers=(blind("201", "202"),))
    decision = run(summary, new_number(), rules)
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead) and lead.responsible == "201"
    assert "update_responsible_on_forward: no" in decision.reason_text


def test_offer_leaves_a_pending_call_and_nothing_else(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, OFFER)
    decision = run(call(did=SUPPORT_DID, answered_by="203", final_agent="203"), new_number(), rules)
    assert decision.outcome is CrmOutcome.PENDING_MANUAL
    assert decision.actions == (CreatePendingCall(NEW, SUPPORT_DID, "203", "CALL"),)


def test_direction_not_selected_creates_nothing_but_clients_are_still_logged(
    tmp_path: Path,
) -> None:
    rules = rules_with(
        tmp_path,
        {"10-numbers.yaml": [("label: Lab carrier", "create_for: incoming\n    label: x")]},
    )
    skipped = run(outbound(), new_number(), rules)
    assert skipped.outcome is CrmOutcome.SKIPPED_DIRECTION and skipped.actions == ()
    assert "create_for: incoming (trunk override trunk" in skipped.reason_text
    logged = run(outbound(external_number=KNOWN_202), client(), rules)
    assert logged.outcome is CrmOutcome.ACTIVITY_LOGGED
    assert logged.actions == (LogActivity("contact", 17, ActivityStatus.ANSWERED, "201"),)
    assert "always logged" in logged.reason_text


def test_outbound_new_number_lead_belongs_to_the_caller(rules: RuleSet) -> None:
    decision = run(outbound(caller_extension="202", final_agent="202"), new_number(), rules)
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead) and lead.responsible == "202"


def test_existing_client_activity_on_item_and_open_deal_responsible_unchanged(
    rules: RuleSet,
) -> None:
    summary = call(
        external_number=KNOWN_202,
        answered_by="201",
        final_agent="203",
        transfers=(blind("201", "203"),),
    )
    decision = run(summary, client(MARTA_WITH_DEAL), rules)
    assert decision.outcome is CrmOutcome.ACTIVITY_LOGGED
    assert [type(a) for a in decision.actions] == [LogActivity, LogActivity]
    assert {
        (a.entity_type, a.entity_id) for a in decision.actions if isinstance(a, LogActivity)
    } == {
        ("contact", 17),
        ("deal", 5),
    }
    assert "never changes because of a transfer" in decision.reason_text


def test_missed_client_call_opens_a_task_for_the_responsible(rules: RuleSet) -> None:
    decision = run(missed(external_number=KNOWN_202), client(), rules)
    assert decision.actions == (
        LogActivity("contact", 17, ActivityStatus.MISSED, "202"),
        CreateCallbackTask(
            KNOWN_202, "contact", 17, "202", "Call back Marta Ruiz (+34600333444): missed call"
        ),
    )


def test_second_missed_call_does_not_pile_up_tasks(rules: RuleSet) -> None:
    decision = run(missed(external_number=KNOWN_202), client(tasks=(4,)), rules)
    assert not any(isinstance(a, CreateCallbackTask) for a in decision.actions)
    assert "callback task #4 is already open" in decision.reason_text


@pytest.mark.parametrize(
    "summary",
    [call(external_number=KNOWN_202), outbound(external_number=KNOWN_202)],
    ids=["inbound", "outbound"],
)
def test_answered_call_either_direction_closes_open_tasks(
    summary: CallSummary, rules: RuleSet
) -> None:
    decision = run(summary, client(tasks=(4, 9)), rules)
    assert CloseCallbackTasks(KNOWN_202, (4, 9)) in decision.actions


def test_unanswered_callback_attempt_leaves_tasks_open(rules: RuleSet) -> None:
    decision = run(
        outbound(external_number=KNOWN_202, status=CallStatus.BUSY), client(tasks=(4,)), rules
    )
    assert not any(isinstance(a, CloseCallbackTasks) for a in decision.actions)


def test_simple_mode_default_pipeline_first_stage_with_contact(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, SIMPLE)
    decision = run(call(), new_number(), rules)
    assert decision.outcome is CrmOutcome.DEAL_CREATED
    (deal,) = decision.actions
    assert isinstance(deal, CreateDeal)
    assert (deal.pipeline, deal.stage, deal.with_contact, deal.with_company) == (
        "general",
        "NEW",
        True,
        False,
    )
    assert deal.automation_rule is None
    assert "no automation rule matched" in decision.reason_text


@pytest.mark.parametrize(
    ("summary", "pipeline", "stage", "rule"),
    [
        (call(external_number="+351912345678"), "export", "NEW", "foreign-callers"),
        (call(did=SUPPORT_DID, queue="support"), "support", "NEW", "support-queue"),
        # Friday 21:30 in Madrid = 20:30 UTC, missed: after hours, responsible 201
        (
            missed(started_at=call().started_at.replace(hour=20, minute=30)),  # type: ignore[union-attr]
            "general",
            "NEW",
            "missed-after-hours",
        ),
    ],
    ids=["caller-country", "queue", "time-window"],
)
def test_simple_mode_automation_places_the_deal(
    summary: CallSummary, pipeline: str, stage: str, rule: str, tmp_path: Path
) -> None:
    rules = rules_with(tmp_path, SIMPLE)
    decision = run(summary, new_number(summary.external_number or ""), rules)
    (deal,) = decision.actions
    assert isinstance(deal, CreateDeal)
    assert (deal.pipeline, deal.stage, deal.automation_rule) == (pipeline, stage, rule)
    assert f"automation rule {rule}" in decision.reason_text
    if rule == "missed-after-hours":
        assert deal.responsible == "201"


def test_simple_mode_creation_mode_company_and_contact(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        {
            **SIMPLE,
            "10-numbers.yaml": [
                (
                    "    label: Main sales line",
                    "    label: Main sales line\n    deal_creation: contact_and_company",
                )
            ],
        },
    )
    (deal,) = run(call(), new_number(), rules).actions
    assert isinstance(deal, CreateDeal) and deal.with_contact and deal.with_company


def test_classic_mode_ignores_automation(rules: RuleSet) -> None:
    decision = run(call(external_number="+351912345678"), new_number("+351912345678"), rules)
    assert decision.outcome is CrmOutcome.LEAD_CREATED
    assert "automation" not in decision.reason_text


def test_call_without_times_is_dated_by_now(rules: RuleSet) -> None:
    from datetime import UTC, datetime

    summary = call(started_at=None, answered_at=None, ended_at=None, talk_seconds=None)
    decision = decide(
        summary, new_number(), rules, ZONE, now=datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    )
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead) and lead.title.endswith("on 2026-01-02 09:00")


def test_dry_run_json_names_every_action_type(rules: RuleSet) -> None:
    out = run(missed(external_number=KNOWN_202), client(MARTA_WITH_DEAL), rules).to_json_dict()
    assert out["outcome"] == "activity_logged"
    assert [a["type"] for a in out["actions"]] == [
        "log_activity",
        "log_activity",
        "create_callback_task",
    ]
    assert out["actions"][0] == {
        "type": "log_activity",
        "entity_type": "contact",
        "entity_id": 17,
        "status": "missed",
        "responsible": "202",
    }


def test_interrupted_call_counts_as_answered_only_if_an_answer_was_seen(rules: RuleSet) -> None:
    talked = call(external_number=KNOWN_202, status=CallStatus.INTERRUPTED)
    (act,) = run(talked, client(), rules).actions
    assert isinstance(act, LogActivity) and act.status is ActivityStatus.ANSWERED
    lost = missed(external_number=KNOWN_202, status=CallStatus.INTERRUPTED)
    assert [type(a) for a in run(lost, client(), rules).actions] == [
        LogActivity,
        CreateCallbackTask,
    ]
