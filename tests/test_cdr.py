"""CDR records → calls: the shared real CDRs against their ground truth."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from ami_daemon.calls.summary import CallStatus, Direction
from ami_daemon.cdr.calls import summaries_from_records
from ami_daemon.cdr.records import from_table_rows, parse_csv
from ami_daemon.config import PbxConfig
from tests.paths import TRACES

PBX = PbxConfig(name="main", region="ES")
UTC_ZONE = ZoneInfo("UTC")
SCENARIOS = sorted((TRACES / "asterisk20").glob("*/cdr.csv"))


def expected_status(call: dict[str, object]) -> CallStatus:
    if call["answered"]:
        return CallStatus.ANSWERED
    if call["direction"] == "inbound":
        return CallStatus.MISSED
    return {
        "BUSY": CallStatus.BUSY,
        "NOANSWER": CallStatus.NO_ANSWER,
        "CANCEL": CallStatus.NO_ANSWER,
    }.get(str(call.get("dial_status")), CallStatus.FAILED)


@pytest.mark.parametrize("cdr", SCENARIOS, ids=lambda p: p.parent.name)
def test_shared_cdrs_give_the_expected_calls(cdr: Path) -> None:
    records, problems = parse_csv(cdr.read_text(), UTC_ZONE, str(cdr))
    assert problems == []
    calls = summaries_from_records(records, PBX)
    expected = yaml.safe_load((cdr.parent / "expected.yaml").read_text())["calls"]
    assert len(calls) == len(expected)
    for call, truth in zip(calls, expected, strict=True):
        assert call.direction is Direction(truth["direction"])
        assert call.external_number == truth["external_number_e164"]
        assert call.status is expected_status(truth)
        if truth["direction"] == "outbound":
            assert call.caller_extension == truth["internal_extension"]
            assert call.answered_by is None and call.final_agent == truth["internal_extension"]
        else:
            assert call.answered_by == truth["answered_by"]
            assert call.final_agent == truth["final_agent"]
        if truth["direction"] == "inbound":
            assert list(call.agents_rung) == list(dict.fromkeys(truth["agents_rung"]))
            assert call.queue == truth["queue"]
            assert call.trunk == "trunk"
        assert call.talk_seconds is not None
        assert abs(call.talk_seconds - truth["talk_seconds_approx"]) <= 1


def test_inbound_did_is_read_unless_a_transfer_rewrote_it() -> None:
    records, _ = parse_csv(
        (TRACES / "asterisk20/01_inbound_queue_201_caller_hangup/cdr.csv").read_text(), UTC_ZONE
    )
    (call,) = summaries_from_records(records, PBX)
    assert call.did == "+34911234567"
    records, _ = parse_csv(
        (TRACES / "asterisk20/04_inbound_queue_201_blind_transfer_to_202/cdr.csv").read_text(),
        UTC_ZONE,
    )
    (call,) = summaries_from_records(records, PBX)
    assert call.did is None  # Asterisk rewrote dst to the transfer target 202


def test_busy_outbound_ignores_the_extra_zero_second_answered_leg() -> None:
    records, _ = parse_csv(
        (TRACES / "asterisk20/07_outbound_201_to_external_busy/cdr.csv").read_text(), UTC_ZONE
    )
    assert len(records) == 2 and records[1].disposition == "ANSWERED"
    (call,) = summaries_from_records(records, PBX)
    assert call.status is CallStatus.BUSY


CUSTOM = (
    '"","600111224","911234567","from-trunk","","SIP/trunk-00000007","SIP/201-00000008",'
    '"Queue","sales,t,,,20","2026-11-27 17:33:47","2026-11-27 17:33:48","2026-11-27 17:33:51",'
    '4,3,"ANSWERED","DOCUMENTATION","1795797227.7","","1795797227.7","1"\n'
    '"","201","202","internal","","Local/202@internal-00000001;2","SIP/202-00000009",'
    '"Dial","SIP/202,20","2026-11-27 17:33:50","2026-11-27 17:33:51","2026-11-27 17:33:56",'
    '6,5,"ANSWERED","DOCUMENTATION","1795797230.9","","1795797227.7","2"\n'
    "garbage line\n"
)


def test_custom_csv_with_linkedid_groups_legs_and_reads_local_time() -> None:
    records, problems = parse_csv(CUSTOM, ZoneInfo("Europe/Madrid"), "Master.csv")
    assert problems == ["Master.csv:3: 1 columns, a CDR has at least 16"]
    assert [r.linkedid for r in records] == ["1795797227.7", "1795797227.7"]
    (call,) = summaries_from_records(records, PBX)
    assert call.call_id == "1795797227.7"
    assert call.started_at == datetime(2026, 11, 27, 16, 33, 47, tzinfo=UTC)
    assert (call.answered_by, call.final_agent) == ("201", "202")
    assert call.agents_rung == ("201", "202")


def test_pgsql_rows_and_the_time_window() -> None:
    rows = [
        {
            "calldate": datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
            "src": "600111222",
            "dst": "911234567",
            "channel": "SIP/trunk-00000001",
            "dstchannel": "SIP/201-00000002",
            "lastapp": "Queue",
            "lastdata": "sales",
            "duration": 30,
            "billsec": 20,
            "disposition": "ANSWERED",
            "uniqueid": "1.1",
            "linkedid": "1.1",
        },
        {
            "calldate": datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
            "src": "anonymous",
            "dst": "911234567",
            "channel": "SIP/trunk-00000003",
            "dstchannel": "SIP/202-00000004",
            "lastapp": "Queue",
            "lastdata": "sales",
            "duration": 10,
            "billsec": 0,
            "disposition": "NO ANSWER",
            "uniqueid": "2.1",
            "linkedid": "2.1",
        },
    ]
    records, problems = from_table_rows(rows, UTC_ZONE)
    assert problems == []
    first, second = summaries_from_records(records, PBX)
    assert first.answered_at == datetime(2026, 11, 27, 10, 0, 10, tzinfo=UTC)
    assert first.talk_seconds == 20
    assert second.status is CallStatus.MISSED and second.external_number is None
    window = summaries_from_records(records, PBX, since=datetime(2026, 11, 27, 11, tzinfo=UTC))
    assert [c.call_id for c in window] == ["2.1"]


@pytest.mark.asyncio
async def test_pgsql_source_reads_the_window_from_the_documented_table(dsn: str) -> None:
    import asyncpg

    from ami_daemon.cdr.sources import CdrUnavailable, read_pgsql
    from tests.paths import REPO

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute((REPO / "asterisk-conf" / "cdr_pgsql.sql").read_text())
        records, _ = parse_csv(
            (TRACES / "asterisk20/04_inbound_queue_201_blind_transfer_to_202/cdr.csv").read_text(),
            UTC_ZONE,
        )
        for r in records:
            await conn.execute(
                'INSERT INTO cdr (calldate, start, answer, "end", src, dst, channel, dstchannel,'
                " lastapp, lastdata, duration, billsec, disposition, uniqueid, linkedid) "
                "VALUES ($1,$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                r.start,
                r.answer,
                r.end,
                r.src,
                r.dst,
                r.channel,
                r.dstchannel,
                r.lastapp,
                r.lastdata,
                r.duration,
                r.billsec,
                r.disposition,
                r.uniqueid,
                r.uniqueid,
            )
    finally:
        await conn.close()
    since = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    until = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    rows, problems = await read_pgsql(dsn, "cdr", since, until, UTC_ZONE)
    assert problems == [] and len(rows) == 2
    (call,) = summaries_from_records(rows, PBX, since, until)
    assert (call.call_id, call.answered_by, call.final_agent) == ("1795797227.7", "201", "202")
    empty, _ = await read_pgsql(dsn, "cdr", until, until + (until - since), UTC_ZONE)
    assert empty == []
    with pytest.raises(CdrUnavailable, match="CDR table missing_table"):
        await read_pgsql(dsn, "missing_table", since, until, UTC_ZONE)
