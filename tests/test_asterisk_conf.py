"""asterisk-conf/: the dialplan passes asterisklint and agrees with the code's names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ami_daemon import phones
from ami_daemon.agi import variables as v
from ami_daemon.config import PbxConfig
from ami_daemon.rules.loader import default_rules_path, load_rules
from tests.paths import REPO

CONF = REPO / "asterisk-conf"
LINT = Path(sys.executable).parent / "asterisklint"
EXTENSIONS = (CONF / "extensions.conf").read_text(encoding="utf-8")
_SECTION = re.compile(r"\[([^\]]+)\](?:\((!|[^)]*)\))?\Z")
_KEY = re.compile(r"([A-Za-z0-9_.-]+)\s*=>?\s*(.*)\Z")


def active_lines(text: str) -> list[str]:
    """Lines without comments (``;`` to the end) and blank lines."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


Section = tuple[str, str | None, list[tuple[str, str]]]


def parse_ini(path: Path) -> list[Section]:
    """Asterisk's config format: ``[section](template)`` then ``key = value`` / ``key => value``."""
    sections: list[Section] = []
    for line in active_lines(path.read_text(encoding="utf-8")):
        section = _SECTION.match(line)
        if section is not None:
            sections.append((section.group(1), section.group(2), []))
            continue
        key = _KEY.match(line)
        assert key is not None, f"{path.name}: not a section or a key: {line!r}"
        assert sections, f"{path.name}: key before any section: {line!r}"
        sections[-1][2].append((key.group(1), key.group(2).strip()))
    return sections


def section(path: Path, name: str) -> dict[str, list[str]]:
    """Every key of ``[name]`` (all its blocks), with what its templates ``(tpl)`` give first."""
    sections = parse_ini(path)
    merged: dict[str, list[str]] = {}
    for found, template, keys in sections:
        if found != name:
            continue
        if template and template != "!":
            for tpl_name, _, tpl_keys in sections:
                if tpl_name == template:
                    for key, value in tpl_keys:
                        merged[key] = [value]
        for key, value in keys:
            merged.setdefault(key, []).append(value)
    assert merged, f"{path.name}: no [{name}]"
    return merged


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "dialplan-check", str(path)], capture_output=True, text=True, timeout=60
    )


def test_extensions_conf_passes_asterisklint() -> None:
    result = lint(CONF / "extensions.conf")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_asterisklint_does_catch_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "extensions.conf"
    broken.write_text(EXTENSIONS.replace("Goto(crm-route,", "Goto(crm-rout,", 1))
    result = lint(broken)
    assert result.returncode == 1 and "crm-rout" in result.stdout + result.stderr


def test_crm_variables_are_exactly_the_contract_module() -> None:
    used = set(re.findall(r"(?<![A-Z0-9])CRM_[A-Z_]+", "\n".join(active_lines(EXTENSIONS))))
    assert used == set(v.CRM_VARIABLES)
    assert "${CALLERID(name)}" in EXTENSIONS
    assert f"Set(__{v.CRM_DID}=${{EXTEN}})" in EXTENSIONS  # DESIGN: set before the lookup


def test_contexts_are_exactly_the_contract_module_and_every_goto_lands() -> None:
    defined = {m for m in re.findall(r"^\[([^\]]+)\]", EXTENSIONS, re.M)}
    assert defined - {"general", "globals"} == set(v.CONTEXTS)
    for target in re.findall(r"Goto\(([a-z-]+),", EXTENSIONS):
        assert target in defined


def test_lookup_urls_and_the_order_of_the_route() -> None:
    lines = active_lines(EXTENSIONS)
    url = f"agi://127.0.0.1:{v.FASTAGI_PORT}/{v.SCRIPT_CRM_LOOKUP}"
    agi = [i for i, line in enumerate(lines) if f"AGI({url})" in line]
    did = [i for i, line in enumerate(lines) if "Set(__CRM_DID=" in line]
    route = [i for i, line in enumerate(lines) if "Dial(PJSIP/${CRM_ROUTE_TO}," in line]
    queue = [i for i, line in enumerate(lines) if "Queue(${CRM_QUEUE}" in line]
    assert len(agi) == len(did) == len(route) == len(queue) == 1
    assert did[0] < agi[0] < route[0] < queue[0]
    assert "AGI(/opt/ami-daemon/.venv/bin/ami-daemon-agi," in EXTENSIONS  # classic, commented
    assert "CRM_SKIP}" not in " ".join(x for x in lines if "GotoIf" in x)  # skip never routes


