"""The AGI wire format, both directions, treating Asterisk's side as untrusted text.

**Environment.**  An AGI session starts with Asterisk writing ``agi_key: value``
lines and one blank line (``res_agi.c`` ``setup_env``).  Asterisk writes the
values raw: a caller name is whatever the carrier or the calling phone put in
the SIP ``From`` display name, and a newline inside it becomes a line of its
own.  Such a line could pose as another key (``agi_callerid: 600…``) or, with
a blank line, end the block early so that the rest of the block is read as the
answers to our first commands.  Asterisk always writes the keys in one fixed
order (:data:`ASTERISK_ORDER`; the FastAGI pair ``agi_network``/
``agi_network_script`` first, ``agi_arg_N`` last), so the parser accepts a key
only as the *next* one in that order; anything else continues the previous
value (it was text inside it).  A block that ends before ``agi_threadid``, the
last fixed key, was cut short by such a value: :attr:`AgiEnvironment.complete`
is false and the lookup fails open without trusting the stream.  The
caller-controlled values (``agi_calleridname``, ``agi_rdnis``…) all come after
``agi_callerid``, so the caller number can never be overridden.  Keys Asterisk
may add in later versions are kept as extras and never used.  Sizes are
bounded (:data:`MAX_ENV_LINES`, :data:`MAX_ENV_BYTES`).

**Commands.**  Asterisk reads one command per line into a 2 KiB buffer and
splits it into arguments like a shell: spaces separate, double quotes group,
a backslash makes the next character literal (``parse_args``).  pyst2 wraps
values in quotes without escaping anything (STACK.md), so a CRM name such as
``O"Brien`` breaks the command and a newline starts a new one.
:func:`quote` removes control characters (CR, LF, NUL…), escapes ``\\`` and
``"``, and bounds the length, so no value can break or inject a command.

**Answers.**  ``200 result=1 (value)`` (GET VARIABLE of a set variable),
``200 result=0`` (not set), ``510 Invalid or unknown command``,
``511 Command Not Permitted on a dead channel``, ``520-…`` usage lines ending
with ``520 End of proper usage.``, and over FastAGI a bare ``HANGUP`` line
when the caller hangs up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: The keys Asterisk 1.8 … 22 writes, in its order.  The first two only over FastAGI.
ASTERISK_ORDER: tuple[str, ...] = (
    "agi_network",
    "agi_network_script",
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
)
_OPTIONAL_LEADING = 2  # agi_network, agi_network_script: absent in classic AGI
_INDEX = {key: i for i, key in enumerate(ASTERISK_ORDER)}
_LAST_FIXED = len(ASTERISK_ORDER)

MAX_ENV_LINES = 200
MAX_ENV_BYTES = 32 * 1024
#: Longest line read from Asterisk (environment or answer).
MAX_LINE_BYTES = 8 * 1024
#: Asterisk's command buffer is AGI_BUF_LEN = 2048 bytes including the newline.
MAX_COMMAND_BYTES = 2000
#: No value we send needs more; CALLERID(name) is cut to 40 characters anyway.
MAX_VALUE_CHARS = 256

_KEY_LINE = re.compile(r"(agi_[a-z0-9_]+):(?: ?)(.*)\Z", re.DOTALL)
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]*)\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\([A-Za-z0-9_-]*\))?\Z")
_RESPONSE = re.compile(r"([0-9]{3})([ -])(.*)\Z", re.DOTALL)
_RESULT = re.compile(r"result=(-?[0-9]+)")


class BadEnvironment(ValueError):
    """The environment block broke a bound (too many lines or bytes)."""


@dataclass(frozen=True)
class AgiEnvironment:
    """The ``agi_*`` block of one session, read as :mod:`the module <.protocol>` explains.

    ``values`` holds the keys Asterisk sent in its order (first occurrence);
    ``extras`` unknown ``agi_*`` keys; ``args`` the script arguments
    (``AGI(script,arg1,arg2)``); ``anomalies`` what looked injected.
    """

    values: Mapping[str, str]
    args: tuple[str, ...] = ()
    extras: Mapping[str, str] = field(default_factory=dict)
    complete: bool = False
    anomalies: tuple[str, ...] = ()

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    @property
    def script(self) -> str | None:
        """The FastAGI route (``crm_lookup``), from ``agi_network_script``."""
        script = self.values.get("agi_network_script")
        if script is None:
            return None
        return script.split("?", 1)[0].strip("/") or None

    @property
    def uniqueid(self) -> str:
        return self.values.get("agi_uniqueid", "?")


class EnvironmentParser:
    """Feed lines (without their newline) until :meth:`feed` returns True."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._extras: dict[str, str] = {}
        self._args: list[str] = []
        self._anomalies: list[str] = []
        self._cursor = 0  # index in ASTERISK_ORDER of the next expected key
        self._last: tuple[str, str] | None = None  # ("values"|"extras"|"args", key)
        self._lines = 0
        self._bytes = 0
        self.done = False

    def feed(self, line: str) -> bool:
        """Take one line; True when the blank line that ends the block arrived."""
        if self.done:
            raise RuntimeError("environment already complete")
        self._lines += 1
        self._bytes += len(line) + 1
        if self._lines > MAX_ENV_LINES:
            raise BadEnvironment(f"more than {MAX_ENV_LINES} environment lines")
        if self._bytes > MAX_ENV_BYTES:
            raise BadEnvironment(f"environment larger than {MAX_ENV_BYTES} bytes")
        line = line.rstrip("\r\n")
        if line == "":
            self.done = True
            return True
        match = _KEY_LINE.match(line)
        if match is not None and self._accept(match.group(1), match.group(2)):
            return False
        self._continue(line)
        return False

    def _accept(self, key: str, value: str) -> bool:
        index = _INDEX.get(key)
        if index is not None:
            expected = self._cursor
            if expected == 0 and index == _OPTIONAL_LEADING:
                expected = _OPTIONAL_LEADING  # classic AGI: no agi_network pair
            if index != expected:
                return False
            self._values[key] = value
            self._cursor = index + 1
            self._last = ("values", key)
            return True
        arg = _ARG_KEY.match(key)
        if arg is not None:
            if self._cursor == _LAST_FIXED and int(arg.group(1)) == len(self._args) + 1:
                self._args.append(value)
                self._last = ("args", str(len(self._args) - 1))
                return True
            return False
        if key in self._extras:
            return False
        self._extras[key] = value
        self._last = ("extras", key)
        return True

    def _continue(self, line: str) -> None:
        """A line that is no key of its own: text from inside the previous value."""
        self._anomalies.append(f"line {self._lines}: {line[:60]!r} read as part of a value")
        if self._last is None:
            return
        where, key = self._last
        if where == "values":
            self._values[key] = (self._values[key] + "\n" + line)[:MAX_LINE_BYTES]
        elif where == "extras":
            self._extras[key] = (self._extras[key] + "\n" + line)[:MAX_LINE_BYTES]
        else:
            i = int(key)
            self._args[i] = (self._args[i] + "\n" + line)[:MAX_LINE_BYTES]

    def result(self) -> AgiEnvironment:
        return AgiEnvironment(
            values=dict(self._values),
            args=tuple(self._args),
            extras=dict(self._extras),
            complete=self.done and self._cursor == _LAST_FIXED,
            anomalies=tuple(self._anomalies),
        )


