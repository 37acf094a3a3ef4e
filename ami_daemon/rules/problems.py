"""Mistakes found in the rules YAML, each naming file, line, key path and reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    """One mistake: ``rules/10-numbers.yaml:14: numbers.911234567.source: unknown source 'X'``.

    ``line`` is 1-based, None when the problem concerns a whole file or folder;
    ``key`` is the dotted key path (``automation[night].when.time``), empty
    when the problem is the file itself (unreadable, YAML syntax).
    """

    file: str
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class RulesError(Exception):
    """The rules could not be loaded; ``errors`` lists every problem found."""

    def __init__(self, errors: list[RuleProblem]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def sort_key(problem: RuleProblem) -> tuple[str, int, str]:
    """Order problems by file, then line (whole-file problems first)."""
    return (problem.file, problem.line or 0, problem.key)
