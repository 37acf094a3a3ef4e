"""Re-keying: one recorded capture turned into many distinct, interleaved calls.

Generated traffic for benchmarks, the PBX simulator and load tests, built from
real Asterisk event sequences rather than invented ones — never an edit of a
capture.  Copy ``k`` of a capture gets:

* fresh identifiers: every ``…Uniqueid``/``…Linkedid`` value (``Uniqueid``,
  ``DestLinkedid``, ``TransfereeUniqueid``, ``Cdr``'s ``UniqueID``…) mapped
  consistently, so a channel's Linkedid still names the first channel of its
  call; channel names get a per-copy sequence (``SIP/201-00000001`` →
  ``SIP/201-00000001k7``, keeping ``;1``/``;2`` at the end of Local names so
  the halves still pair) and bridges a per-copy ``BridgeUniqueid``;
* a distinct outside caller: every caller/connected-line number of seven or
  more digits has its last five digits shifted by the copy number (an
  extension such as ``201`` is left alone, so phones stay themselves);
* a time shift of ``k * stagger`` seconds on ``Timestamp`` headers.

The copies are merged in time order (``Timestamp``, else the position in the
capture spaced one second apart), so calls overlap the way concurrent calls do
on a busy PBX.  Only events are kept (responses and the banner are not).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence

from ami_daemon.ami.reader import AmiMessage

#: Digits a number needs before it is treated as an outside number and varied.
_MIN_NUMBER_DIGITS = 7
_NUMBER_KEYS = ("CallerIDNum", "ConnectedLineNum")


def _headers(event: Mapping[str, str]) -> list[tuple[str, str]]:
    headers = getattr(event, "headers", None)
    if headers is not None:
        return list(headers)
    return list(event.items())


def _is_id_key(key: str) -> bool:
    lowered = key.lower()
    return lowered.endswith("uniqueid") or lowered.endswith("linkedid")


def _rename_channel(name: str, tag: str) -> str:
    if not name or name == "<unknown>":
        return name
    if len(name) > 2 and name[-2] == ";":
        return name[:-2] + tag + name[-2:]
    return name + tag


def _vary_number(number: str, copy: int) -> str:
    digits = number[1:] if number.startswith("+") else number
    if len(digits) < _MIN_NUMBER_DIGITS or not digits.isdigit():
        return number
    tail = (int(digits[-5:]) + copy * 7919) % 100000
    return number[: len(number) - 5] + f"{tail:05d}"


def rekey_one(
    events: Sequence[Mapping[str, str]], copy: int, shift: float = 0.0, prefix: str = "rk"
) -> list[AmiMessage]:
    """Copy number ``copy`` of ``events``: fresh ids, caller numbers and times.

    Non-events (responses) are dropped; every event keeps its headers one for
    one, in order, only values changed (the simulator pairs them up to carry
    the renames over to the capture's AGI dialogue).
    """
    tag = f"k{copy}"
    id_prefix = f"{prefix}{copy}-"
    out: list[AmiMessage] = []
    for event in events:
        if "Event" not in event:
            continue
        headers: list[tuple[str, str]] = []
        for key, value in _headers(event):
            if _is_id_key(key) and value:
                value = id_prefix + value
            elif key.endswith("Channel") or key == "Newname":
                value = _rename_channel(value, tag)
            elif key.endswith("BridgeUniqueid") and value:
                value = f"{value}-{tag}"
            elif key.endswith(_NUMBER_KEYS):
                value = _vary_number(value, copy)
            elif key == "Timestamp" and shift:
                with contextlib.suppress(ValueError):
                    value = f"{float(value) + shift:.6f}"
            headers.append((key, value))
        out.append(AmiMessage(headers, getattr(event, "offset", 0)))
    return out


def rekey(
    events: Sequence[Mapping[str, str]], copies: int, stagger: float = 0.5, prefix: str = "rk"
) -> Iterator[AmiMessage]:
    """``copies`` re-keyed copies of ``events``, each started ``stagger`` seconds
    after the previous one, interleaved in time order."""
    streams = []
    for k in range(copies):
        copy = rekey_one(events, k, shift=k * stagger, prefix=prefix)
        streams.append(_timed(copy, k * stagger))
    for _when, _k, _i, message in heapq.merge(*streams):
        yield message


def _timed(
    messages: list[AmiMessage], shift: float
) -> Iterator[tuple[float, int, int, AmiMessage]]:
    """Sort keys: the event's Timestamp, else its index (one second apart) plus shift."""
    last = shift
    for i, message in enumerate(messages):
        stamp = message.get("Timestamp")
        when = last
        if stamp:
            try:
                when = float(stamp)
            except ValueError:
                when = last
        elif i:
            when = shift + i
        last = when
        yield when, id(messages), i, message


def mix(
    captures: Iterable[Sequence[Mapping[str, str]]], copies: int, stagger: float = 0.5
) -> list[AmiMessage]:
    """Several captures re-keyed together: each capture ``copies`` times, all interleaved.

    Copies of different captures get different id prefixes, so their calls never collide.
    """
    streams = [
        rekey(events, copies, stagger, prefix=f"rk{n}x") for n, events in enumerate(captures)
    ]
    # Captures come from different days: line each one up to start at time 0.
    aligned = [_align(list(s)) for s in streams]
    return [m for _when, _n, _i, m in heapq.merge(*aligned)]


def _align(messages: list[AmiMessage]) -> list[tuple[float, int, int, AmiMessage]]:
    start: float | None = None
    keyed = []
    for i, message in enumerate(messages):
        stamp = message.get("Timestamp")
        try:
            when = float(stamp) if stamp else float(i)
        except ValueError:
            when = float(i)
        if start is None:
            start = when
        keyed.append((when - start, id(messages), i, message))
    keyed.sort(key=lambda x: (x[0], x[2]))
    return keyed


def encode(messages: Iterable[Mapping[str, str]]) -> bytes:
    """AMI wire bytes (``Key: Value`` lines, CRLF, blank line after each message)."""
    parts: list[str] = []
    for message in messages:
        for key, value in _headers(message):
            parts.append(f"{key}: {value}\r\n")
        parts.append("\r\n")
    return "".join(parts).encode("utf-8")
