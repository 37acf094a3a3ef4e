"""Loading the rules YAML: the shipped set, merging files, overrides, reload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami_daemon.rules import (
    CreateFor,
    CrmMode,
    DealCreationMode,
    Origin,
    RulesError,
    RulesSource,
    UnknownCallerScenario,
    default_rules_path,
    load_rules,
    try_load_rules,
)
from ami_daemon.rules.model import GENERAL_STAGES, STANDARD_SOURCES
from tests.paths import REPO, TRACES

FIXTURES = Path(__file__).parent / "rules_fixtures"
LAB_CONF = TRACES / "asterisk20" / "lab-conf"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def lab_queues() -> dict[str, list[str]]:
    """Queue name → member extensions, in order, from the lab's queues.conf."""
    queues: dict[str, list[str]] = {}
    current = None
    for line in (LAB_CONF / "queues.conf").read_text().splitlines():
        header = re.match(r"^\[([^\]]+)\](?!\(!\))", line)
        if header:
            current = header.group(1)
            continue
        member = re.match(r"^member\s*=>\s*SIP/(\w+)", line)
        if member and current:
            queues.setdefault(current, []).append(member.group(1))
    return queues


# ---------------------------------------------------------------- the shipped set


def test_default_rules_path_is_the_shipped_folder() -> None:
    assert default_rules_path() == REPO / "rules"
    assert sorted(p.name for p in default_rules_path().glob("*.yaml")) == [
        "00-crm.yaml",
        "10-numbers.yaml",
        "20-automation.yaml",
        "30-exceptions.yaml",
    ]


def test_shipped_rules_load_and_fit_the_lab_pbx() -> None:
    rules = load_rules(default_rules_path(), "ES")
    assert rules.mode is CrmMode.CLASSIC
    sales = rules.settings_for(did="911234567", trunk="trunk")
    assert (sales.queue_group, sales.source, sales.label) == ("sales", "CALL", "Main sales line")
    support = rules.settings_for(did="+34911234500", trunk="trunk")
    assert support.queue_group == "support"
    second = rules.settings_for(did="930000000")
    assert (second.queue_group, second.source) == ("sales", "RADIO_CAMPAIGN")
    outbound = rules.settings_for(trunk="trunk")
    assert outbound.label == "Lab carrier"
    assert outbound.create_for is CreateFor.ALL
    # queue groups are the lab's queues.conf, members in order (first = default responsible)
    assert {n: list(g.members) for n, g in rules.queue_groups.items()} == lab_queues()
    assert rules.queue_group("sales") is not None
    assert rules.queue_group("sales").default_responsible == "201"  # type: ignore[union-attr]
    # employee 201's mobile is a CRM users row, not a rule and not an exception
    assert not rules.is_exception_phone("+34699000201")
    assert all("699000201" not in o.key for o in rules.overrides)
    # no lab caller is on the exception list
    for caller in ("+34600111222", "+34600111223", "+34600333444", "+34911000111"):
        assert not rules.is_exception_phone(caller)
    assert rules.sources[0] == "CALL"
    assert set(STANDARD_SOURCES) < set(rules.sources)
    assert [r.name for r in rules.automation] == [
        "foreign-callers",
        "support-queue",
        "missed-after-hours",
    ]


def test_shipped_rules_every_key_is_commented() -> None:
    """The admin reads the files: every setting line has a comment above or beside it."""
    text = (default_rules_path() / "00-crm.yaml").read_text()
    for key in ("unknown_caller", "create_for", "route_to_responsible", "deal_creation"):
        before = text.split(f"  {key}:")[0].rstrip().splitlines()[-1]
        assert before.lstrip().startswith("#"), key


# ---------------------------------------------------------------- merging and overrides


