"""The ``ami-daemon`` command.

Each subcommand lives in its own module under ``ami_daemon.commands`` exposing
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; they are imported
only when chosen, so ``ami-daemon calls`` does not pay for asyncpg.  A
:class:`~ami_daemon.config.ConfigError` (or any :class:`UserError`) ends the
command with its message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from ami_daemon import __version__
from ami_daemon.config import ConfigError
from ami_daemon.errors import UserError

#: subcommand → (module under ami_daemon.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "replay a day of real calls through the daemon on a private database"),
    "run": ("run", "run the daemon: live AMI → calls → rules → CRM, with the FastAGI server"),
    "migrate": ("migrate", "create or upgrade the CRM schema in PostgreSQL"),
    "import": ("imports", "import users, contacts or companies from CSV"),
    "rules": ("rules", "check the YAML rules or explain one number's settings"),
    "calls": ("calls", "print the calls of an AMI capture file as JSON lines"),
    "record": ("record", "record the raw AMI stream of a PBX into a capture file"),
    "simulate": (
        "simulate",
        "serve AMI captures like Asterisk (and FastAGI calls) for tests and demos",
    ),
    "replay": (
        "replay",
        "run a capture through tracker, rules and CRM as the daemon would (--dry-run)",
    ),
    "crm": ("crm", "pending calls, tasks, create-from-call, convert-lead"),
    "backfill": ("backfill", "write calls of a period from Asterisk's CDR the CRM does not have"),
    "agi-server": (
        "agi_server",
        "serve the crm_lookup FastAGI script (agi://HOST:4573/crm_lookup)",
    ),
}


def _load(module: str) -> ModuleType:
    return importlib.import_module(f"ami_daemon.commands.{module}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami-daemon",
        description="Asterisk ⇄ CRM integration: AMI call tracking, AGI lookup, CRM rules.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:
            _load(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module = _load(COMMANDS[args.command][0])
    try:
        return int(module.run(args))
    except (ConfigError, UserError) as exc:
        print(f"ami-daemon {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
