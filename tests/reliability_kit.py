"""What the fault tests share: lab timelines on today's clock, their truth, their CDR.

- :func:`timeline_now` places lab captures (and re-keyed copies) so that the
  replay's ``Timestamp`` headers end a few seconds before *now*: on a real PBX
  the event times, the daemon's clock and the CDR's times are one clock, and
  the backfill windows (state.json, link-down time) are on the daemon's clock.
- :func:`expected_calls` runs the timeline through a fresh tracker (pure, no
  I/O): the calls the daemon must end up writing, keyed by call id.
- :func:`cdr_custom_for` writes what Asterisk's ``cdr_custom`` with our
  template (asterisk-conf/cdr_custom.conf) would have written for the replay:
  each capture's real ``cdr.csv`` rows, carried over to each copy with the same
  renames the re-keying made (Uniqueids, channel names, caller numbers) and the
  copy's time shift, local times in the PBX's zone, ``linkedid`` = the call id.
- :func:`lab_config` / :func:`write_config_file`: a daemon configuration for
  the lab (in-process object, or a YAML file for ``ami-daemon run``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from ami_daemon.ami.reader import AmiMessage
from ami_daemon.ami.timeline import Capture, ReplayEvent, Timeline, build_timeline, rekey_copy
from ami_daemon.calls.summary import CallSummary
from ami_daemon.calls.tracker import Tracker
from ami_daemon.config import (
    AgiConfig,
    AmiConfig,
    CdrConfig,
    Config,
    DatabaseConfig,
    MetricsConfig,
    SpoolConfig,
    load,
)
from ami_daemon.rules.loader import default_rules_path
from tests.paths import REPO, TRACES

SECRET = "s3cret"
LAB = sorted((TRACES / "asterisk20").glob("[0-9]*"))
ZONE = ZoneInfo("Europe/Madrid")
LAB_YAML = REPO / "tests" / "tracker_configs" / "lab.yaml"


def lab_config(
    dsn: str,
    ami_port: int,
    spool: Path,
    *,
    pbx: str = "main",
    cdr: Path | None = None,
    ping: float = 5.0,
) -> Config:
    """The lab PBX, AGI off, metrics off (read in-process), fast reconnects.

    ``ping``: the AMI keepalive's interval and timeout (a half-open link is
    noticed after about twice this)."""
    base = load(LAB_YAML, {})
    return dataclasses.replace(
        base,
        pbx=dataclasses.replace(base.pbx, name=pbx, timezone="Europe/Madrid"),
        ami=AmiConfig(
            port=ami_port,
            username="ami-daemon",
            secret=SECRET,
            reconnect_max_delay=0.3,
            ping_interval=ping,
            ping_timeout=ping,
        ),
        database=DatabaseConfig(dsn=dsn, connect_timeout=2.0),
        agi=AgiConfig(enabled=False),
        metrics=MetricsConfig(enabled=False),
        spool=SpoolConfig(path=spool),
        rules=dataclasses.replace(base.rules, path=default_rules_path()),
        cdr=CdrConfig(source="csv", path=cdr) if cdr is not None else CdrConfig(),
    )


def write_config_file(
    path: Path,
    dsn: str,
    ami_port: int,
    spool: Path,
    *,
    pbx: str = "main",
    cdr: Path | None = None,
    level: str = "INFO",
) -> Path:
    """The same configuration as a config.yaml for ``ami-daemon run --config``."""
    data = yaml.safe_load(LAB_YAML.read_text())
    data["pbx"]["name"] = pbx
    data.update(
        ami={
            "host": "127.0.0.1",
            "port": ami_port,
            "username": "ami-daemon",
            "secret": SECRET,
            "reconnect_max_delay": 0.3,
            "ping_interval": 5.0,
        },
        database={"dsn": dsn, "connect_timeout": 2.0},
        agi={"enabled": False},
        metrics={"enabled": False},
        spool={"path": str(spool)},
        rules={"path": str(default_rules_path())},
        logging={"level": level, "format": "text"},
        cdr={"source": "csv", "path": str(cdr)} if cdr is not None else {"source": "none"},
    )
    path.write_text(yaml.safe_dump(data))
    return path


def load_lab(names: Iterable[str] | None = None) -> list[Capture]:
    from ami_daemon.ami.timeline import load_capture

    """Lab captures by number prefix (``["04", "01"]``), in the order given."""
    folders = LAB if names is None else [f for n in names for f in LAB if f.name[:2] == n]
    return [load_capture(f) for f in folders]


def timeline_now(
    captures: Sequence[Capture],
    *,
    copies: int = 1,
    interleave: float | None = None,
    ends_before: float = 3.0,
) -> Timeline:
    """``build_timeline`` with every Timestamp moved so the last one is ``ends_before`` s ago."""
    built = build_timeline(captures, copies=copies, interleave=interleave)
    last = max(e.at for e in built.events if e.at is not None)
    shift = time.time() - ends_before - last
    events = []
    for event in built.events:
        message = event.message
        if event.at is not None:
            headers = [
                (k, f"{float(v) + shift:.6f}" if k == "Timestamp" else v)
                for k, v in message.headers
            ]
            message = AmiMessage(headers, message.offset)
        events.append(
            ReplayEvent(
                message,
                _encode(message),
                None if event.at is None else event.at + shift,
                event.item,
            )
        )
    return Timeline(tuple(events), built.agi, built.items)


def _encode(message: AmiMessage) -> bytes:
    from ami_daemon.ami.timeline import encode

    return encode(message.headers)


def expected_calls(events: Iterable[ReplayEvent], pbx: str = "main") -> dict[str, CallSummary]:
    """What a tracker that saw every event reports, by call id (open calls at the end too)."""
    config = dataclasses.replace(load(LAB_YAML, {}).pbx, name=pbx, timezone="Europe/Madrid")
    tracker = Tracker(config)
    out: dict[str, CallSummary] = {}
    for event in events:
        for summary in tracker.feed(event.message):
            out[summary.call_id] = summary
    for summary in tracker.finish():
        out[summary.call_id] = summary
    return out


def _call_id_of(capture: Capture) -> str:
    calls = expected_calls(ReplayEvent(m, b"", None, 0) for m in capture.messages if "Event" in m)
    assert len(calls) == 1, f"{capture.path}: one call per lab capture expected"
    return next(iter(calls))


def cdr_custom_for(timeline: Timeline, captures: Sequence[Capture], copies: int) -> list[list[str]]:
    """The rows ``cdr_custom`` (our template) would hold for this replay, by start time."""
    first_at: dict[int, float] = {}
    for event in timeline.events:
        if event.at is not None and event.item not in first_at:
            first_at[event.item] = event.at
    rows: list[tuple[datetime, list[str]]] = []
    for item in range(timeline.items):
        capture = captures[item // copies]
        copy = item % copies
        translate: dict[str, str] = {}
        if copy:
            _, translate = rekey_copy(capture.messages, copy)
        origin = next(float(m["Timestamp"]) for m in capture.messages if "Timestamp" in m)
        shift = timedelta(seconds=first_at[item] - origin)
        call_id = _call_id_of(capture)
        linkedid = translate.get(call_id, call_id)
        cdr_path = capture.path.parent / "cdr.csv"
        for sequence, lab_row in enumerate(csv.reader(io.StringIO(cdr_path.read_text()))):
            if not lab_row:
                continue
            row = list(lab_row[:16])
            row[1] = translate.get(row[1], row[1])  # src: the caller's number
            row[5] = translate.get(row[5], row[5])  # channel
            row[6] = translate.get(row[6], row[6])  # dstchannel
            for column in (9, 10, 11):  # start, answer, end: the lab wrote UTC
                if row[column]:
                    at = datetime.fromisoformat(row[column]).replace(tzinfo=UTC) + shift
                    row[column] = at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")
            uniqueid = translate.get(lab_row[16], lab_row[16])
            row += [uniqueid, "", linkedid, str(sequence)]
            rows.append((datetime.fromisoformat(row[9]), row))
    rows.sort(key=lambda r: r[0])
    return [r for _, r in rows]


def write_cdr(path: Path, rows: Iterable[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for row in rows:
        writer.writerow([int(v) if i in (12, 13) else v for i, v in enumerate(row)])
    path.write_text(buffer.getvalue())
    return path


def split_at_cut(
    timeline: Timeline, drop_after: int, lost_events: int, pbx: str = "main"
) -> tuple[set[str], set[str], set[str], set[str]]:
    """What a daemon cut off after ``drop_after`` events, ``lost_events`` lost, must see.

    Returns (ended before the cut, held = ended during the cut while tracked,
    unseen = started and ended during the cut, still live at the reconnect),
    computed the way the daemon and the simulator do it: the tracker fed the
    events before the cut, the simulator's live channels after the lost ones.
    """
    config = dataclasses.replace(load(LAB_YAML, {}).pbx, name=pbx, timezone="Europe/Madrid")
    tracker = Tracker(config)
    before: set[str] = set()
    events = timeline.events
    for event in events[:drop_after]:
        before |= {s.call_id for s in tracker.feed(event.message)}
    alive: dict[str, str] = {}
    for event in events[: drop_after + lost_events]:
        message = event.message
        uid = message.get("Uniqueid")
        if uid is None:
            continue
        if message.get("Event") == "Newchannel":
            alive[uid] = message.get("Linkedid", "")
        elif message.get("Event") == "Hangup":
            alive.pop(uid, None)
        elif uid in alive and message.get("Linkedid"):
            alive[uid] = message["Linkedid"]
    held = {s.call_id for s in tracker.end_missing(alive)}
    live = set(alive.values())
    lost = range(drop_after, drop_after + lost_events)
    inside: set[str] = set()
    outside: set[str] = set()
    for index, event in enumerate(events):
        linkedid = event.message.get("Linkedid")
        if linkedid:
            (inside if index in lost else outside).add(linkedid)
    unseen = (inside - outside) & set(expected_calls(events, pbx))
    return before, held, unseen, live
