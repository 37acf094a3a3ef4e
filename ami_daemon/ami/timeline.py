"""What the simulator replays: the events of captures, ordered on one clock.

A capture holds what Asterisk sent on one manager session: the banner, the
answer to the recorder's Login, ``FullyBooted`` (sent to that session only,
right after its login), then the PBX's events, and the answer to the final
Logoff.  The simulator answers Login, Ping and the rest itself, so only the
PBX's events are replayed: responses and ``FullyBooted`` are left out.

Several captures, or several copies of one (re-keyed so that each copy is a
distinct set of calls), are placed one after the other, or ``interleave``
seconds apart so that their calls overlap.  Their ``Timestamp`` headers are
shifted onto the common clock (kept unchanged for the first item, so that a
single capture replays byte-identical events).  Captures without
``Timestamp`` (``timestampevents = no``) are played back to back.

A capture given as a folder (``ami.raw`` + ``agi.log``), or as an ``ami.raw``
next to an ``agi.log``, brings its AGI invocations: each one is attached to
the event at which Asterisk started it (``Newexten`` with ``Application:
AGI`` on the ``agi_uniqueid`` channel, else ``AGIExecStart``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ami_daemon.ami.fastagi_client import AgiScript, parse_agi_log
from ami_daemon.ami.reader import AmiMessage, Malformed, read_capture
from ami_daemon.errors import UserError

#: Session-level messages of the recorder, not PBX events.
SKIPPED_EVENTS = frozenset({"FullyBooted"})


@dataclass(frozen=True)
class ReplayEvent:
    """One event to send: its headers, its wire bytes, its time on the common clock."""

    message: AmiMessage
    data: bytes
    at: float | None
    item: int


@dataclass(frozen=True)
class Timeline:
    """Events in send order, and the AGI scripts keyed by the index that starts them."""

    events: tuple[ReplayEvent, ...]
    agi: Mapping[int, tuple[AgiScript, ...]]
    items: int

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class Capture:
    """One capture as loaded: its events and AGI scripts."""

    path: Path
    messages: tuple[AmiMessage, ...]
    agi: tuple[AgiScript, ...]


def encode(headers: Sequence[tuple[str, str]]) -> bytes:
    """The wire form Asterisk uses: ``Key: Value`` CRLF lines and an empty line."""
    return ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8")


def load_capture(path: str | Path) -> Capture:
    """Read a capture file or a scenario folder; raise UserError naming the problem."""
    path = Path(path)
    agi_path: Path | None = None
    if path.is_dir():
        agi_path = path / "agi.log"
        path = path / "ami.raw"
    else:
        agi_path = path.parent / "agi.log" if path.name == "ami.raw" else None
    if not path.is_file():
        raise UserError(f"{path}: capture file not found")
    problems: list[Malformed] = []
    try:
        messages = [
            m
            for m in read_capture(path, problems.append)
            if "Event" in m and m["Event"] not in SKIPPED_EVENTS
        ]
    except OSError as exc:
        raise UserError(f"{path}: cannot read the capture: {exc.strerror}") from None
    if not messages:
        detail = f" ({problems[0]})" if problems else ""
        raise UserError(f"{path}: no AMI event in this file{detail}")
    scripts: list[AgiScript] = []
    if agi_path is not None and agi_path.is_file():
        try:
            scripts = parse_agi_log(agi_path)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return Capture(path, tuple(messages), tuple(scripts))


RekeyFunction = Callable[[Sequence[AmiMessage], int], tuple[list[AmiMessage], dict[str, str]]]


def rekey_copy(
    messages: Sequence[AmiMessage], copy: int
) -> tuple[list[AmiMessage], dict[str, str]]:
    """Copy ``copy`` of a capture through the re-keying helper, plus what it renamed.

    The map (old value → new value: Uniqueids, channel names, caller numbers)
    is what the capture's ``agi.log`` environment needs to match the copy.
    """
    from ami_daemon.ami.rekey import rekey_one

    copied = rekey_one(messages, copy, prefix="sim")
    translate: dict[str, str] = {}
    for old, new in zip(messages, copied, strict=True):
        for (_, before), (_, after) in zip(old.headers, new.headers, strict=True):
            if before != after:
                translate[before] = after
    return copied, translate


def _timestamp(message: AmiMessage) -> float | None:
    raw = message.get("Timestamp")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def _shifted(message: AmiMessage, shift: float) -> AmiMessage:
    if not shift or "Timestamp" not in message:
        return message
    headers = [
        (k, f"{float(v) + shift:.6f}" if k == "Timestamp" and _is_float(v) else v)
        for k, v in message.headers
    ]
    return AmiMessage(headers, message.offset)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _agi_trigger(messages: Sequence[AmiMessage], script: AgiScript) -> int:
    """Index of the event at which Asterisk started this AGI (0 when unknown)."""
    uniqueid = script.uniqueid
    fallback = None
    for index, message in enumerate(messages):
        if message.get("Uniqueid") != uniqueid:
            continue
        event = message.get("Event")
        if event == "Newexten" and message.get("Application") == "AGI":
            return index
        if event == "AGIExecStart" and fallback is None:
            fallback = index
    return fallback if fallback is not None else 0


def build_timeline(
    captures: Sequence[Capture],
    *,
    copies: int = 1,
    interleave: float | None = None,
    gap: float = 1.0,
    rekey: RekeyFunction | None = None,
) -> Timeline:
    """Place ``copies`` of each capture on one clock (see the module docstring).

    Items are the captures in order, each repeated ``copies`` times; every
    repeat of a capture already placed (``n > 0``) is re-keyed with ``rekey``
    (default: the re-keying helper, :func:`rekey_copy`).  Item
    ``k`` starts ``gap`` seconds after item ``k-1`` ended, or ``interleave``
    seconds after it started.
    """
    if copies < 1:
        raise UserError(f"--copies must be at least 1, got {copies}")
    plan: list[tuple[Capture, int]] = [(c, n) for c in captures for n in range(copies)]
    rekey = rekey or rekey_copy
    seen: dict[Path, int] = {}
    keyed: list[tuple[float, int, int, ReplayEvent]] = []
    agi_at: dict[tuple[int, int], list[AgiScript]] = {}
    base: float | None = None
    previous_start = previous_end = None
    for item, (capture, _) in enumerate(plan):
        copy = seen.get(capture.path, 0)
        seen[capture.path] = copy + 1
        messages: Sequence[AmiMessage] = capture.messages
        scripts = list(capture.agi)
        if copy > 0:
            messages, translate = rekey(capture.messages, copy)
            scripts = [s.rewritten(translate) for s in scripts]
        times = [t for t in (_timestamp(m) for m in messages) if t is not None]
        first = times[0] if times else None
        last = times[-1] if times else None
        if first is None or last is None:
            start = previous_end if previous_end is not None else 0.0
            shift = 0.0
        elif base is None:
            start, shift = first, 0.0
        elif interleave is not None and previous_start is not None:
            start = previous_start + interleave
            shift = start - first
        else:
            start = (previous_end if previous_end is not None else first) + gap
            shift = start - first
        if base is None and first is not None:
            base = first
        clock = start
        for index, message in enumerate(messages):
            shifted = _shifted(message, shift)
            at = _timestamp(shifted)
            if at is not None:
                clock = at
            event = ReplayEvent(shifted, encode(shifted.headers), at, item)
            keyed.append((clock, item, index, event))
        end = clock
        previous_start = start
        previous_end = max(end, previous_end) if previous_end is not None else end
        for script in scripts:
            agi_at.setdefault((item, _agi_trigger(messages, script)), []).append(script)
    keyed.sort(key=lambda entry: (entry[0], entry[1], entry[2]))
    agi: dict[int, tuple[AgiScript, ...]] = {}
    for position, (_, item, index, _event) in enumerate(keyed):
        scripts_here = agi_at.get((item, index))
        if scripts_here:
            agi[position] = tuple(scripts_here)
    return Timeline(tuple(e for *_, e in keyed), agi, len(plan))
