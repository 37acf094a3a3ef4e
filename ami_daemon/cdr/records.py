"""Asterisk CDR records, read from CSV files or from a PostgreSQL table.

Asterisk writes one CDR per *leg* (a caller channel and the channel it dialled
or bridged with), not per call: a queue call that rang 201 twice and then 202
is three records.  ``linkedid`` (Asterisk 1.8+) is the same for every leg of a
conversation and equals the call id the AMI tracker reports, which is what lets
the backfill group legs into calls and match calls the daemon already wrote.

Sources:

- ``cdr_csv`` (``Master.csv``): fixed columns ``accountcode, src, dst,
  dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end,
  duration, billsec, disposition, amaflags`` then ``uniqueid`` (with
  ``loguniqueid = yes``) and ``userfield`` (with ``loguserfield = yes``).  It has
  **no linkedid**: legs are grouped by the caller channel's ``uniqueid``, which
  is the linkedid for a call that starts on that channel, and is best effort
  otherwise (transfers and originates split into several calls).
- ``cdr_custom`` with our template (asterisk-conf/cdr_custom.conf): the same
  18 columns followed by ``linkedid`` and ``sequence``.
- ``cdr_pgsql``: a table with at least ``calldate`` (or ``start``), ``src``,
  ``dst``, ``channel``, ``dstchannel``, ``lastapp``, ``lastdata``, ``duration``,
  ``billsec``, ``disposition``, ``uniqueid``, ``linkedid`` (asterisk-conf/cdr_pgsql.sql).

Times in CSV are local wall-clock times of the PBX (``usegmtime = no``) and are
read in ``pbx.timezone``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

STANDARD_COLUMNS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
)
#: ``1795797192.0``; with ``systemname`` set in asterisk.conf Asterisk prefixes
#: every Uniqueid and Linkedid with it: ``pbx1-1795797192.0``.
_UNIQUEID = re.compile(r"^(?:[\w.-]+-)?\d+\.\d+$")


class CdrFormatError(ValueError):
    """A CDR line or row that cannot be read; the message names where and why."""


@dataclass(frozen=True)
class CdrRecord:
    """One leg of a call as Asterisk's CDR engine recorded it."""

    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime
    answer: datetime | None
    end: datetime
    duration: int
    billsec: int
    disposition: str  # ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION
    uniqueid: str | None
    linkedid: str | None
    sequence: int | None = None

    @property
    def call_key(self) -> str | None:
        """The conversation this leg belongs to: linkedid, else the caller's uniqueid."""
        return self.linkedid or self.uniqueid


def _time(value: str, zone: tzinfo, where: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CdrFormatError(f"{where}: not a date and time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def _int(value: Any, where: str, name: str) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        raise CdrFormatError(f"{where}: {name} is not a number: {value!r}") from None


def parse_csv(
    text: str, zone: tzinfo, source: str = "cdr.csv"
) -> tuple[list[CdrRecord], list[str]]:
    """Records of a ``cdr_csv`` or our ``cdr_custom`` file; bad lines become messages."""
    records: list[CdrRecord] = []
    problems: list[str] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(row):
            continue
        where = f"{source}:{number}"
        try:
            records.append(_from_csv_row(row, zone, where))
        except CdrFormatError as exc:
            problems.append(str(exc))
    return records, problems


def _from_csv_row(row: list[str], zone: tzinfo, where: str) -> CdrRecord:
    if len(row) < len(STANDARD_COLUMNS):
        raise CdrFormatError(
            f"{where}: {len(row)} columns, a CDR has at least {len(STANDARD_COLUMNS)}"
        )
    fields = dict(zip(STANDARD_COLUMNS, row, strict=False))
    extra = row[len(STANDARD_COLUMNS) :]
    uniqueid = linkedid = None
    sequence: int | None = None
    if extra and _UNIQUEID.match(extra[0]):
        uniqueid = extra[0]
    if len(extra) >= 4 and _UNIQUEID.match(extra[2]):
        # our cdr_custom template: ..., uniqueid, userfield, linkedid, sequence
        linkedid = extra[2]
        sequence = _int(extra[3], where, "sequence") if extra[3].strip() else None
    return _record(fields, uniqueid, linkedid, sequence, zone, where)


def _record(
    fields: Mapping[str, Any],
    uniqueid: str | None,
    linkedid: str | None,
    sequence: int | None,
    zone: tzinfo,
    where: str,
) -> CdrRecord:
    start = fields.get("start")
    start_at = start if isinstance(start, datetime) else _time(str(start or ""), zone, where)
    if start_at is None:
        raise CdrFormatError(f"{where}: no start time")
    if start_at.tzinfo is None:
        start_at = start_at.replace(tzinfo=zone).astimezone(UTC)
    duration = _int(fields.get("duration"), where, "duration")
    billsec = _int(fields.get("billsec"), where, "billsec")
    answer = fields.get("answer")
    end = fields.get("end")
    answer_at = answer if isinstance(answer, datetime) else _time(str(answer or ""), zone, where)
    end_at = end if isinstance(end, datetime) else _time(str(end or ""), zone, where)
    if end_at is None:
        end_at = start_at + timedelta(seconds=duration)
    if answer_at is None and billsec > 0:
        answer_at = end_at - timedelta(seconds=billsec)
    return CdrRecord(
        src=str(fields.get("src") or ""),
        dst=str(fields.get("dst") or ""),
        dcontext=str(fields.get("dcontext") or ""),
        clid=str(fields.get("clid") or ""),
        channel=str(fields.get("channel") or ""),
        dstchannel=str(fields.get("dstchannel") or ""),
        lastapp=str(fields.get("lastapp") or ""),
        lastdata=str(fields.get("lastdata") or ""),
        start=start_at,
        answer=answer_at,
        end=end_at,
        duration=duration,
        billsec=billsec,
        disposition=str(fields.get("disposition") or "").strip().upper(),
        uniqueid=uniqueid,
        linkedid=linkedid,
        sequence=sequence,
    )


def from_table_rows(
    rows: Iterable[Mapping[str, Any]], zone: tzinfo, source: str = "cdr"
) -> tuple[list[CdrRecord], list[str]]:
    """Records from ``cdr_pgsql`` rows (``calldate`` or ``start`` is the start)."""
    records: list[CdrRecord] = []
    problems: list[str] = []
    for index, row in enumerate(rows, start=1):
        fields = dict(row)
        if "start" not in fields or fields["start"] is None:
            fields["start"] = fields.get("calldate")
        where = f"{source} row {index}"
        try:
            seq = fields.get("sequence")
            records.append(
                _record(
                    fields,
                    str(fields["uniqueid"]) if fields.get("uniqueid") else None,
                    str(fields["linkedid"]) if fields.get("linkedid") else None,
                    int(seq) if seq not in (None, "") else None,
                    zone,
                    where,
                )
            )
        except CdrFormatError as exc:
            problems.append(str(exc))
    return records, problems
