"""Every FEATURES row the CRM decisions cover (S1–S13, B3, B5), decided and written to PostgreSQL.

Each test imports the lab's employees and clients (CSV import), runs one or
more call summaries through the same step the daemon runs
(:func:`ami_daemon.pipeline.process_call`) and checks the rows.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.calls.summary import CallStatus, CallSummary
from ami_daemon.crm import manual
from ami_daemon.pipeline import Processed, Recorded, process_call
from ami_daemon.rules import RuleSet
from tests.crm_world import (
    KNOWN_202,
    KNOWN_203,
    MAIN_DID,
    NEW,
    OFFER,
    RADIO_DID,
    SIMPLE,
    SUPPORT_DID,
    ZONE,
    blind,
    call,
    contact_id,
    counts,
    missed,
    outbound,
    rules_with,
    seed_lab,
    shipped_rules,
    user_id,
)


@pytest_asyncio.fixture
async def lab(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_lab(conn)
    return conn


async def run(
    conn: asyncpg.Connection, summary: CallSummary, rules: RuleSet | None = None
) -> Processed:
    done = await process_call(conn, summary, rules or shipped_rules(), ZONE)
    assert done.recorded is Recorded.WRITTEN
    return done


async def call_row(conn: asyncpg.Connection, call_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM crm.calls WHERE pbx = 'main' AND call_id = $1", call_id
    )
    assert row is not None
    return row


async def lead_of(conn: asyncpg.Connection, call_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT l.*, u.extension FROM crm.leads l LEFT JOIN crm.users u ON u.id = l.responsible_id "
        "WHERE l.call_id = $1",
        call_id,
    )
    assert row is not None
    return row


@pytest.mark.asyncio
async def test_s1_per_number_settings(lab: asyncpg.Connection, tmp_path: Path) -> None:
    """S1: each DID (and the trunk, for outbound) has its own settings; defaults otherwise."""
    rules = rules_with(
        tmp_path,
        {"10-numbers.yaml": [("label: Lab carrier", "create_for: incoming\n    label: x")]},
    )
    await run(lab, call(call_id="a", did=SUPPORT_DID, queue="support", answered_by="203"), rules)
    await run(lab, call(call_id="b", external_number="+34600111299", did=RADIO_DID), rules)
    await run(lab, call(call_id="c", external_number="+34600111298", did="+34910999999"), rules)
    await run(lab, outbound(call_id="d", external_number="+34600111297"), rules)
    support, radio, other = [await lead_of(lab, i) for i in "abc"]
    assert (support["extension"], support["source"]) == ("203", "CALL")
    assert (radio["extension"], radio["source"]) == ("201", "RADIO_CAMPAIGN")
    assert other["extension"] == "201"  # an unknown DID: defaults (queue group sales)
    d = await call_row(lab, "d")
    assert d["crm_outcome"] == "skipped_direction" and "trunk override trunk" in d["crm_reason"]


@pytest.mark.asyncio
async def test_s2_classic_lead_then_manual_conversion(lab: asyncpg.Connection) -> None:
    """S2: a new number creates a lead; an employee converts it into contact, company, deal."""
    done = await run(lab, call())
    assert done.decision.outcome.value == "lead_created"
    lead = await lead_of(lab, "1795797192.0")
    assert lead["title"] == "Call from +34600111222 on 2026-11-27 17:33"
    assert lead["status"] == "new"
    assert (
        await lab.fetchval(
            "SELECT count(*) FROM crm.phones "
            "WHERE entity_type = 'lead' AND entity_id = $1 AND e164 = $2",
            lead["id"],
            NEW,
        )
        == 1
    )
    assert (
        await lab.fetchval(
            "SELECT status FROM crm.activities WHERE entity_type = 'lead' AND entity_id = $1",
            lead["id"],
        )
        == "answered"
    )
    # the number's next call is logged on the lead, no second lead
    again = await run(lab, call(call_id="next"))
    assert again.decision.outcome.value == "activity_logged"
    assert await lab.fetchval("SELECT count(*) FROM crm.leads") == 1

    conv = await manual.convert_lead(lab, lead["id"], True, True, "general", "NEW")
    assert conv.company_id is not None and conv.deal_id is not None
    converted = await lab.fetchrow("SELECT * FROM crm.leads WHERE id = $1", lead["id"])
    assert (converted["status"], converted["contact_id"], converted["deal_id"]) == (
        "converted",
        conv.contact_id,
        conv.deal_id,
    )
    # after conversion the number belongs to the contact (and its open deal)
    third = await run(lab, call(call_id="third"))
    assert third.created == (
        f"activity on contact:{conv.contact_id}",
        f"activity on deal:{conv.deal_id}",
    )
    with pytest.raises(manual.ManualError, match="already converted"):
        await manual.convert_lead(lab, lead["id"], False, False, "general", "NEW")


@pytest.mark.asyncio
async def test_s3_simple_mode_deal_contact_and_converted_lead(
    lab: asyncpg.Connection, tmp_path: Path
) -> None:
    """S3: simple mode creates a deal with a contact; the lead is recorded, converted."""
    await run(lab, call(), rules_with(tmp_path, SIMPLE))
    deal = await lab.fetchrow("SELECT * FROM crm.deals WHERE call_id = '1795797192.0'")
    assert (deal["pipeline"], deal["stage"], deal["closed"]) == ("general", "NEW", False)
    assert deal["contact_id"] is not None and deal["company_id"] is None
    lead = await lead_of(lab, "1795797192.0")
    assert (lead["status"], lead["deal_id"], lead["contact_id"]) == (
        "converted",
        deal["id"],
        deal["contact_id"],
    )
    assert await contact_id(lab, NEW) == deal["contact_id"]
    entities = {r["entity_type"] for r in await lab.fetch("SELECT entity_type FROM crm.activities")}
    assert entities == {"deal", "contact"}


@pytest.mark.asyncio
async def test_s4_offer_pending_call_then_contact_by_hand(
    lab: asyncpg.Connection, tmp_path: Path
) -> None:
    """S4: offer creates nothing but a pending call; an employee makes a contact from it."""
    before = await counts(lab)
    await run(
        lab,
        call(did=SUPPORT_DID, answered_by="203", final_agent="203"),
        rules_with(tmp_path, OFFER),
    )
    after = await counts(lab)
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "calls": 1,
        "pending_calls": 1,
    }
    (pending,) = await manual.list_pending(lab)
    assert (pending.e164, pending.did, pending.answered_by) == (NEW, SUPPORT_DID, "203")
    made = await manual.create_from_call(lab, "1795797192.0", manual.CreateAs.CONTACT, ZONE)
    assert made.entity_type == "contact" and not made.already
    again = await manual.create_from_call(lab, "1795797192.0", manual.CreateAs.LEAD, ZONE)
    assert again.already and again.ref == made.ref
    assert await manual.list_pending(lab) == []
    assert await contact_id(lab, NEW) == made.entity_id


@pytest.mark.asyncio
async def test_s5_known_client_facts_for_routing(lab: asyncpg.Connection) -> None:
    """S5: the number routes known clients (route_to_responsible) and the CRM names the
    responsible: the facts the AGI routes on, the same the decision logs with."""
    settings = shipped_rules().settings_for(did=MAIN_DID, trunk="trunk")
    assert settings.route_to_responsible
    done = await run(
        lab,
        call(
            external_number=KNOWN_202,
            answered_by="202",
            final_agent="202",
            agents_rung=("202",),
            queue=None,
        ),
    )
    row = await lab.fetchrow("SELECT entity_type, responsible_id FROM crm.activities")
    assert row["entity_type"] == "contact" and row["responsible_id"] == await user_id(lab, "202")
    assert "contact:" in done.decision.reason_text


@pytest.mark.asyncio
async def test_s6_exception_list(lab: asyncpg.Connection) -> None:
    """S6: a number on the exception list is in the call log, never in the CRM."""
    before = await counts(lab)
    await run(lab, call(external_number="+34910000000"))
    after = await counts(lab)
    assert after["calls"] == before["calls"] + 1
    assert {k: v for k, v in after.items() if k != "calls"} == {
        k: v for k, v in before.items() if k != "calls"
    }
    assert (await call_row(lab, "1795797192.0"))["crm_outcome"] == "skipped_exception"


@pytest.mark.asyncio
async def test_s7_employee_numbers(lab: asyncpg.Connection) -> None:
    """S7: calls from or to an employee's mobile are never saved to the CRM."""
    await run(lab, call(call_id="in", external_number="+34699000201"))
    await run(lab, outbound(call_id="out", external_number="+34699000201"))
    rows = await lab.fetch("SELECT crm_outcome FROM crm.calls ORDER BY call_id")
    assert [r["crm_outcome"] for r in rows] == ["skipped_employee", "skipped_employee"]
    assert await lab.fetchval("SELECT count(*) FROM crm.leads") == 0


