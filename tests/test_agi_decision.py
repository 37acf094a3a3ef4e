"""The pure decision: request + CRM answer + routing flags → the contract's variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami_daemon.agi.decision import (
    LookupRequest,
    RoutingFlags,
    build_request,
    decide,
    failed,
    safe_extension,
    trunk_name,
)
from ami_daemon.agi.protocol import parse_environment
from ami_daemon.agi.routing import RoutingTable, rules_signature
from ami_daemon.agi.variables import LookupStatus
from ami_daemon.crm.lookup import CrmItem, Employee, PhoneOwner
from ami_daemon.rules.loader import load_rules
from tests.test_agi_helpers import replace_env, trace_sessions

TRUNKS = (re.compile("^SIP/trunk-"), re.compile("^PJSIP/provider-"))
ANA = Employee(1, "Ana", "201", True)
BRUNO = Employee(2, "Bruno", "202", True)
CARLA = Employee(3, "Carla", "203", False)
REQ = LookupRequest("1.1", "600333444", "+34600333444", None, "911234567", "+34911234567", "trunk")


def contact(responsible: Employee | None, name: str = "Marta Ruiz") -> PhoneOwner:
    return PhoneOwner("+34600333444", None, CrmItem("contact", 17, name, responsible, None))


def env(**changes: str):  # type: ignore[no-untyped-def]
    lines = trace_sessions()[1].env_lines
    for key, value in changes.items():
        lines = replace_env(lines, key, value)
    return parse_environment("\n".join(lines) + "\n\n")


def test_request_from_a_recorded_environment() -> None:
    request = build_request(env(), "911234567", "ES", TRUNKS)
    assert request.caller_e164 == "+34600333444"
    assert request.did_e164 == "+34911234567"
    assert request.trunk == "trunk"
    assert request.uniqueid == "1795797202.2"


def test_did_falls_back_to_dnid_then_extension() -> None:
    assert build_request(env(), None, "ES").did_raw == "911234567"
    no_dnid = env(agi_dnid="unknown", agi_extension="930000000")
    assert build_request(no_dnid, "", "ES").did_raw == "930000000"


@pytest.mark.parametrize(
    ("callerid", "pres", "reason"),
    [
        ("anonymous", "0", "anonymous"),
        ("unknown", "0", "unknown"),
        ("201", "0", "extension"),
        ("600333444", "32", "restricted"),  # 0x20: presentation prohibited
        ("600333444", "35", "restricted"),  # 0x23: prohibited, network provided
    ],
)
def test_no_usable_caller_number(callerid: str, pres: str, reason: str) -> None:
    request = build_request(env(agi_callerid=callerid, agi_callingpres=pres), None, "ES")
    assert request.caller_e164 is None
    assert reason in (request.no_number_reason or "")
    decision = decide(request, None, RoutingFlags(True, False))
    assert decision.variables() == (("CRM_KNOWN", "0"), ("CRM_SKIP", "0"), ("CRM_LOOKUP", "ok"))


def test_known_client_with_routing_on() -> None:
    decision = decide(REQ, contact(BRUNO), RoutingFlags(route_to_responsible=True))
    assert decision.variables() == (
        ("CRM_KNOWN", "1"),
        ("CRM_SKIP", "0"),
        ("CRM_ENTITY", "contact:17"),
        ("CRM_RESPONSIBLE_EXT", "202"),
        ("CALLERID(name)", "Marta Ruiz"),
        ("CRM_ROUTE_TO", "202"),
        ("CRM_LOOKUP", "ok"),
    )


def test_known_client_with_routing_off_or_inactive_responsible_is_not_routed() -> None:
    off = dict(decide(REQ, contact(BRUNO), RoutingFlags(False)).variables())
    assert "CRM_ROUTE_TO" not in off and off["CRM_RESPONSIBLE_EXT"] == "202"
    inactive = dict(decide(REQ, contact(CARLA), RoutingFlags(True)).variables())
    assert "CRM_ROUTE_TO" not in inactive and inactive["CRM_RESPONSIBLE_EXT"] == "203"
    nobody = dict(decide(REQ, contact(None), RoutingFlags(True)).variables())
    assert "CRM_ROUTE_TO" not in nobody and "CRM_RESPONSIBLE_EXT" not in nobody
    assert nobody["CRM_KNOWN"] == "1"


def test_an_extension_that_would_change_the_dial_string_is_never_sent() -> None:
    evil = Employee(9, "Eve", "202&PJSIP/0034911000111@provider", True)
    values = dict(decide(REQ, contact(evil), RoutingFlags(True)).variables())
    assert "CRM_ROUTE_TO" not in values and "CRM_RESPONSIBLE_EXT" not in values
    assert safe_extension(" 202 ") == "202" and safe_extension("2,0") is None


def test_employee_number_is_skipped_and_unknown_even_if_a_contact_shares_it() -> None:
    owner = PhoneOwner("+34699000201", ANA, CrmItem("contact", 5, "Ana's flat", BRUNO, None))
    assert decide(REQ, owner, RoutingFlags(True)).variables() == (
        ("CRM_KNOWN", "0"),
        ("CRM_SKIP", "1"),
        ("CRM_LOOKUP", "ok"),
    )


def test_exception_number_is_skipped_but_routed_as_usual() -> None:
    values = dict(decide(REQ, contact(BRUNO), RoutingFlags(True, is_exception=True)).variables())
    assert values["CRM_SKIP"] == "1" and values["CRM_ROUTE_TO"] == "202"
    unknown = PhoneOwner("+34910000000", None, None)
    assert dict(decide(REQ, unknown, RoutingFlags(True, True)).variables()) == {
        "CRM_KNOWN": "0",
        "CRM_SKIP": "1",
        "CRM_LOOKUP": "ok",
    }


def test_caller_name_is_cleaned_and_cut_to_40_characters() -> None:
    name = 'Иван "Петров"\n; EXEC System x and a name that goes on and on'
    values = dict(decide(REQ, contact(BRUNO, name), RoutingFlags()).variables())
    assert values["CALLERID(name)"] == 'Иван "Петров" ; EXEC System x and a name'
    assert len(values["CALLERID(name)"]) == 40


def test_failures_set_only_crm_lookup() -> None:
    assert failed(LookupStatus.TIMEOUT, "slow").variables() == (("CRM_LOOKUP", "timeout"),)
    assert failed(LookupStatus.ERROR, "down").variables() == (("CRM_LOOKUP", "error"),)


def test_trunk_name_only_for_trunk_channels() -> None:
    assert trunk_name("SIP/voipgrid-siproute-docker-00000017", [re.compile("^SIP/voip")]) == (
        "voipgrid-siproute-docker"
    )
    assert trunk_name("PJSIP/provider-0000001e", TRUNKS) == "provider"
    assert trunk_name("SIP/201-00000001", TRUNKS) is None


RULES = """
defaults:
  route_to_responsible: yes