def test_a_did_spelled_three_ways_is_one_number(tmp_path: Path) -> None:
    write(
        tmp_path,
        "rules.yaml",
        """
queue_groups: {support: ['203']}
numbers:
  "0034 911 23 45 00":
    queue_group: support
""",
    )
    rules = load_rules(tmp_path, "ES")
    (override,) = rules.overrides
    assert override.key == "+34911234500"
    for spelling in ("911234500", "+34911234500", "0034911234500", "+34 911-23-45-00"):
        assert rules.settings_for(did=spelling).queue_group == "support", spelling
    assert rules.settings_for(did="911234567").queue_group is None


def test_settings_layer_number_over_trunk_over_defaults_over_builtin(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
defaults:
  source: WEB
  create_for: incoming
trunks:
  carrier:
    source: PARTNER
    unknown_caller: offer
""",
    )
    write(
        tmp_path,
        "b.yaml",
        """
numbers:
  911234567:
    source: ADVERTISING
""",
    )
    rules = load_rules(tmp_path, "ES")
    s = rules.settings_for(did="911234567", trunk="carrier")
    assert s.source == "ADVERTISING"
    assert s.origin_of("source").origin is Origin.NUMBER
    assert (s.origin_of("source").file, s.origin_of("source").line) == (str(tmp_path / "b.yaml"), 4)
    assert s.unknown_caller is UnknownCallerScenario.OFFER
    assert s.origin_of("unknown_caller").origin is Origin.TRUNK
    assert s.create_for is CreateFor.INCOMING
    assert s.origin_of("create_for").origin is Origin.DEFAULTS
    assert s.deal_creation is DealCreationMode.CONTACT
    assert s.origin_of("deal_creation").origin is Origin.BUILTIN
    # an outbound call passes only its trunk
    assert rules.settings_for(trunk="carrier").source == "PARTNER"
    # unknown numbers and trunks get the defaults
    assert rules.settings_for(did="600111222", trunk="other").source == "WEB"
    assert rules.settings_for().source == "WEB"


def test_files_merge_in_name_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        "20-late.yaml",
        """
automation:
  - name: second
    then: {source: RADIO}
""",
    )
    write(
        tmp_path,
        "10-early.yaml",
        """
mode: simple
sources: [RADIO]
pipelines: {export: [NEW, WON]}
automation:
  - name: first
    when: {caller_countries: [pt]}
    then: {pipeline: export, stage: WON}
""",
    )
    write(tmp_path, "notes.txt", "not yaml: [")
    write(tmp_path, ".#10-early.yaml", "editor lock file: [")
    rules = load_rules(tmp_path, "ES")
    assert rules.mode is CrmMode.SIMPLE
    assert [r.name for r in rules.automation] == ["first", "second"]
    assert rules.automation[0].caller_countries == frozenset({"PT"})
    assert rules.pipelines["general"].stages == GENERAL_STAGES
    assert rules.pipelines["export"].first_stage == "NEW"
    assert rules.sources[-1] == "RADIO"
    assert rules.files == (str(tmp_path / "10-early.yaml"), str(tmp_path / "20-late.yaml"))


def test_one_file_may_be_loaded_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "only.yml", "mode: simple\n")
    assert load_rules(path, "ES").mode is CrmMode.SIMPLE


def test_empty_and_all_commented_files_give_builtin_defaults(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "")
    write(tmp_path, "b.yaml", "# nothing yet\n")
    rules = load_rules(tmp_path, "ES")
    assert rules.mode is CrmMode.CLASSIC
    assert rules.defaults.source == "CALL"
    assert rules.pipelines["general"].stages[0] == "NEW"


def test_yaml_quirks_do_not_leak(tmp_path: Path) -> None:
    """YAML 1.1 reads 0034600123456 as octal and 22:00 as 79200: we read the raw text."""
    write(
        tmp_path,
        "r.yaml",
        """
queue_groups: {sales: [0201, 202]}
exceptions:
  phones: [0034600123456, 600 765 432]
  emails: [NoReply@Example.COM]
automation:
  - name: night
    when: {time: 22:00-06:00}
    then: {responsible: 0201}
""",
    )
    rules = load_rules(tmp_path, "ES")
    assert rules.queue_groups["sales"].members == ("0201", "202")
    assert rules.exception_phones == {"+34600123456", "+34600765432"}
    assert rules.is_exception_phone("600 12 34 56")
    assert rules.is_exception_email("noreply@example.com")
    assert rules.automation[0].responsible == "0201"
    assert str(rules.automation[0].time_window) == "22:00-06:00"


def test_rule_set_is_immutable() -> None:
    rules = load_rules(default_rules_path(), "ES")
    with pytest.raises(AttributeError):
        rules.mode = CrmMode.SIMPLE  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.queue_groups["x"] = rules.queue_groups["sales"]  # type: ignore[index]


# ---------------------------------------------------------------- never half a rule set


def test_load_rules_raises_with_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "mode: weird\ndefaults: {source: NOPE}\n")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, "ES")
    assert [p.line for p in info.value.errors] == [1, 2]
    assert str(info.value).splitlines()[0].startswith(f"{tmp_path / 'a.yaml'}:1: mode: ")


def test_reload_of_a_broken_file_keeps_the_previous_rules(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "numbers: {911234567: {source: WEB}}\n")
    source = RulesSource(tmp_path, "ES")
    first = source.load()
    assert first.settings_for(did="911234567").source == "WEB"

    path.write_text("numbers: {911234567: {source: NOPE}}\nmode: [\n", encoding="utf-8")
    problems = source.reload()
    assert problems, "a broken file must be reported"
    assert all(p.file == str(path) for p in problems)
    assert source.current is first
    assert source.current.settings_for(did="911234567").source == "WEB"

    path.write_text("numbers: {911234567: {source: EMAIL}}\n", encoding="utf-8")
    assert source.reload() == []
    assert source.current is not first
    assert source.current.settings_for(did="911234567").source == "EMAIL"


def test_try_load_rules_returns_none_and_problems(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", "numbers: {911234567: {source: NOPE}}\nmode: simple\n")
    rules, problems = try_load_rules(tmp_path, "ES")
    assert rules is None
    assert len(problems) == 1


def test_rules_source_before_load_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not loaded"):
        _ = RulesSource(tmp_path, "ES").current


def test_fixture_with_five_mistakes_reports_all_five_with_lines() -> None:
    path = FIXTURES / "five_mistakes.yaml"
    rules, problems = try_load_rules(path, "ES")
    assert rules is None
    got = [(p.line, p.key) for p in problems]
    assert got == [
        (4, "defaults.colour"),
        (5, "defaults.route_to_responsible"),
        (10, "numbers.anonymous"),
        (18, "automation[night].when.time"),
        (20, "automation[night].then.source"),
    ]
    assert all(p.file == str(path) for p in problems)
    text = [str(p) for p in problems]
    assert text[0] == f"{path}:4: defaults.colour: unknown key (known keys: " + (
        "unknown_caller, create_for, source, route_to_responsible, "
        "update_responsible_on_forward, queue_group, pipeline, deal_creation, anonymous_callers)"
    )
    assert "impossible time 25:00" in text[3]
    assert "unknown source 'RADIO'" in text[4]


def test_yaml_anchors_and_merge_keys_share_settings(tmp_path: Path) -> None:
    write(
        tmp_path,
        "r.yaml",
        """
queue_groups: {sales: [201], support: [203]}
numbers:
  911234567: &sales_line
    queue_group: sales
    source: ADVERTISING
  930000000:
    <<: *sales_line
    source: PARTNER
""",
    )
    rules = load_rules(tmp_path, "ES")
    second = rules.settings_for(did="930000000")
    assert (second.queue_group, second.source) == ("sales", "PARTNER")
    assert second.origin_of("queue_group").line == 5  # where the shared value is written
    assert second.origin_of("source").line == 9


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Rules (`rules/*.yaml`)", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = load_rules(write(tmp_path, "example.yaml", example), "ES")
    assert rules.settings_for(did="+34911234500", trunk="trunk").label == "Support line"
    assert rules.automation[0].name == "missed-after-hours"