def test_queues_match_the_dialplan_and_the_shipped_rules() -> None:
    queues = {name for name, _, _ in parse_ini(CONF / "queues.conf")} - {"general"}
    dialplan_queues = set(re.findall(r"Set\(CRM_QUEUE=([a-z]+)\)", EXTENSIONS))
    assert dialplan_queues <= queues
    rules = load_rules(default_rules_path(), "ES")
    assert set(rules.queue_groups) <= queues
    for name, group in rules.queue_groups.items():
        members = section(CONF / "queues.conf", name)["member"]
        assert [m.split(",")[0] for m in members] == [f"PJSIP/{ext}" for ext in group.members]


def test_manager_user_has_least_privilege() -> None:
    user = section(CONF / "manager.conf", "ami-daemon")
    assert user["read"] == ["call,agent"]
    assert set(user["write"][0].split(",")) == {"reporting", "originate"}
    assert user["permit"] == ["127.0.0.1/255.255.255.255"]
    assert section(CONF / "manager.conf", "general")["bindaddr"] == ["127.0.0.1"]


def test_endpoints_land_in_the_contexts_and_match_the_default_channel_patterns() -> None:
    pbx = PbxConfig()
    provider = section(CONF / "pjsip.conf", "provider")
    assert provider["context"] == [v.CONTEXT_INBOUND]
    assert any(p.search("PJSIP/provider-0000001f") for p in pbx.trunk_channels)
    for ext in ("201", "202", "203"):
        assert section(CONF / "pjsip.conf", ext)["context"] == [v.CONTEXT_INTERNAL]
        match = pbx.employee_channels.search(f"PJSIP/{ext}-0000002a")
        assert match is not None and match.group("peer") == ext
    trunk = section(CONF / "sip.conf", "trunk")
    assert trunk["context"] == [v.CONTEXT_INBOUND]
    assert any(p.search("SIP/trunk-0000001e") for p in pbx.trunk_channels)
    assert section(CONF / "sip.conf", "phone")["context"] == [v.CONTEXT_INTERNAL]


@pytest.mark.parametrize("name", ["manager.conf", "queues.conf", "pjsip.conf", "sip.conf"])
def test_other_files_parse_as_asterisk_config(name: str) -> None:
    sections = parse_ini(CONF / name)
    assert sections
    assert all(keys or template for _, template, keys in sections)


def asterisk_pattern(pattern: str) -> re.Pattern[str]:
    """An extension pattern (``_[1-8]XX``, ``_XXXXXX.``) as a regex, as pbx.c matches it."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern) + r"\Z")
    out = ""
    rest = pattern[1:]
    while rest:
        ch, rest = rest[0], rest[1:]
        if ch == "[":
            inside, rest = rest.split("]", 1)
            out += f"[{inside}]"
        else:
            out += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
                ch, re.escape(ch)
            )
    return re.compile(out + r"\Z")


def context_patterns(name: str) -> list[re.Pattern[str]]:
    body = EXTENSIONS.split(f"[{name}]", 1)[1].split("\n[", 1)[0]
    return [asterisk_pattern(p) for p in re.findall(r"^exten => ([^,]+),1,", body, re.M)]


@pytest.mark.parametrize(
    ("dialled", "internal"),
    [
        ("201", True),
        ("899", True),
        ("6001112", False),
        ("600111222", False),
        ("0034911000111", False),
    ],
)
def test_phones_dial_extensions_inside_and_numbers_outside(dialled: str, internal: bool) -> None:
    """Seven digits or more leave through the trunk: what ami_daemon.phones calls a number."""
    extension, outside = context_patterns(v.CONTEXT_INTERNAL)
    assert bool(extension.match(dialled)) is internal
    assert bool(outside.match(dialled)) is (not internal)
    assert phones.is_extension(dialled) is internal
    assert any(p.match(dialled) for p in context_patterns(v.CONTEXT_OUTBOUND)) is (not internal)