@pytest.mark.asyncio
async def test_s8_which_calls_create_records(lab: asyncpg.Connection, tmp_path: Path) -> None:
    """S8: create_for outgoing: inbound new numbers create nothing; outbound ones do."""
    rules = rules_with(tmp_path, {"00-crm.yaml": [("  create_for: all", "  create_for: outgoing")]})
    await run(lab, call(call_id="in"), rules)
    await run(lab, outbound(call_id="out", external_number="+34600111290"), rules)
    await run(lab, call(call_id="client", external_number=KNOWN_203), rules)
    outcomes = {r["call_id"]: r["crm_outcome"] for r in await lab.fetch("SELECT * FROM crm.calls")}
    assert outcomes == {
        "in": "skipped_direction",
        "out": "lead_created",
        "client": "activity_logged",
    }


@pytest.mark.asyncio
async def test_s9_source(lab: asyncpg.Connection) -> None:
    """S9: new items get the number's source: CALL by default, RADIO_CAMPAIGN on 930000000."""
    await run(lab, call(call_id="main"))
    await run(lab, call(call_id="radio", external_number="+34600111299", did=RADIO_DID))
    assert (await lead_of(lab, "main"))["source"] == "CALL"
    assert (await lead_of(lab, "radio"))["source"] == "RADIO_CAMPAIGN"


