"""No mistake in a rules file may raise: every mutation of the shipped files loads or reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami_daemon.rules import default_rules_path, try_load_rules

SHIPPED = sorted(default_rules_path().glob("*.yaml"))
VARIANTS = ("[]", "{}", "", "[[1]]", "~", "yes", "'x'", "{a: [b]}", "-1", "&x [*x]", "'22:00'")
_VALUE = re.compile(r"^(\s*(?:- )?[\w\"'+ ]+:\s|\s*- )(.+)$")


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_value_replaced_by_a_wrong_one_never_raises(tmp_path: Path, shipped: Path) -> None:
    lines = shipped.read_text(encoding="utf-8").splitlines()
    target = tmp_path / shipped.name
    tried = 0
    for index, line in enumerate(lines):
        match = _VALUE.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        for variant in VARIANTS:
            mutated = [*lines[:index], match.group(1) + variant, *lines[index + 1 :]]
            target.write_text("\n".join(mutated) + "\n", encoding="utf-8")
            rules, problems = try_load_rules(target, "ES")
            assert (rules is None) == bool(problems)
            for problem in problems:
                assert problem.file == str(target)
                assert problem.line is None or 1 <= problem.line <= len(mutated) + 1
            tried += 1
    assert tried > 10


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_truncation_never_raises(tmp_path: Path, shipped: Path) -> None:
    """Cut the file inside every line that is not a comment (an editor saving half a file)."""
    lines = shipped.read_text(encoding="utf-8").splitlines(keepends=True)
    target = tmp_path / shipped.name
    for index, line in enumerate(lines):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        for cut in (len(line) // 2, len(line.rstrip()) - 1):
            target.write_text("".join(lines[:index]) + line[:cut], encoding="utf-8")
            rules, problems = try_load_rules(target, "ES")
            assert (rules is None) == bool(problems)
