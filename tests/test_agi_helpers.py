"""A stand-in Asterisk for the AGI tests, built from what the real one does.

- :func:`trace_sessions` reads the FastAGI dialogues recorded from Asterisk 20
  (``traces/asterisk20/*/agi.log``): the exact environment lines it sent and
  the answers it gave.
- :func:`asterisk_parse_args` is Asterisk's ``res_agi.c`` ``parse_args``
  (quotes group, backslash escapes the next character, space/tab separate),
  so the tests see a value exactly as Asterisk would store it.
- :func:`play_asterisk` is Asterisk's side of one session over any stream
  pair: write the environment, answer each command like Asterisk 20 does
  (``200 result=1 (value)``, ``200 result=0``, ``510 …``), record what was set.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.paths import TRACES

AGI_LOGS = sorted((TRACES / "asterisk20").glob("*/agi.log"))
_LINE = re.compile(r"\S+ (c\d+) (AST>AGI|AGI>AST|----) ?(.*)\Z")


@dataclass
class TraceSession:
    name: str
    env_lines: list[str]
    answers: dict[str, str]  # command → Asterisk's answer line


def trace_sessions() -> list[TraceSession]:
    sessions = []
    for log_file in AGI_LOGS:
        env: list[str] = []
        answers: dict[str, str] = {}
        in_env = True
        last_command = None
        for raw in log_file.read_text(encoding="utf-8").splitlines():
            match = _LINE.match(raw)
            if match is None:
                continue
            _, direction, text = match.groups()
            if direction == "AST>AGI" and in_env:
                if text == "":
                    in_env = False
                else:
                    env.append(text)
            elif direction == "AGI>AST":
                last_command = text
            elif direction == "AST>AGI" and last_command is not None:
                answers[last_command] = text
        sessions.append(TraceSession(log_file.parent.name, env, answers))
    return sessions


def asterisk_parse_args(line: str) -> list[str]:
    """``res_agi.c`` ``parse_args``, statement for statement."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                cur = []
                args.append("")
                whitespace = False
            escaped = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            cur = []
            args.append("")
            whitespace = False
        assert cur is not None
        args[-1] += ch
        escaped = False
    return args


@dataclass
class AsteriskSide:
    """What one session did: every command line received and the variables set."""

    commands: list[str] = field(default_factory=list)
    set_vars: dict[str, str] = field(default_factory=dict)
    closed_by_script: bool = False


async def play_asterisk(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    env_lines: list[str],
    channel_vars: dict[str, str],
    timeout: float = 10.0,
) -> AsteriskSide:
    """Asterisk's half of an AGI session; returns when the script closes its side."""
    side = AsteriskSide()
    try:
        writer.write("".join(f"{line}\n" for line in env_lines).encode() + b"\n")
        await writer.drain()
        await _dialogue(reader, writer, channel_vars, timeout, side)
    except (ConnectionResetError, BrokenPipeError):
        side.closed_by_script = True  # a refused peer is reset, not answered
    return side


async def _dialogue(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    channel_vars: dict[str, str],
    timeout: float,
    side: AsteriskSide,
) -> None:
    while True:
        raw = await asyncio.wait_for(reader.readline(), timeout)
        if not raw:
            side.closed_by_script = True
            break
        line = raw.decode("utf-8").rstrip("\n")
        side.commands.append(line)
        args = asterisk_parse_args(line)
        if args[:2] == ["GET", "VARIABLE"] and len(args) == 3:
            value = channel_vars.get(args[2])
            answer = f"200 result=1 ({value})" if value is not None else "200 result=0"
        elif args[:2] == ["SET", "VARIABLE"] and len(args) == 4:
            side.set_vars[args[2]] = args[3]
            answer = "200 result=1"
        else:
            answer = "510 Invalid or unknown command"
        writer.write(answer.encode() + b"\n")
        await writer.drain()


def classic_env(env_lines: list[str], script: Path) -> list[str]:
    """A FastAGI environment as Asterisk writes it for a classic script."""
    lines = [line for line in env_lines if not line.startswith("agi_network")]
    return [f"agi_request: {script}" if line.startswith("agi_request:") else line for line in lines]


def replace_env(env_lines: list[str], key: str, value: str) -> list[str]:
    """The environment with ``key``'s value replaced (may hold newlines, like Asterisk)."""
    out = []
    for line in env_lines:
        if line.startswith(f"{key}:"):
            out.extend(f"{key}: {value}".split("\n"))
        else:
            out.append(line)
    return out


def test_the_traces_hold_complete_sessions() -> None:
    sessions = trace_sessions()
    assert len(sessions) >= 6
    for s in sessions:
        assert s.env_lines[0] == "agi_network: yes"
        assert s.env_lines[-1].startswith("agi_threadid: ")
        assert s.answers["GET VARIABLE CRM_DID"].startswith("200 result=1 (")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('SET VARIABLE X "a b"', ["SET", "VARIABLE", "X", "a b"]),
        ('SET VARIABLE X "O\\"Brien \\\\ z"', ["SET", "VARIABLE", "X", 'O"Brien \\ z']),
        ("SET VARIABLE X a\\ b", ["SET", "VARIABLE", "X", "a b"]),
        ('SET VARIABLE X ""', ["SET", "VARIABLE", "X", ""]),
    ],
)
def test_parse_args_reads_like_asterisk(line: str, expected: list[str]) -> None:
    assert asterisk_parse_args(line) == expected


# --- CRM data and config shared by the FastAGI and classic tests --------------------

EVIL_NAME = 'O"Brien \\ x\nEXEC System "touch /tmp/agi-pwned"; 200 result=1'
LONG_NAME = 'Иван Петров; "Añejo" & Co, with a name longer than forty characters'

SEED_SQL = """
INSERT INTO crm.users (id, name, extension, active) VALUES
    (1, 'Ana', '201', true), (2, 'Bruno', '202', true), (3, 'Carla', '203', false);
INSERT INTO crm.contacts (id, name, responsible_id) VALUES
    (17, 'Marta Ruiz', 2), (18, $1, 3), (19, $2, 2), (20, 'Door intercom', 2),
    (21, 'Nobody''s client', NULL);
INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES
    ('user', 1, '+34699000201'),
    ('contact', 17, '+34600333444'), ('contact', 18, '+34600555666'),
    ('contact', 19, '+34600777888'), ('contact', 20, '+34910000000'),
    ('contact', 21, '+34600999000');
"""

RULES_YAML = """
defaults:
  route_to_responsible: yes
numbers:
  "911234500":
    route_to_responsible: no      # support line: known clients go to the queue
exceptions:
  phones: ["+34 910 000 000"]
"""


async def seed_crm(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for statement in SEED_SQL.split(";"):
            if not statement.strip():
                continue
            args = [EVIL_NAME, LONG_NAME] if "$1" in statement else []
            await conn.execute(statement, *args)
    finally:
        await conn.close()


def write_config(folder: Path, dsn: str, **agi: object) -> Path:
    """A config file + rules folder in ``folder``; ``agi`` keys go to the agi: section."""
    import json

    rules = folder / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "00-routing.yaml").write_text(RULES_YAML, encoding="utf-8")
    agi_section = {"time_budget_ms": 300, **agi}
    text = (
        "pbx:\n  region: ES\n"
        f"database:\n  dsn: {json.dumps(dsn)}\n"
        f"agi: {json.dumps(agi_section)}\n"
        "rules:\n  path: rules\n"
    )
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path
