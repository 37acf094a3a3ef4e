"""``ami-daemon rules check|explain``: validate the rules YAML or explain one number.

Exit status: 0 rules valid (summary or explanation printed), 1 the rules have
mistakes (each printed as ``file:line: key.path: reason``), 2 a usage or config
problem (printed by the CLI).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ami_daemon import config
from ami_daemon.rules import describe
from ami_daemon.rules.loader import default_rules_path, try_load_rules
from ami_daemon.rules.model import RuleSet

HELP = "check the YAML rules or explain one number's settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="{check,explain}", required=True)
    check = sub.add_parser(
        "check",
        help="report every mistake, or summarise what the rules do",
        description="Validate the rules (a folder of *.yaml or one file). Prints every "
        "mistake with file:line and exits 1, or a summary and exits 0.",
    )
    check.add_argument(
        "dir", nargs="?", metavar="DIR", help="rules folder or file (default: config rules.path)"
    )
    check.add_argument("--config", help="config file (for pbx.region and rules.path)")
    explain = sub.add_parser(
        "explain",
        help="effective settings of one DID or trunk, and where each comes from",
        description="Print the effective settings of one DID (any spelling) or trunk name, "
        "each with its origin (built-in default, defaults, or an override's file:line).",
    )
    explain.add_argument("number", metavar="NUMBER", help="a DID in any spelling, or a trunk name")
    explain.add_argument("--trunk", help="the trunk the DID arrives on (its override applies too)")
    explain.add_argument("--rules", metavar="DIR", help="rules folder or file")
    explain.add_argument("--config", help="config file (for pbx.region and rules.path)")


def _load(args: argparse.Namespace, explicit: str | None) -> tuple[RuleSet | None, str]:
    """The rule set (or None after printing every problem) and pbx.timezone."""
    cfg = config.load(args.config)
    if explicit:
        path = Path(explicit)
    elif cfg.source is not None:
        path = cfg.rules.path
    else:
        path = default_rules_path()
    rules, problems = try_load_rules(path, cfg.pbx.region)
    if rules is None:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in {path}; the rules were not loaded", file=sys.stderr)
    return rules, cfg.pbx.timezone


def run(args: argparse.Namespace) -> int:
    if args.rules_command == "check":
        rules, timezone = _load(args, args.dir)
        if rules is None:
            return 1
        print("\n".join(describe.summary(rules, timezone)))
        print("OK: no problems found")
        return 0
    rules, _ = _load(args, args.rules)
    if rules is None:
        return 1
    target = describe.resolve_target(rules, args.number, args.trunk)
    print("\n".join(describe.explain(rules, target)))
    return 0