numbers:
  "911234500":
    route_to_responsible: no
  "930000000":
    label: campaign
  "930000001":
    route_to_responsible: yes
trunks:
  other:
    route_to_responsible: no
exceptions:
  phones: ["+34 910 000 000"]
"""


def test_routing_table_agrees_with_the_rule_set_everywhere(tmp_path: Path) -> None:
    (tmp_path / "00.yaml").write_text(RULES)
    rules = load_rules(tmp_path, "ES")
    table = RoutingTable.from_ruleset(rules)
    again = RoutingTable.from_json(table.to_json())
    for did in ("+34911234567", "+34911234500", "+34930000000", "+34930000001", None):
        for trunk in ("trunk", "other", None):
            expected = rules.settings_for(did=did, trunk=trunk).route_to_responsible
            assert table.route_to_responsible(did, trunk) is expected, (did, trunk)
            assert again.route_to_responsible(did, trunk) is expected
    for phone in ("+34910000000", "+34600333444"):
        assert table.is_exception(phone) is rules.is_exception_phone(phone)
    assert again == table


def test_rules_signature_changes_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "00.yaml").write_text(RULES)
    (tmp_path / ".hidden.yaml").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    before = rules_signature(tmp_path)
    assert [entry[0] for entry in before] == ["00.yaml"]
    (tmp_path / "00.yaml").write_text(RULES + "\n# edited\n")
    assert rules_signature(tmp_path) != before
    assert rules_signature(tmp_path / "missing") == []
