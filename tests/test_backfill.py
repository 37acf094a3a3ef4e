"""The pure parts of the backfill: completing held calls, the gap, state.json, the spool's rule."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami_daemon.backfill import STATE_FILE, RunState, complete_from_cdr, merge_gap
from ami_daemon.calls.summary import CallStatus, CallSummary, Transfer, TransferKind
from ami_daemon.cdr.calls import summaries_from_records
from ami_daemon.cdr.records import parse_csv
from ami_daemon.config import PbxConfig
from ami_daemon.spool import Spool
from tests.crm_world import STARTED, call, missed

PBX = PbxConfig(name="main", region="ES")


def held_call(call_id: str = "1795797227.7") -> CallSummary:
    """What the tracker knew when the link dropped: answered by 201, then a blind transfer."""
    return call(
        call_id=call_id,
        status=CallStatus.INTERRUPTED,
        final_agent="201",
        transfers=(Transfer(TransferKind.BLIND, "201", "202"),),
        ended_at=None,
        talk_seconds=None,
    )


def test_a_held_call_takes_the_outcome_from_the_cdr_and_keeps_what_only_ami_knew() -> None:
    held = held_call()
    cdr = dataclasses.replace(
        missed(call_id=held.call_id, did=None, agents_rung=("201", "202")),
        status=CallStatus.ANSWERED,
        answered_by="201",
        final_agent="202",
        answered_at=STARTED + timedelta(seconds=1),
        ended_at=STARTED + timedelta(seconds=9),
        talk_seconds=8,
    )
    done = complete_from_cdr(held, cdr)
    assert done.status is CallStatus.ANSWERED
    assert (done.answered_by, done.final_agent) == ("201", "202")
    assert done.ended_at == cdr.ended_at and done.talk_seconds == 8
    assert done.did == "+34911234567"  # the CDR lost it to the transfer; AMI had it
    assert done.transfers == held.transfers
    assert done.agents_rung == ("201", "202")


def test_a_held_call_unknown_to_the_cdr_stays_interrupted() -> None:
    held = held_call()
    assert complete_from_cdr(held, None) is held


def test_merge_gap_completes_held_calls_and_adds_the_cdr_calls_never_seen() -> None:
    held = held_call("a")
    seen_nowhere = missed(call_id="b")
    completed = call(call_id="a")
    merged = merge_gap([held], [completed, seen_nowhere])
    assert [(c.call_id, c.status) for c in merged] == [
        ("a", CallStatus.ANSWERED),
        ("b", CallStatus.MISSED),
    ]


def test_run_state_keeps_the_last_event_time_across_restarts(tmp_path: Path) -> None:
    state = RunState(tmp_path, interval=5.0)
    assert state.previous_last_event_at is None
    state.seen(1000.0)  # first event: written at once
    state.seen(1003.0)  # within the interval: only in memory
    assert json.loads((tmp_path / STATE_FILE).read_text())["last_event_at"] == 1000.0
    state.seen(1006.0)
    assert RunState(tmp_path).previous_last_event_at == 1006.0
    state.seen(1007.0)
    state.save()  # a clean stop
    assert RunState(tmp_path).previous_last_event_at == 1007.0


def test_unreadable_state_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    assert RunState(tmp_path).previous_last_event_at is None
    assert "ignoring unreadable" in caplog.text


def test_spool_keeps_the_first_version_of_a_waiting_call(tmp_path: Path) -> None:
    """The AMI version waits (database down); the backfill's CDR copy of the same
    call is not allowed to replace it, in memory or after a restart."""
    spool = Spool(tmp_path)
    assert spool.append("main\t1", {"did": "+34911234567"})
    assert not spool.append("main\t1", {"did": None})
    assert spool.pending() == [("main\t1", {"did": "+34911234567"})]
    spool.close()
    again = Spool(tmp_path)
    assert again.pending() == [("main\t1", {"did": "+34911234567"})]
    again.ack("main\t1")
    assert again.append("main\t1", {"did": None})  # written meanwhile: a retry is harmless
    again.close()


def test_cdr_with_systemname_prefixed_ids_groups_by_linkedid() -> None:
    """asterisk.conf ``systemname = pbx1`` prefixes every Uniqueid and Linkedid."""
    text = (
        '"","600111222","911234567","from-trunk","","SIP/trunk-00000000","SIP/201-00000001",'
        '"Queue","sales,t,,,20","2026-11-27 17:33:12","2026-11-27 17:33:13",'
        '"2026-11-27 17:33:16",4,3,"ANSWERED","DOCUMENTATION","pbx1-1795797192.0","",'
        '"pbx1-1795797192.0","1"\n'
    )
    records, problems = parse_csv(text, ZoneInfo("Europe/Madrid"))
    assert problems == []
    (only,) = summaries_from_records(records, PBX)
    assert only.call_id == "pbx1-1795797192.0"
    assert only.answered_by == "201"


@pytest.mark.asyncio
async def test_cdr_pgsql_text_times_are_read_as_utc_whatever_the_server_zone(dsn: str) -> None:
    """cdr_pgsql INSERTs its times as text without an offset, in cdr_pgsql.conf's
    ``timezone`` (UTC in ours); cdr_pgsql.sql makes the database's sessions read
    them as UTC, even on a server whose default zone is local (Madrid here)."""
    import asyncpg

    from ami_daemon.cdr.sources import read_pgsql
    from tests.paths import REPO

    name = dsn.rsplit("/", 1)[1].split("?")[0]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Europe/Madrid'")
        await conn.execute((REPO / "asterisk-conf" / "cdr_pgsql.sql").read_text())
    finally:
        await conn.close()
    asterisk = await asyncpg.connect(dsn)  # a new session, as Asterisk's
    try:
        await asterisk.execute(
            'INSERT INTO cdr (calldate, start, answer, "end", src, dst, channel, dstchannel, '
            "lastapp, lastdata, duration, billsec, disposition, uniqueid, linkedid) VALUES "
            "('2026-11-27 16:33:12', '2026-11-27 16:33:12', '2026-11-27 16:33:13', "
            "'2026-11-27 16:33:16', '600111222', '911234567', 'SIP/trunk-00000000', "
            "'SIP/201-00000001', 'Queue', 'sales,t,,,20', 4, 3, 'ANSWERED', "
            "'1795797192.0', '1795797192.0')"
        )
    finally:
        await asterisk.close()
    since = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    records, problems = await read_pgsql(
        dsn, "cdr", since, since + timedelta(hours=1), ZoneInfo("Europe/Madrid")
    )
    assert problems == []
    (only,) = summaries_from_records(records, PBX)
    assert only.started_at == datetime(2026, 11, 27, 16, 33, 12, tzinfo=UTC)
    assert only.talk_seconds == 3