@pytest.mark.asyncio
async def test_s10_default_responsible_is_first_of_queue_group(lab: asyncpg.Connection) -> None:
    """S10: the lead's responsible is the first employee of the number's queue group, even when
    another agent answered."""
    await run(lab, call(answered_by="202", final_agent="202", agents_rung=("201", "202")))
    assert (await lead_of(lab, "1795797192.0"))["extension"] == "201"


@pytest.mark.asyncio
async def test_s11_forwarding_moves_new_leads_only(lab: asyncpg.Connection) -> None:
    """S11: a forwarded NEW client's lead goes to who took the call; an existing client's
    responsible never changes."""
    forwarded = dict(
        answered_by="201",
        final_agent="202",
        agents_rung=("201", "202"),
        transfers=(blind("201", "202"),),
    )
    await run(lab, call(call_id="new", **forwarded))
    assert (await lead_of(lab, "new"))["extension"] == "202"
    marta = await contact_id(lab, KNOWN_202)
    await run(
        lab, call(call_id="known", external_number=KNOWN_202, **{**forwarded, "final_agent": "203"})
    )
    assert await lab.fetchval("SELECT responsible_id FROM crm.contacts WHERE id = $1", marta) == (
        await user_id(lab, "202")
    )
    assert await lab.fetchval("SELECT count(*) FROM crm.leads") == 1


