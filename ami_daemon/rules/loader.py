"""Load the admin's rules folder into one :class:`RuleSet`, or every mistake in it.

The folder's ``*.yaml`` (and ``*.yml``) files are read in name order, so
``00-crm.yaml`` comes before ``10-numbers.yaml`` and automation rules keep
their order across files.  Any mistake anywhere means no rule set at all:
:func:`try_load_rules` returns ``(None, problems)``, :func:`load_rules`
raises :class:`RulesError`.  A daemon reloading its rules (SIGHUP) uses
:class:`RulesSource`, which keeps the previous rules when the new ones are
broken and says why.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ami_daemon import phones
from ami_daemon.rules.model import (
    GENERAL_PIPELINE,
    GENERAL_STAGES,
    SETTING_FIELDS,
    STANDARD_SOURCES,
    CrmMode,
    NumberSettings,
    Origin,
    Pipeline,
    Provenance,
    RuleSet,
)
from ami_daemon.rules.parse import Draft, read_file
from ami_daemon.rules.problems import RuleProblem, RulesError, sort_key
from ami_daemon.rules.yamlnodes import NodeReader, compose

__all__ = [
    "RuleProblem",
    "RulesError",
    "RulesSource",
    "default_rules_path",
    "load_rules",
    "rule_files",
    "try_load_rules",
]

RULE_SUFFIXES = (".yaml", ".yml")


def default_rules_path() -> Path:
    """The shipped ``rules/`` folder.

    In a source checkout (also an editable install) that is ``rules/`` beside
    ``ami_daemon/``; a wheel installs a copy to ``<prefix>/share/ami-daemon/rules``
    (setup.cfg ``data_files``), looked up under ``sys.prefix`` and the user base.
    """
    checkout = Path(__file__).resolve().parents[2]
    candidates = [checkout / "rules"] if (checkout / "setup.cfg").is_file() else []
    candidates += [
        Path(base) / "share" / "ami-daemon" / "rules"
        for base in (sys.prefix, site.getuserbase(), "/usr/local", "/usr")
    ]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return candidates[0]


def rule_files(path: Path) -> tuple[list[Path], list[RuleProblem]]:
    """The files ``path`` names: itself, or a folder's rule files sorted by name."""
    if path.is_file():
        return [path], []
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix in RULE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not files:
            return [], [RuleProblem(str(path), None, "", "no *.yaml rule files in this folder")]
        return files, []
    if path.exists():
        return [], [RuleProblem(str(path), None, "", "neither a file nor a folder")]
    return [], [RuleProblem(str(path), None, "", "no such file or folder")]


def try_load_rules(path: Path, region: str) -> tuple[RuleSet | None, list[RuleProblem]]:
    """``(rule set, [])`` or ``(None, every problem)``: never half a rule set.

    ``region`` (``pbx.region``) reads numbers written without a country code.
    """
    path = Path(path)
    problems: list[RuleProblem] = []
    if not phones.is_valid_region(region):
        problems.append(RuleProblem(str(path), None, "", f"unknown region {region!r} (pbx.region)"))
        return None, problems
    files, problems = rule_files(path)
    draft = Draft(region=region.upper())
    for file in files:
        name = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(RuleProblem(name, None, "", f"not UTF-8 text ({exc.reason})"))
            continue
        except OSError as exc:
            problems.append(RuleProblem(name, None, "", f"cannot read: {exc.strerror}"))
            continue
        root = compose(text, name, problems)
        read_file(root, NodeReader(name, problems), draft)
    problems.extend(_check_references(draft))
    if problems:
        return None, sorted(problems, key=sort_key)
    return _build(draft, tuple(str(f) for f in files)), []


def load_rules(path: Path, region: str) -> RuleSet:
    """The rule set in ``path`` (a folder or one file), or :class:`RulesError`."""
    rules, problems = try_load_rules(path, region)
    if rules is None:
        raise RulesError(problems)
    return rules


def _pipelines(draft: Draft) -> dict[str, Pipeline]:
    pipelines = {GENERAL_PIPELINE: Pipeline(GENERAL_PIPELINE, GENERAL_STAGES)}
    pipelines.update(draft.pipelines)
    return pipelines


