"""Anonymous callers: skipped by default, created without a phone when the rules say so."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.crm import manual
from ami_daemon.pipeline import Recorded, process_call
from ami_daemon.rules import AnonymousCallers, RuleSet, try_load_rules
from ami_daemon.rules.actions import CallFacts, CreateLead, CreatePendingCall, CrmOutcome
from ami_daemon.rules.decide import decide
from tests.crm_world import (
    REGION,
    SIMPLE,
    ZONE,
    call,
    counts,
    outbound,
    rules_with,
    seed_lab,
    shipped_rules,
)

CREATE = {"00-crm.yaml": [("  anonymous_callers: skip", "  anonymous_callers: create")]}
ANONYMOUS = {"external_number": None, "call_id": "1795797400.1"}


def with_create(tmp: Path, *more: dict[str, list[tuple[str, str]]]) -> RuleSet:
    edits: dict[str, list[tuple[str, str]]] = {}
    for part in (CREATE, *more):
        for name, pairs in part.items():
            edits.setdefault(name, []).extend(pairs)
    return rules_with(tmp, edits)


def test_shipped_rules_skip_anonymous_callers() -> None:
    rules = shipped_rules()
    assert rules.defaults.anonymous_callers is AnonymousCallers.SKIP
    decision = decide(call(**ANONYMOUS), CallFacts(owner=None), rules, ZONE)
    assert decision.outcome is CrmOutcome.SKIPPED_ANONYMOUS
    assert decision.actions == ()
    assert "anonymous_callers: skip" in decision.reasons[0]


def test_create_makes_a_lead_without_a_phone(tmp_path: Path) -> None:
    decision = decide(call(**ANONYMOUS), CallFacts(owner=None), with_create(tmp_path), ZONE)
    assert decision.outcome is CrmOutcome.LEAD_CREATED
    (lead,) = decision.actions
    assert isinstance(lead, CreateLead)
    assert lead.e164 is None and lead.title.startswith("Call from an anonymous caller on ")
    assert lead.responsible == "201"
    assert "anonymous_callers: create" in decision.reasons[0]


def test_create_with_offer_leaves_a_pending_call_without_a_number(tmp_path: Path) -> None:
    offer = {"00-crm.yaml": [("  unknown_caller: create", "  unknown_caller: offer")]}
    decision = decide(call(**ANONYMOUS), CallFacts(owner=None), with_create(tmp_path, offer), ZONE)
    assert decision.outcome is CrmOutcome.PENDING_MANUAL
    (pending,) = decision.actions
    assert isinstance(pending, CreatePendingCall) and pending.e164 is None


def test_outbound_calls_without_a_number_are_never_created(tmp_path: Path) -> None:
    summary = outbound(external_number=None, call_id="1795797400.2")
    decision = decide(summary, CallFacts(owner=None), with_create(tmp_path), ZONE)
    assert decision.outcome is CrmOutcome.SKIPPED_ANONYMOUS


def test_a_wrong_value_is_reported_with_its_line(tmp_path: Path) -> None:
    edits = {"00-crm.yaml": [("  anonymous_callers: skip", "  anonymous_callers: maybe")]}
    folder = tmp_path / "rules"
    rules_with(tmp_path, {})  # copies the shipped rules to tmp_path/rules
    path = folder / "00-crm.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in edits["00-crm.yaml"]:
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    rules, problems = try_load_rules(folder, REGION)
    assert rules is None
    (problem,) = problems
    assert problem.key == "defaults.anonymous_callers"
    assert problem.line is not None and "maybe" in problem.reason


@pytest_asyncio.fixture
async def lab(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_lab(conn)
    return conn


@pytest.mark.asyncio
async def test_created_lead_and_deal_have_no_phone_rows(
    lab: asyncpg.Connection, tmp_path: Path
) -> None:
    before = await counts(lab)
    done = await process_call(lab, call(**ANONYMOUS), with_create(tmp_path), ZONE)
    assert done.recorded is Recorded.WRITTEN
    assert done.decision.outcome is CrmOutcome.LEAD_CREATED
    after = await counts(lab)
    assert after["leads"] == before["leads"] + 1
    assert after["phones"] == before["phones"]
    title = await lab.fetchval(
        "SELECT title FROM crm.leads WHERE call_id = $1", ANONYMOUS["call_id"]
    )
    assert title.startswith("Call from an anonymous caller")

    simple = with_create(tmp_path, SIMPLE)
    deal_call = call(external_number=None, call_id="1795797400.3")
    done = await process_call(lab, deal_call, simple, ZONE)
    assert done.decision.outcome is CrmOutcome.DEAL_CREATED
    final = await counts(lab)
    assert final["deals"] == after["deals"] + 1
    assert final["phones"] == after["phones"]
    name = await lab.fetchval("SELECT name FROM crm.contacts WHERE call_id = $1", "1795797400.3")
    assert name == "Client (anonymous caller)"


@pytest.mark.asyncio
async def test_pending_anonymous_call_becomes_a_lead_by_hand(
    lab: asyncpg.Connection, tmp_path: Path
) -> None:
    offer = {"00-crm.yaml": [("  unknown_caller: create", "  unknown_caller: offer")]}
    done = await process_call(lab, call(**ANONYMOUS), with_create(tmp_path, offer), ZONE)
    assert done.decision.outcome is CrmOutcome.PENDING_MANUAL
    (pending,) = await manual.list_pending(lab)
    assert pending.e164 is None
    made = await manual.create_from_call(lab, ANONYMOUS["call_id"], manual.CreateAs.LEAD, ZONE)
    assert made.ref.startswith("lead:")
    phones = await lab.fetchval("SELECT count(*) FROM crm.phones WHERE entity_type = 'lead'")
    assert phones == 0
