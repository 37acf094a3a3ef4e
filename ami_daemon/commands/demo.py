"""``ami-daemon demo``: the first thing to run; needs no PBX and no database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from ami_daemon.demo.runner import print_table, run_demo

HELP = "replay a day of real calls through the daemon on a private database, and show the CRM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="use this PostgreSQL database instead of a private embedded one "
        "(demo data is written into it)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    started = time.monotonic()
    print("Starting a private PostgreSQL, the PBX simulator and the daemon...", flush=True)
    rows = asyncio.run(run_demo(args.dsn))
    print()
    print_table(rows)
    print(
        f"\n{len(rows)} calls in {time.monotonic() - started:.1f} s. Every row above was "
        "written by the daemon to PostgreSQL (crm.calls and the CRM tables)."
    )
    return 0
