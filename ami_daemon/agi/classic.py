"""Classic AGI: ``AGI(/path/crm_lookup.py[,CONFIG])``, one process per call, over pyst2.

Asterisk starts the script with the ``agi_*`` environment on stdin, reads
commands from its stdout and answers each on stdin; when the script exits the
dialplan goes on.  The lookup itself is :func:`~.lookup.crm_lookup`, the same
dialogue the FastAGI server runs; this module adapts pyst2 to it and fixes
what pyst2 gets wrong (STACK.md):

- pyst2 parses the environment with ``split(':')`` and no notion of order:
  :class:`_Pyst2` reads it with :class:`~.protocol.EnvironmentParser`.
- pyst2 sends values unescaped: every command is built by
  :func:`~.protocol.set_variable_command`.
- end of input raises ``ValueError`` inside pyst2 and leftover environment
  lines break its answer parser: answers are read with
  :func:`~.protocol.parse_response`, skipping what is no answer, and end of
  input is a hangup.
- ``AGI()`` writes debug lines to stderr (Asterisk's console): it gets a null
  sink; our own log goes to stderr at WARNING.  Its SIGHUP handler (Asterisk
  sends SIGHUP when the caller hangs up) is kept: the next command then stops.

The config is the script's first argument, else ``$AMI_DAEMON_CONFIG``, else
``/etc/ami-daemon/config.yaml``, else ``./config.yaml`` (Asterisk's
environment rarely has the variable: pass the argument).  The database connect
and the query together get ``agi.time_budget_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import IO, Any

from asterisk.agi import AGI, AGIHangup

from ami_daemon.agi import classic_settings
from ami_daemon.agi.decision import Decision
from ami_daemon.agi.lookup import AgiHangup, LookupSettings, TimeBudget, crm_lookup
from ami_daemon.agi.owners import OneShotOwners
from ami_daemon.agi.protocol import (
    MAX_LINE_BYTES,
    AgiEnvironment,
    AgiResponse,
    BadEnvironment,
    EnvironmentParser,
    get_variable_command,
    parse_response,
    set_variable_command,
)
from ami_daemon.agi.variables import CRM_LOOKUP, LookupStatus

log = logging.getLogger("ami_daemon.agi.classic")

_MAX_SKIPPED = 250


class _Pyst2(AGI):  # type: ignore[misc]
    """pyst2's AGI with a safe environment reader and answer parser."""

    environment: AgiEnvironment

    def _get_agi_env(self) -> None:
        parser = EnvironmentParser()
        while True:
            line = self.stdin.readline(MAX_LINE_BYTES)
            if line == "" or parser.feed(line):
                break
        self.environment = parser.result()
        self.env = dict(self.environment.values)

    def get_result(self, stdin: Any = None) -> AgiResponse:
        for _ in range(_MAX_SKIPPED):
            line = self.stdin.readline(MAX_LINE_BYTES)
            if line == "":
                raise AgiHangup("Asterisk closed stdin")
            if line.strip() == "HANGUP":
                raise AgiHangup("the caller hung up")
            response = parse_response(line)
            if response is None or response.text.startswith("-"):
                continue
            if response.code == 511:
                raise AgiHangup("dead channel (511)")
            return response
        raise AgiHangup("no AGI answer among the lines received")


class Pyst2Channel:
    """``lookup.AgiChannel`` over pyst2 (blocking, which a one-call process can afford)."""

    def __init__(self, agi: _Pyst2) -> None:
        self.agi = agi

    def execute(self, command: str) -> AgiResponse:
        try:
            response: AgiResponse = self.agi.execute(command)
        except (AGIHangup, ValueError, OSError) as exc:
            raise AgiHangup(f"{type(exc).__name__}: {exc}") from None
        return response

    async def get_variable(self, name: str) -> str | None:
        return self.execute(get_variable_command(name)).variable()

    async def set_variable(self, name: str, value: str) -> None:
        response = self.execute(set_variable_command(name, value))
        if not response.ok:
            log.warning(
                "Asterisk refused SET VARIABLE %s: %s %s", name, response.code, response.text
            )


def _streams() -> tuple[IO[str], IO[str]]:
    """stdin/stdout as UTF-8 text split on LF only (a CR inside a value is no line end)."""
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", write_through=True)
    return stdin, stdout


async def _lookup(channel: Pyst2Channel, settings: classic_settings.ClassicSettings) -> Decision:
    budget = settings.time_budget
    owners = OneShotOwners(settings.dsn, connect_timeout=min(settings.connect_timeout, budget))
    try:
        return await crm_lookup(
            channel,
            channel.agi.environment,
            owners,
            lambda: settings.routing,
            LookupSettings(
                region=settings.region,
                trunk_channels=tuple(re.compile(p) for p in settings.trunk_channels),
                time_budget=budget,
            ),
            TimeBudget(),
        )
    finally:
        owners.close()


def _fail(channel: Pyst2Channel, reason: str) -> None:
    log.warning("crm_lookup: error (%s)", reason)
    with contextlib.suppress(AgiHangup):
        channel.execute(set_variable_command(CRM_LOOKUP, LookupStatus.ERROR.value))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one lookup on stdin/stdout; always exit 0 (Asterisk needs no status)."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("AMI_DAEMON_AGI_LOG", "WARNING").upper(),
        format=f"crm_lookup[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    stdin, stdout = _streams()
    with open(os.devnull, "w") as sink:
        try:
            agi = _Pyst2(stdin=stdin, stdout=stdout, stderr=sink)
        except BadEnvironment as exc:
            log.warning("crm_lookup: bad AGI environment: %s", exc)
            stdout.write(set_variable_command(CRM_LOOKUP, LookupStatus.ERROR.value) + "\n")
            return 0
        channel = Pyst2Channel(agi)
        try:
            settings = classic_settings.load(args[0] if args else None, os.environ)
        except Exception as exc:  # ConfigError and anything else: fail open
            _fail(channel, f"config: {exc}")
            return 0
        try:
            asyncio.run(_lookup(channel, settings))
        except AgiHangup as exc:
            log.info("crm_lookup: %s", exc)
        except Exception as exc:
            _fail(channel, f"{type(exc).__name__}: {exc}")
    return 0
