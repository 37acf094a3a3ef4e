"""``ami-daemon run``: the daemon itself (what systemd starts)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ami_daemon import config
from ami_daemon.logs import setup_logging
from ami_daemon.rules.loader import RulesError
from ami_daemon.service import Daemon

HELP = "run the daemon: live AMI → calls → rules → CRM, with the FastAGI server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: see README)")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="also write every byte Asterisk sends to FILE (a capture)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    setup_logging("DEBUG" if args.verbose else cfg.logging.level, cfg.logging.format)
    daemon = Daemon(cfg, record=args.record)
    try:
        return asyncio.run(daemon.run_until_signalled())
    except RulesError as exc:
        for problem in exc.errors:
            print(f"ami-daemon run: {problem}", file=sys.stderr, flush=True)
        return 2
