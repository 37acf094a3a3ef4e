"""SIGTERM in the middle of a burst of overlapping calls: nothing that ended is lost or doubled.

The daemon runs as ``ami-daemon run --record FILE``, so the capture it writes
is exactly what it received from the (simulated) Asterisk before it stopped:
the calls that capture shows as ended are the calls the daemon owed the CRM.
Midway through the burst the test holds a lock on ``crm.calls`` (a CRM write
that hangs, as on an overloaded database), so that calls pile up in the spool
and the stop's grace period runs out with calls still unwritten.  Then:

- the daemon exits 0 within a bounded time, even with a write hanging;
- every call that ended before the stop is in ``crm.calls`` or still in the
  spool folder (``calls.jsonl`` minus ``acks.log``); none is in both;
- a call still in progress at the stop is in neither (the CDR backfill's job);
- the daemon restarted on the same spool writes the spooled calls, each once.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.rules.loader import default_rules_path
from tests.daemon_harness import (
    AMI_DAEMON,
    LAB,
    NotifyListener,
    call_rows,
    fetch,
    free_port,
    metric_sum,
    poll,
    seed_lab_dsn,
    spool_pending,
    start_daemon,
    start_simulator,
    timeline_of,
    write_config,
)

#: 9 lab captures x 10 re-keyed copies = 90 calls, a new one every 0.25 s of
#: capture time, replayed 3x faster: ~9 s of traffic, ~20 calls at once (the stop cuts it).
COPIES = 10
INTERLEAVE = 0.25
SPEED = 3.0


@pytest_asyncio.fixture
async def lab_dsn(migrated_dsn: str) -> str:
    await seed_lab_dsn(migrated_dsn)
    return migrated_dsn


async def ended_calls(capture: Path, config: Path) -> tuple[set[str], set[str]]:
    """(calls that ended, calls still in progress) in a capture, per ``ami-daemon calls``."""
    process = await asyncio.create_subprocess_exec(
        str(AMI_DAEMON),
        "calls",
        str(capture),
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    calls = [json.loads(line) for line in out.decode().splitlines()]
    ended = {c["call_id"] for c in calls if c["status"] != "interrupted"}
    open_ = {c["call_id"] for c in calls if c["status"] == "interrupted"}
    return ended, open_


@pytest.mark.asyncio
async def test_sigterm_mid_burst_loses_nothing_and_the_restart_writes_the_spool_once(
    lab_dsn: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    recording = tmp_path / "received.ami"
    agi_port, metrics_port = free_port(), free_port()
    timeline = timeline_of(LAB, copies=COPIES, interleave=INTERLEAVE)
    sim = await start_simulator(timeline, agi_port=agi_port, speed=SPEED)
    ami_port = sim.port
    config = write_config(
        tmp_path / "config.yaml",
        dsn=lab_dsn,
        ami_port=ami_port,
        rules=default_rules_path(),
        spool=spool,
        agi_port=agi_port,
        metrics_port=metrics_port,
    )
    notify = NotifyListener()
    notify.start()
    daemon = await start_daemon(
        config,
        tmp_path / "first.log",
        metrics_port=metrics_port,
        notify=notify,
        args=("--record", str(recording)),
    )
    blocker = await asyncpg.connect(lab_dsn)
    blocking = blocker.transaction()
    try:
        await notify.wait_for("READY=1")
        await poll(lambda: _calls_at_least(lab_dsn, 10), "10 calls written")
        # the CRM stops taking writes (readers go on): calls pile up in the spool
        await blocking.start()
        await blocker.execute("LOCK TABLE crm.calls IN SHARE MODE")
        await poll(lambda: len(spool_pending(spool)) >= 5, "5 calls waiting in the spool")
        replayed_at_stop = sim.played
        daemon.signal(signal.SIGTERM)
        # bounded: the stop's grace for the hanging write, then the exit
        status = await daemon.wait_exit(timeout=30)
        written_first = set(await call_rows(lab_dsn))
        spooled = spool_pending(spool)
    finally:
        await daemon.kill()
        await blocking.rollback()
        await blocker.close()
        await sim.close()
        await notify.close()
    first_log = daemon.log_text()
    assert status == 0, first_log
    assert notify.count("STOPPING=1") == 1
    assert replayed_at_stop < len(timeline), "the burst ended before the stop"
    assert "stay in the spool for the next start" in first_log
    assert "Traceback" not in first_log

    ended, in_progress = await ended_calls(recording, config)
    assert in_progress, "no call was in progress at the stop: the stop was not mid-burst"
    assert spooled, "the spool was empty at exit: the hanging write did not hold calls back"
    # nothing that ended is lost; nothing is both written and waiting
    assert ended <= written_first | set(spooled)
    assert not written_first & set(spooled)
    # calls cut by the stop are left to the CDR backfill, not written half known
    assert not (written_first | set(spooled)) & in_progress
    assert set(spooled) <= ended

    # restart on the same spool: the waiting calls are written, each exactly once
    sim = await start_simulator(timeline_of([]), port=ami_port, agi_port=agi_port)
    restarted = await start_daemon(config, tmp_path / "second.log", metrics_port=metrics_port)
    try:
        await poll(lambda: not spool_pending(spool), "the spool written after the restart")
        await poll(lambda: _calls_at_least(lab_dsn, len(ended)), "every ended call in crm.calls")
        samples = await restarted.metrics()
        status = await restarted.stop()
    finally:
        await restarted.kill()
        await sim.close()
    second_log = restarted.log_text()
    assert status == 0, second_log
    assert "waiting for the CRM from a previous run" in second_log
    assert metric_sum(samples, "ami_daemon_calls_finished_total") == len(spooled)

    rows = await call_rows(lab_dsn)
    assert set(rows) == ended == written_first | set(spooled)
    outcomes = Counter(r["crm_outcome"] for r in rows.values())
    (leads,) = await fetch(lab_dsn, "SELECT count(*) AS n FROM crm.leads")
    assert leads["n"] == outcomes["lead_created"]
    doubled = await fetch(
        lab_dsn,
        "SELECT call_id, entity_type, entity_id FROM crm.activities "
        "GROUP BY call_id, entity_type, entity_id HAVING count(*) > 1",
    )
    assert doubled == []
    assert spool_pending(spool) == {}


async def _calls_at_least(dsn: str, count: int) -> bool:
    return len(await call_rows(dsn)) >= count
