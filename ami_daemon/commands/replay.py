"""``ami-daemon replay CAPTURE --config FILE [--dry-run]``: a capture through the whole pipeline.

The capture's messages go through the same reader and tracker as
``ami-daemon calls``; each finished call then goes through the same
facts → decision → apply step as the live daemon (:mod:`ami_daemon.pipeline`),
in the order the calls ended.  Without ``--dry-run`` every call is written
(once: replaying a capture again writes nothing new) and one short line per
call says what happened.  With ``--dry-run`` the CRM is only read and each
call is printed as one JSON line ``{"call", "outcome", "actions", "reasons"}``
(DESIGN "contract: ami-daemon replay"), so an admin can see what changed rules
would do to recorded traffic.  A dry run decides every call against the CRM
as it is now: a second call of a new number in the same capture is still
"new" because the first one's lead was not written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ami_daemon import config
from ami_daemon.ami.reader import Malformed, read_capture
from ami_daemon.calls.summary import CallSummary
from ami_daemon.calls.tracker import Tracker
from ami_daemon.crm import session
from ami_daemon.errors import UserError
from ami_daemon.pipeline import preview_call, process_call
from ami_daemon.rules import RulesError, RuleSet, default_rules_path, load_rules

HELP = "run a capture through tracker, rules and CRM as the daemon would (--dry-run)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="CAPTURE", help="raw AMI capture file")
    parser.add_argument("--config", help="config file (pbx, database, rules sections)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read the CRM, write nothing; print each call's decision as a JSON line",
    )
    parser.add_argument("--dsn", help="database DSN (overrides the config)")
    parser.add_argument(
        "--rules", type=Path, help="rules folder or file (default: the config's rules.path)"
    )


def rules_path(cfg: config.Config, explicit: Path | None) -> Path:
    """``--rules``, else the config's ``rules.path``, else the shipped rule set."""
    if explicit is not None:
        return explicit
    if cfg.rules.path.exists():
        return cfg.rules.path
    shipped = default_rules_path()
    log.info("rules folder %s not found; using the shipped rules in %s", cfg.rules.path, shipped)
    return shipped


def load_rule_set(cfg: config.Config, explicit: Path | None) -> RuleSet:
    try:
        return load_rules(rules_path(cfg, explicit), cfg.pbx.region)
    except RulesError as exc:
        raise UserError(f"the rules are not valid:\n{exc}") from None


def summaries(path: Path, pbx: config.PbxConfig) -> Iterator[CallSummary]:
    """The calls of a capture, in the order they ended, then the interrupted ones."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a capture file")
    tracker = Tracker(pbx)

    def malformed(problem: Malformed) -> None:
        log.warning("%s: %s", path, problem)

    try:
        for message in read_capture(path, malformed):
            yield from tracker.feed(message)
    except FileNotFoundError:
        raise UserError(f"{path}: capture file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the capture file: {exc.strerror or exc}") from None
    yield from tracker.finish()


async def replay(dsn: str, capture: Path, cfg: config.Config, rules: RuleSet, dry_run: bool) -> int:
    """Replay ``capture``; print one line per call; the number of calls."""
    conn = await session.open_migrated(dsn, cfg.database.connect_timeout)
    count = 0
    try:
        zone = cfg.pbx.zone
        for summary in summaries(capture, cfg.pbx):
            now = datetime.now(UTC)
            if dry_run:
                done = await preview_call(conn, summary, rules, zone, now)
                line = json.dumps(done.to_json_dict(), ensure_ascii=False)
            else:
                done = await process_call(conn, summary, rules, zone, now)
                line = done.line()
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            count += 1
    finally:
        await session.close_quietly(conn)
    return count


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    dsn = args.dsn or cfg.require_dsn()
    rules = load_rule_set(cfg, args.rules)
    asyncio.run(replay(dsn, Path(args.capture), cfg, rules, args.dry_run))
    return 0