def parse_environment(text: str) -> AgiEnvironment:
    """The environment at the start of ``text`` (for tests and captures)."""
    parser = EnvironmentParser()
    for line in text.split("\n"):
        if parser.feed(line):
            break
    return parser.result()


def sanitize(value: str, max_chars: int = MAX_VALUE_CHARS) -> str:
    """``value`` without control characters (each becomes a space), trimmed, bounded."""
    return _CONTROL.sub(" ", value).strip()[:max_chars].rstrip()


def quote(value: str, max_chars: int = MAX_VALUE_CHARS) -> str:
    """One AGI argument that Asterisk's ``parse_args`` reads back as ``sanitize(value)``."""
    clean = sanitize(value, max_chars)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a channel variable name: {name!r}")
    return name


def set_variable_command(name: str, value: str) -> str:
    """``SET VARIABLE NAME "value"`` (no newline), safe for any ``value``."""
    command = f"SET VARIABLE {_check_name(name)} {quote(value)}"
    while len(command.encode("utf-8")) > MAX_COMMAND_BYTES:  # only with huge multibyte text
        value = value[: len(value) // 2]
        command = f"SET VARIABLE {name} {quote(value)}"
    return command


def get_variable_command(name: str) -> str:
    return f"GET VARIABLE {_check_name(name)}"


@dataclass(frozen=True)
class AgiResponse:
    """One answer of Asterisk to a command."""

    code: int
    result: str | None  # "1", "0", "-1" from ``result=N``
    data: str | None  # the text in parentheses: a variable's value
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200 and self.result != "-1"

    def variable(self) -> str | None:
        """A GET VARIABLE answer: the value, or None when not set."""
        if self.code != 200 or self.result != "1":
            return None
        return self.data if self.data is not None else ""


def parse_response(line: str) -> AgiResponse | None:
    """``200 result=1 (value)`` → AgiResponse; None for a line that is no answer.

    A continuation line of a multi-line answer (``520-…``) gives code 520 and
    text starting with ``-``: the caller reads on until ``520 ``.
    """
    line = line.rstrip("\r\n")
    match = _RESPONSE.match(line)
    if match is None:
        return None
    code, sep, rest = int(match.group(1)), match.group(2), match.group(3)
    if sep == "-":
        return AgiResponse(code, None, None, "-" + rest)
    result_match = _RESULT.match(rest)
    result = result_match.group(1) if result_match else None
    data = None
    if result_match is not None:
        tail = rest[result_match.end() :]
        open_at = tail.find(" (")
        if open_at >= 0 and tail.endswith(")"):
            data = tail[open_at + 2 : -1]
    return AgiResponse(code, result, data, rest)
