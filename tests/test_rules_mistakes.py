"""One test per kind of mistake: each names its file, line, key path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_daemon.rules import RuleProblem, try_load_rules


def problems_of(folder: Path, files: dict[str, str], region: str = "ES") -> list[RuleProblem]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    rules, problems = try_load_rules(folder, region)
    assert (rules is None) == bool(problems), "a rule set XOR problems"
    return problems


# (id, yaml text, expected line, expected key path, fragment of the reason)
SINGLE_FILE_MISTAKES = [
    ("unknown top-level key", "mode: classic\nnumberz: {}\n", 2, "numberz", "unknown key"),
    (
        "unknown key in defaults",
        "defaults:\n  source: CALL\n  sorce: WEB\n",
        3,
        "defaults.sorce",
        "unknown key (known keys: unknown_caller",
    ),
    (
        "unknown key in a number",
        "numbers:\n  911234567:\n    colour: red\n",
        3,
        "numbers.911234567.colour",
        "unknown key (known keys: label, ",
    ),
    (
        "unknown condition",
        "automation:\n  - name: a\n    when: {hour: 3}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.hour",
        "unknown key",
    ),
    (
        "unknown action",
        "automation:\n  - name: a\n    then:\n      source: WEB\n      owner: 201\n",
        5,
        "automation[a].then.owner",
        "unknown key",
    ),
    (
        "boolean given as text",
        "defaults:\n  route_to_responsible: 'yes'\n",
        2,
        "defaults.route_to_responsible",
        "must be yes or no",
    ),
    (
        "list expected",
        "queue_groups:\n  sales: 201\n",
        2,
        "queue_groups.sales",
        "must be a list",
    ),
    ("mapping expected", "defaults: [source]\n", 1, "defaults", "must be a mapping, got a list"),
    (
        "text expected",
        "defaults:\n  source: {name: CALL}\n",
        2,
        "defaults.source",
        "must be text, got a mapping",
    ),
    ("file is not a mapping", "- mode: classic\n", 1, "", "must be a mapping of sections"),
    (
        "invalid choice",
        "defaults:\n  unknown_caller: ask\n",
        2,
        "defaults.unknown_caller",
        "must be one of create, offer, got 'ask'",
    ),
    (
        "invalid create_for",
        "trunks:\n  trunk:\n    create_for: both\n",
        3,
        "trunks.trunk.create_for",
        "must be one of incoming, outgoing, all",
    ),
    (
        "invalid deal creation mode",
        "defaults:\n  deal_creation: person\n",
        2,
        "defaults.deal_creation",
        "contact, company, contact_and_company",
    ),
    ("invalid mode", "mode: advanced\n", 1, "mode", "must be one of classic, simple"),
    (
        "unknown source",
        "numbers:\n  911234567:\n    source: RADIO\n",
        3,
        "numbers.911234567.source",
        "unknown source 'RADIO'",
    ),
    (
        "unknown pipeline",
        "defaults:\n  pipeline: wholesale\n",
        2,
        "defaults.pipeline",
        "unknown pipeline 'wholesale' (declared: general)",
    ),
    (
        "unknown stage",
        "pipelines: {export: [NEW, WON]}\n"
        "automation:\n  - name: a\n    then: {pipeline: export, stage: LOST}\n",
        4,
        "automation[a].then.stage",
        "unknown stage 'LOST' of pipeline export (stages: NEW, WON)",
    ),
    (
        "stage without pipeline",
        "automation:\n  - name: a\n    then: {stage: NEW}\n",
        3,
        "automation[a].then.stage",
        "set 'pipeline' in the same rule",
    ),
    (
        "unknown queue group of a number",
        "queue_groups: {sales: [201]}\nnumbers:\n  911234567: {queue_group: support}\n",
        3,
        "numbers.911234567.queue_group",
        "unknown queue group 'support' (declared under queue_groups: sales)",
    ),
    (
        "unknown queue in a condition",
        "automation:\n  - name: a\n    when:\n      queues: [sales]\n    then: {source: WEB}\n",
        4,
        "automation[a].when.queues",
        "unknown queue group 'sales'",
    ),
    (
        "DID that is not a number",
        "numbers:\n  sales-line: {}\n",
        2,
        "numbers.sales-line",
        "'sales-line' is not a phone number: not a phone number",
    ),
    (
        "DID that is an extension",
        "numbers:\n  201: {}\n",
        2,
        "numbers.201",
        "an internal extension, not an outside number",
    ),
    (
        "exception phone that is not a number",
        "exceptions:\n  phones:\n    - '+34 600 000 000'\n    - anonymous\n",
        4,
        "exceptions.phones",
        "'anonymous' is not a phone number: anonymous",
    ),
    (
        "condition number that is not a number",
        "automation:\n  - name: a\n    when: {numbers: ['12x']}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.numbers",
        "is not a phone number",
    ),
    (
        "duplicate number spelled differently",
        "numbers:\n  911234567: {}\n  '+34 911 23 45 67': {}\n",
        3,
        "numbers.+34 911 23 45 67",
        "duplicate number: '911234567' at ",
    ),
    (
        "duplicate YAML key",
        "defaults:\n  source: CALL\n  source: WEB\n",
        3,
        "defaults.source",
        "duplicate key (first at line 2)",
    ),
    (
        "hour out of range",
        "automation:\n  - name: a\n    when: {time: '25:00-06:00'}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.time",
        "impossible time 25:00",
    ),
    (
        "minute out of range",
        "automation:\n  - name: a\n    when: {time: '09:00-17:60'}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.time",
        "impossible time 17:60",
    ),
    (
        "empty time window",
        "automation:\n  - name: a\n    when: {time: '10:00-10:00'}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.time",
        "starts when it ends",
    ),
    (
        "unreadable time window",
        "automation:\n  - name: a\n    when: {time: '9 to 5'}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.time",
        "write HH:MM-HH:MM",
    ),
    (
        "invalid weekday",
        "automation:\n  - name: a\n    when:\n      weekdays: [mon, fry]\n"
        "    then: {source: WEB}\n",
        4,
        "automation[a].when.weekdays",
        "'fry' is not a weekday",
    ),
    (
        "invalid weekday range",
        "automation:\n  - name: a\n    when: {weekdays: [mon-funday]}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.weekdays",
        "'mon-funday' is not a weekday",
    ),
    (
        "empty condition list",
        "automation:\n  - name: a\n    when:\n      weekdays: []\n    then: {source: WEB}\n",
        4,
        "automation[a].when.weekdays",
        "an empty list; leave the condition out",
    ),
    (
        "invalid country",
        "automation:\n  - name: a\n    when: {caller_countries: [ES, XX]}\n"
        "    then: {source: WEB}\n",
        3,
        "automation[a].when.caller_countries",
        "'XX' is not a country code",
    ),
    (
        "invalid direction",
        "automation:\n  - name: a\n    when: {direction: internal}\n    then: {source: WEB}\n",
        3,
        "automation[a].when.direction",
        "must be one of incoming, outgoing",
    ),
    (
        "rule without a name",
        "automation:\n  - then: {source: WEB}\n",
        2,
        "automation[1]",
        "a rule needs a name",
    ),
    (
        "duplicate rule name",
        "automation:\n  - name: a\n    then: {source: WEB}\n  - name: a\n    then: {source: WEB}\n",
        4,
        "automation[a]",
        "duplicate rule name (first at ",
    ),
    (
        "rule without then",
        "automation:\n  - name: a\n    when: {answered: no}\n",
        2,
        "automation[a]",
        "a rule needs 'then'",
    ),
    (
        "rule with an empty then",
        "automation:\n  - name: a\n    then: {}\n",
        3,
        "automation[a].then",
        "no action",
    ),
    (
        "responsible that is not an extension",
        "automation:\n  - name: a\n    then: {responsible: 'Ann Smith'}\n",
        3,
        "automation[a].then.responsible",
        "must be an extension",
    ),
    (
        "standard source declared as custom",
        "sources: [RADIO, CALL]\n",
        1,
        "sources",
        "CALL is a standard source",
    ),
    (
        "custom source declared twice in a file",
        "sources:\n  - RADIO\n  - RADIO\n",
        3,
        "sources",
        "custom source RADIO declared twice (first at ",
    ),
    (
        "custom source badly spelled",
        "sources: ['Radio ad']\n",
        1,
        "sources",
        "upper-case identifier",
    ),
    (
        "trunk given as a channel",
        "trunks:\n  SIP/trunk: {}\n",
        2,
        "trunks.SIP/trunk",
        "'trunk' for SIP/trunk-00000003",
    ),
    (
        "empty queue group",
        "queue_groups:\n  sales: []\n",
        2,
        "queue_groups.sales",
        "at least one member",
    ),
    (
        "member listed twice",
        "queue_groups:\n  sales: [201, 202, 201]\n",
        2,
        "queue_groups.sales",
        "extension 201 is listed twice",
    ),
    (
        "empty pipeline",
        "pipelines:\n  export: []\n",
        2,
        "pipelines.export",
        "at least one stage",
    ),
    (
        "stage listed twice",
        "pipelines:\n  export: [NEW, WON, NEW]\n",
        2,
        "pipelines.export",
        "stage NEW is listed twice",
    ),
    (
        "invalid e-mail",
        "exceptions:\n  emails: [not-an-address]\n",
        2,
        "exceptions.emails",
        "'not-an-address' is not an e-mail address",
    ),
    (
        "unknown exceptions key",
        "exceptions:\n  phone: ['600111222']\n",
        2,
        "exceptions.phone",
        "unknown key (known keys: phones, emails)",
    ),
    (
        "empty text",
        "defaults:\n  source: ''\n",
        2,
        "defaults.source",
        "must not be empty",
    ),
    (
        "YAML syntax error",
        "mode: classic\ndefaults:\n  source: [CALL\n",
        4,
        "",
        "YAML syntax error",
    ),
    (
        "YAML indentation error",
        "defaults:\n  source: CALL\n    pipeline: general\n",
        3,
        "",
        "YAML syntax error: mapping values are not allowed here",
    ),
    (
        "several YAML documents",
        "mode: classic\n---\nmode: simple\n",
        3,
        "",
        "several YAML documents",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [m[1:] for m in SINGLE_FILE_MISTAKES],
    ids=[m[0] for m in SINGLE_FILE_MISTAKES],
)
def test_each_mistake_is_reported_with_file_line_key_and_reason(
    tmp_path: Path, text: str, line: int, key: str, reason: str
) -> None:
    problems = problems_of(tmp_path, {"rules.yaml": text})
    assert len(problems) == 1, [str(p) for p in problems]
    (problem,) = problems
    assert problem.file == str(tmp_path / "rules.yaml")
    assert (problem.line, problem.key) == (line, key)
    assert reason in problem.reason
    expected_start = f"{tmp_path / 'rules.yaml'}:{line}: " + (f"{key}: " if key else "")
    assert str(problem).startswith(expected_start)


def test_duplicate_number_across_files(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "10-sales.yaml": "numbers:\n  '911 234 567': {source: CALL}\n",
            "20-more.yaml": "numbers:\n  sales: {}\n  0034911234567: {source: WEB}\n",
        },
    )
    assert [str(p) for p in problems] == [
        f"{tmp_path / '20-more.yaml'}:2: numbers.sales: "
        "'sales' is not a phone number: not a phone number",
        f"{tmp_path / '20-more.yaml'}:3: numbers.0034911234567: duplicate number: '911 234 567' "
        f"at {tmp_path / '10-sales.yaml'}:2 is the same number (+34911234567)",
    ]


def test_duplicate_declarations_across_files(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "a.yaml": "mode: simple\nsources: [RADIO]\ndefaults: {source: RADIO}\n"
            "queue_groups: {sales: [201]}\npipelines: {export: [NEW]}\ntrunks: {trunk: {}}\n"
            "automation:\n  - {name: r, then: {source: RADIO}}\n",
            "b.yaml": "mode: simple\nsources: [RADIO]\ndefaults: {source: WEB}\n"
            "queue_groups: {sales: [202]}\npipelines: {export: [NEW]}\ntrunks: {trunk: {}}\n"
            "automation:\n  - {name: r, then: {source: RADIO}}\n",
        },
    )
    b = str(tmp_path / "b.yaml")
    assert [(p.file, p.line, p.key) for p in problems] == [
        (b, 1, "mode"),
        (b, 2, "sources"),
        (b, 3, "defaults.source"),
        (b, 4, "queue_groups.sales"),
        (b, 5, "pipelines.export"),
        (b, 6, "trunks.trunk"),
        (b, 8, "automation[r]"),
    ]
    assert all(f"{tmp_path / 'a.yaml'}:" in p.reason for p in problems)


def test_references_may_point_into_other_files(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "10-numbers.yaml": "numbers:\n  911234567: {queue_group: sales, source: RADIO}\n",
            "90-declarations.yaml": "queue_groups: {sales: [201]}\nsources: [RADIO]\n",
        },
    )
    assert problems == []


def test_mistakes_in_several_files_are_all_reported(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        {
            "a.yaml": "mode: [\n",
            "b.yaml": "defaults: {source: NOPE}\n",
            "c.yaml": "trunks: {trunk: {create_for: sometimes}}\n",
        },
    )
    assert [Path(p.file).name for p in problems] == ["a.yaml", "b.yaml", "c.yaml"]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "r.yaml").write_bytes(b"defaults:\n  source: CALL \xff\n")
    (problem,) = problems_of(tmp_path, {})
    assert problem.line is None
    assert "not UTF-8" in problem.reason


@pytest.mark.parametrize(
    ("where", "reason"),
    [("missing", "no such file or folder"), ("empty", "no *.yaml rule files in this folder")],
)
def test_missing_path_or_empty_folder(tmp_path: Path, where: str, reason: str) -> None:
    (tmp_path / "empty").mkdir()
    rules, problems = try_load_rules(tmp_path / where, "ES")
    assert rules is None
    assert [str(p) for p in problems] == [f"{tmp_path / where}: {reason}"]


def test_unknown_region(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, {"r.yaml": "mode: classic\n"}, region="XX")
    assert "unknown region 'XX'" in problems[0].reason


def test_numbers_are_read_in_the_configured_region(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("numbers:\n  '030 1234567': {}\n", encoding="utf-8")
    rules, problems = try_load_rules(tmp_path, "DE")
    assert problems == []
    assert rules is not None
    assert rules.overrides[0].key == "+49301234567"
