"""Asterisk's side of FastAGI, played from a capture's ``agi.log``.

When the dialplan runs ``AGI(agi://HOST:4573/crm_lookup)``, Asterisk opens a
TCP connection to HOST, writes the ``agi_*`` environment (one
``agi_key: value`` line each, LF-terminated, then an empty line), and then
answers every command line the server sends with one status line:

* ``SET VARIABLE name value`` → ``200 result=1``
* ``GET VARIABLE name`` → ``200 result=1 (value)`` when the variable (or
  dialplan function) exists, ``200 result=0`` when it does not
* ``GET FULL VARIABLE ${expr}`` → always ``200 result=1 (expanded)``
* ``VERBOSE``/``SET CALLERID`` → ``200 result=1``; ``NOOP``/``ANSWER``/``EXEC``
  → ``200 result=0``; anything else → ``510 Invalid or unknown command``

Arguments are split the way Asterisk's ``parse_args`` does: on blanks
outside double quotes, a backslash takes the next character literally.  The
AGI ends when the server closes the connection (the dialplan then goes on).

``agi.log`` lines are ``TIME cN AST>AGI text`` (Asterisk → server),
``TIME cN AGI>AST text`` (server → Asterisk) or ``TIME cN ---- note``; see
``shared/traces/README.md``.  What Asterisk answered to ``GET VARIABLE`` there
(``CRM_DID`` = the DID set by the dialplan) is answered again here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

_LOG_LINE = re.compile(
    r"^(?P<time>\S+) (?P<conn>c\d+) (?P<dir>AST>AGI|AGI>AST|----) ?(?P<text>.*)$"
)
_RESULT_VALUE = re.compile(r"^200 result=1 \((?P<value>.*)\)$")
_EXPR = re.compile(r"\$\{([^{}]*)\}")


class AgiLogError(ValueError):
    """An agi.log line that does not follow the documented format."""


@dataclass(frozen=True)
class AgiScript:
    """One AGI invocation from a capture: what Asterisk sent and knew.

    ``env`` is the ``agi_*`` environment in order; ``variables`` are the
    channel variables Asterisk reported when asked (``CRM_DID``).
    """

    env: tuple[tuple[str, str], ...]
    variables: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    def get(self, key: str) -> str:
        return next((v for k, v in self.env if k == key), "")

    def rewritten(self, translate: Mapping[str, str]) -> AgiScript:
        """The same script with every value found in ``translate`` replaced (re-keyed calls)."""
        env = tuple((k, translate.get(v, v)) for k, v in self.env)
        variables = {k: translate.get(v, v) for k, v in self.variables.items()}
        return replace(self, env=env, variables=variables)


@dataclass
class AgiOutcome:
    """What happened during one played AGI: the variables the server set."""

    uniqueid: str
    channel: str
    caller: str
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json_dict(self) -> dict[str, object]:
        return {
            "uniqueid": self.uniqueid,
            "channel": self.channel,
            "caller": self.caller,
            "variables": dict(self.variables),
            "commands": list(self.commands),
            "error": self.error,
        }


def parse_agi_log(path: str | Path) -> list[AgiScript]:
    """Every AGI connection of an ``agi.log``, in order of appearance."""
    path = Path(path)
    scripts: dict[str, tuple[list[tuple[str, str]], dict[str, str]]] = {}
    in_env: dict[str, bool] = {}
    asked: dict[str, str | None] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            match = _LOG_LINE.match(line)
            if match is None:
                raise AgiLogError(f"{path}:{number}: not an agi.log line: {line[:80]!r}")
            conn, direction, text = match["conn"], match["dir"], match["text"]
            env, variables = scripts.setdefault(conn, ([], {}))
            if direction == "AST>AGI":
                if in_env.setdefault(conn, True):
                    if not text.strip():
                        in_env[conn] = False
                        continue
                    key, sep, value = text.partition(": ")
                    if not sep:
                        key, value = text.rstrip(":"), ""
                    env.append((key, value))
                    continue
                wanted = asked.pop(conn, None)
                answer = _RESULT_VALUE.match(text)
                if wanted and answer:
                    variables[wanted] = answer["value"]
            elif direction == "AGI>AST":
                words = split_args(text)
                if len(words) == 3 and words[0].upper() == "GET" and words[1].upper() == "VARIABLE":
                    asked[conn] = words[2]
                else:
                    asked[conn] = None
    return [
        AgiScript(tuple(env), dict(variables), f"{path}:{conn}")
        for conn, (env, variables) in scripts.items()
        if env
    ]


def split_args(line: str) -> list[str]:
    """Split an AGI command line like Asterisk's ``parse_args`` (quotes, backslashes)."""
    words: list[str] = []
    current: list[str] = []
    in_word = quoted = escaped = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
            in_word = True
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            in_word = True
        elif char in " \t" and not quoted:
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
        else:
            current.append(char)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words