def _check_references(draft: Draft) -> list[RuleProblem]:
    """Every name used must be declared somewhere in the files (or be standard)."""
    sources = set(STANDARD_SOURCES) | set(draft.custom_sources)
    pipelines = _pipelines(draft)
    problems: list[RuleProblem] = []
    for ref in draft.refs:
        reason = ""
        if ref.kind == "source" and ref.name not in sources:
            custom = ", ".join(draft.custom_sources) or "none"
            reason = (
                f"unknown source {ref.name!r} (standard: {', '.join(STANDARD_SOURCES)}; "
                f"custom: {custom}; declare custom ones under 'sources:')"
            )
        elif ref.kind == "pipeline" and ref.name not in pipelines:
            reason = f"unknown pipeline {ref.name!r} (declared: {', '.join(pipelines)})"
        elif ref.kind == "queue group" and ref.name not in draft.queue_groups:
            declared = ", ".join(draft.queue_groups) or "none"
            reason = f"unknown queue group {ref.name!r} (declared under queue_groups: {declared})"
        elif ref.kind == "stage" and ref.pipeline in pipelines:
            stages = pipelines[ref.pipeline].stages
            if ref.name not in stages:
                reason = (
                    f"unknown stage {ref.name!r} of pipeline {ref.pipeline} "
                    f"(stages: {', '.join(stages)})"
                )
        if reason:
            problems.append(RuleProblem(ref.file, ref.line, ref.key, reason))
    return problems


def _build(draft: Draft, files: tuple[str, ...]) -> RuleSet:
    values: dict[str, Any] = {}
    provenance = {name: Provenance(Origin.BUILTIN) for name in SETTING_FIELDS}
    for name, (value, where) in draft.defaults.items():
        values[name] = value
        provenance[name] = Provenance(Origin.DEFAULTS, where.file, where.line)
    defaults = NumberSettings(**values, provenance=MappingProxyType(provenance))
    mode, mode_origin = CrmMode.CLASSIC, Provenance(Origin.BUILTIN)
    if draft.mode is not None:
        mode = draft.mode[0]
        mode_origin = Provenance(Origin.SET, draft.mode[1].file, draft.mode[1].line)
    return RuleSet(
        mode=mode,
        defaults=defaults,
        overrides=tuple(draft.overrides),
        queue_groups=MappingProxyType(dict(draft.queue_groups)),
        sources=STANDARD_SOURCES + tuple(draft.custom_sources),
        pipelines=MappingProxyType(_pipelines(draft)),
        automation=tuple(draft.automation),
        exception_phones=frozenset(draft.exception_phones),
        exception_emails=frozenset(draft.exception_emails),
        region=draft.region,
        files=files,
        mode_origin=mode_origin,
        custom_sources=tuple(draft.custom_sources),
    )


class RulesSource:
    """The rules a running daemon uses, reloadable without ever losing them.

    :meth:`load` at startup raises :class:`RulesError` (refuse to start on
    broken rules); :meth:`reload` later (SIGHUP) swaps in the new rule set only
    when it is valid and otherwise keeps :attr:`current` and returns the
    problems to log.  Readers take :attr:`current` once per call and use that
    one object throughout, so a reload never mixes two rule sets in one
    decision.
    """

    def __init__(self, path: Path, region: str) -> None:
        self.path = Path(path)
        self.region = region
        self._current: RuleSet | None = None

    @property
    def current(self) -> RuleSet:
        rules = self._current
        if rules is None:
            raise RulesError([RuleProblem(str(self.path), None, "", "rules not loaded yet")])
        return rules

    def load(self) -> RuleSet:
        rules = load_rules(self.path, self.region)
        self._current = rules
        return rules

    def reload(self) -> list[RuleProblem]:
        """Read the files again; ``[]`` when swapped in, else the problems (old rules kept)."""
        rules, problems = try_load_rules(self.path, self.region)
        if rules is None:
            return problems
        self._current = rules
        return []