@pytest.mark.asyncio
async def test_s12_automation_distributes_deals(lab: asyncpg.Connection, tmp_path: Path) -> None:
    """S12: simple mode, automation rules put deals in pipelines by caller country and queue."""
    rules = rules_with(tmp_path, SIMPLE)
    await run(lab, call(call_id="pt", external_number="+351912345678"), rules)
    await run(
        lab,
        call(
            call_id="sup",
            external_number="+34600111291",
            did=SUPPORT_DID,
            queue="support",
            answered_by="203",
            final_agent="203",
        ),
        rules,
    )
    await run(lab, call(call_id="plain", external_number="+34600111292"), rules)
    placed = {
        r["call_id"]: (r["pipeline"], r["stage"])
        for r in await lab.fetch("SELECT * FROM crm.deals")
    }
    assert placed == {
        "pt": ("export", "NEW"),
        "sup": ("support", "NEW"),
        "plain": ("general", "NEW"),
    }
    reason = (await call_row(lab, "pt"))["crm_reason"]
    assert "automation rule foreign-callers" in reason and "20-automation.yaml" in reason


@pytest.mark.asyncio
async def test_s13_existing_client_activity_on_item_and_open_deal(lab: asyncpg.Connection) -> None:
    """S13: an existing client's call is an activity on the contact and on its open deal."""
    marta = await contact_id(lab, KNOWN_202)
    deal = await lab.fetchval(
        "INSERT INTO crm.deals (title, stage, contact_id) VALUES ('Order', 'NEW', $1) RETURNING id",
        marta,
    )
    await lab.execute(
        "INSERT INTO crm.deals (title, stage, contact_id, closed) VALUES ('Old', 'WON', $1, true)",
        marta,
    )
    await run(lab, call(external_number=KNOWN_202, answered_by="202", final_agent="202"))
    rows = await lab.fetch(
        "SELECT entity_type, entity_id, status FROM crm.activities ORDER BY entity_type"
    )
    assert [tuple(r) for r in rows] == [("contact", marta, "answered"), ("deal", deal, "answered")]
    assert await lab.fetchval("SELECT count(*) FROM crm.leads") == 0


@pytest.mark.asyncio
async def test_b3_missed_client_call_opens_task_callback_closes_it(lab: asyncpg.Connection) -> None:
    """B3: a missed call from a client opens a callback task for the responsible; calling back
    (answered) closes it and records the closing call; an unanswered attempt does not."""
    await run(lab, missed(call_id="miss", external_number=KNOWN_202))
    await run(lab, missed(call_id="miss2", external_number=KNOWN_202))
    (task,) = await manual.list_tasks(lab)
    assert (task.status, task.responsible, task.e164, task.call_id) == (
        "open",
        "202",
        KNOWN_202,
        "miss",
    )
    await run(
        lab,
        outbound(
            call_id="busy",
            external_number=KNOWN_202,
            status=CallStatus.BUSY,
            answered_at=None,
            talk_seconds=0,
        ),
    )
    assert [t.status for t in await manual.list_tasks(lab)] == ["open"]
    await run(
        lab,
        outbound(
            call_id="back", external_number=KNOWN_202, caller_extension="202", final_agent="202"
        ),
    )
    (task,) = await manual.list_tasks(lab)
    assert (task.status, task.closed_by) == ("closed", "main/back")
    assert await manual.list_tasks(lab, open_only=True) == []
    statuses = await lab.fetch("SELECT call_id, status FROM crm.activities ORDER BY call_id")
    assert {r["call_id"]: r["status"] for r in statuses} == {
        "back": "answered",
        "busy": "missed",
        "miss": "missed",
        "miss2": "missed",
    }


@pytest.mark.asyncio
async def test_b5_one_number_many_spellings(lab: asyncpg.Connection) -> None:
    """B5: contacts imported as '600 333 444' and '0034600555666' match calls in E.164, and the
    exception list written '+34 910 000 000' matches +34910000000."""
    await run(lab, call(call_id="a", external_number=KNOWN_202))
    await run(lab, call(call_id="b", external_number=KNOWN_203))
    await run(lab, call(call_id="c", external_number="+34910000000"))
    outcomes = {r["call_id"]: r["crm_outcome"] for r in await lab.fetch("SELECT * FROM crm.calls")}
    assert outcomes == {"a": "activity_logged", "b": "activity_logged", "c": "skipped_exception"}