class _Channel:
    """The channel variables Asterisk would know during the AGI."""

    def __init__(self, script: AgiScript) -> None:
        self.vars: dict[str, str] = dict(script.variables)
        self.vars.setdefault("CALLERID(num)", script.get("agi_callerid"))
        self.vars.setdefault("CALLERID(name)", script.get("agi_calleridname"))
        self.vars.setdefault("EXTEN", script.get("agi_extension"))
        self.vars.setdefault("CONTEXT", script.get("agi_context"))
        self.vars.setdefault("CHANNEL", script.channel)
        self.vars.setdefault("UNIQUEID", script.uniqueid)

    def lookup(self, name: str) -> str | None:
        if name in self.vars:
            return self.vars[name]
        if name.upper().startswith("CALLERID(") and name.upper() in {k.upper() for k in self.vars}:
            return next(v for k, v in self.vars.items() if k.upper() == name.upper())
        return None

    def expand(self, text: str) -> str:
        return _EXPR.sub(lambda m: self.lookup(m.group(1)) or "", text)

    def answer(self, words: list[str], outcome: AgiOutcome) -> str:
        verb = [w.upper() for w in words[:3]]
        if verb[:2] == ["SET", "VARIABLE"] and len(words) >= 4:
            self.vars[words[2]] = words[3]
            outcome.variables[words[2]] = words[3]
            return "200 result=1"
        if verb[:3] == ["GET", "FULL", "VARIABLE"] and len(words) >= 4:
            return f"200 result=1 ({self.expand(words[3])})"
        if verb[:2] == ["GET", "VARIABLE"] and len(words) >= 3:
            value = self.lookup(words[2])
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        if verb[:2] == ["SET", "CALLERID"] and len(words) >= 3:
            return "200 result=1"
        if verb[:1] == ["VERBOSE"]:
            return "200 result=1"
        if verb[:1] in (["NOOP"], ["ANSWER"], ["EXEC"]):
            return "200 result=0"
        if verb[:1] == ["HANGUP"]:
            return "200 result=1"
        return "510 Invalid or unknown command"


async def play_agi(
    host: str,
    port: int,
    script: AgiScript,
    *,
    request: str | None = None,
    timeout: float = 10.0,
) -> AgiOutcome:
    """Connect to a FastAGI server as Asterisk would and run one AGI to its end.

    ``request`` replaces ``agi_request`` (default: ``agi://HOST:PORT/<script>``
    with the capture's script name).  Never raises for the server's faults:
    a refused connection, a timeout or a dropped line is in ``error``.
    """
    outcome = AgiOutcome(script.uniqueid, script.channel, script.get("agi_callerid"))
    name = script.get("agi_network_script") or "crm_lookup"
    request = request or f"agi://{host}:{port}/{name}"
    channel = _Channel(script)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        outcome.error = f"cannot connect to agi://{host}:{port}: {exc or type(exc).__name__}"
        return outcome
    try:
        env = [(k, request if k == "agi_request" else v) for k, v in script.env]
        writer.write("".join(f"{k}: {v}\n" for k, v in env).encode() + b"\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                break  # the server closed: the AGI is over, the dialplan goes on
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            if not command.strip():
                continue
            outcome.commands.append(command)
            writer.write(channel.answer(split_args(command), outcome).encode() + b"\n")
            await writer.drain()
    except TimeoutError:
        outcome.error = f"the FastAGI server sent nothing for {timeout:g} s"
    except OSError as exc:
        outcome.error = f"FastAGI connection failed: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return outcome
