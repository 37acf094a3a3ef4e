"""The demo's day of calls, derived from the shipped real captures.

Each call of the day is one recorded Asterisk call.  Where the story needs
another caller or another dialled number, the recording is re-keyed (fresh
Uniqueids/Linkedids and channel names, so that it is a different call) and
exact header values are replaced: the caller number, or the DID.  The events
themselves are Asterisk's, in Asterisk's order; only who called changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from ami_daemon.ami.reader import AmiMessage
from ami_daemon.ami.timeline import Capture, load_capture, rekey_copy

#: When the demo's day starts (the first call): 09:00 in Madrid.
DAY_STARTS = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
#: Seconds between the end of one call and the start of the next on the replay clock.
GAP_SECONDS = 1500.0


@dataclass(frozen=True)
class DemoCall:
    """One call of the day: the recording it replays and what it shows."""

    capture: str
    story: str
    replace: Mapping[str, str] = field(default_factory=dict)


PLAN: tuple[DemoCall, ...] = (
    DemoCall("01_inbound_queue_201_caller_hangup", "new caller on the sales line, 201 answers"),
    DemoCall(
        "02_inbound_known_client_direct_202_agent_hangup",
        "Marta Ruiz (client of 202) is routed straight to 202",
    ),
    DemoCall(
        "03_inbound_support_queue_no_answer_caller_gives_up",
        "new caller on the support line, nobody answers",
    ),
    DemoCall(
        "04_inbound_queue_201_blind_transfer_to_202", "new caller, 201 answers and transfers to 202"
    ),
    DemoCall(
        "10_inbound_abandoned_while_ringing",
        "Pedro Gil (client of 203) hangs up while it rings",
        {"600111226": "600555666"},
    ),
    DemoCall(
        "13_inbound_from_employee_mobile_queue_201", "employee 201 calls the office from her mobile"
    ),
    DemoCall(
        "01_inbound_queue_201_caller_hangup",
        "the door intercom gateway (on the exception list) calls",
        {"600111222": "910000000"},
    ),
    DemoCall("06_outbound_201_to_external_answered", "201 calls a supplier, who answers"),
    DemoCall("07_outbound_201_to_external_busy", "201 calls the supplier again: busy"),
    DemoCall("08_internal_201_to_202", "201 calls 202 (internal)"),
    DemoCall(
        "01_inbound_queue_201_caller_hangup",
        "a radio listener calls the campaign number",
        {"600111222": "600777888", "911234567": "930000000"},
    ),
    DemoCall(
        "01_inbound_queue_201_caller_hangup",
        "Pedro Gil calls back, 201 answers",
        {"600111222": "600555666"},
    ),
)


def captures_folder() -> Path:
    """The recordings shipped in the package (verbatim copies of the lab captures)."""
    return Path(str(resources.files("ami_daemon.demo") / "captures"))


def _substitute(
    messages: Sequence[AmiMessage], values: Mapping[str, str], shift: float
) -> list[AmiMessage]:
    out = []
    for message in messages:
        headers = []
        for key, value in message.headers:
            if key == "Timestamp" and shift:
                value = f"{float(value) + shift:.6f}"
            else:
                value = values.get(value, value)
            headers.append((key, value))
        out.append(AmiMessage(headers, message.offset))
    return out


def build_captures(plan: Sequence[DemoCall] = PLAN, folder: Path | None = None) -> list[Capture]:
    """The plan's calls as captures for the simulator, each a distinct call."""
    folder = folder or captures_folder()
    loaded: dict[str, Capture] = {}
    uses: dict[str, int] = {}
    result: list[Capture] = []
    for index, call in enumerate(plan):
        if call.capture not in loaded:
            loaded[call.capture] = load_capture(folder / call.capture / "ami.raw")
        original = loaded[call.capture]
        used = uses.get(call.capture, 0)
        uses[call.capture] = used + 1
        shift = 0.0
        if index == 0:
            first = next(float(m["Timestamp"]) for m in original.messages if "Timestamp" in m)
            shift = DAY_STARTS.timestamp() - first
        if used == 0 and not call.replace and not shift:
            result.append(original)
            continue
        messages: Sequence[AmiMessage] = original.messages
        translate: dict[str, str] = {}
        if used > 0:
            messages, translate = rekey_copy(original.messages, used)
        values = {translate.get(old, old): new for old, new in call.replace.items()}
        messages = _substitute(messages, values, shift)
        translate.update({old: new for old, new in call.replace.items()})
        scripts = tuple(s.rewritten(translate) for s in original.agi)
        result.append(
            dataclasses.replace(
                original,
                path=original.path.with_name(f"{original.path.name}#{index}"),
                messages=tuple(messages),
                agi=scripts,
            )
        )
    return result
