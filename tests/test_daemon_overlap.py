"""200 overlapping calls through the in-process daemon: each written once, the metrics agree.

Eight lab captures, each re-keyed into 25 distinct copies (new Uniqueids,
Linkedids, channel names and caller numbers), started 50 ms of capture time
apart and replayed ten times faster than they happened: at the peak over a
hundred calls are open at once, their events interleaved, their FastAGI
lookups racing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import pytest_asyncio

from ami_daemon.ami.timeline import Timeline
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import Processed
from ami_daemon.service import Daemon
from tests.daemon_harness import (
    LAB,
    call_rows,
    fetch,
    metric_sum,
    parse_metrics,
    poll,
    seed_lab_dsn,
    start_simulator,
    timeline_of,
)
from tests.test_service import lab_config

CAPTURES = LAB[:8]
COPIES = 25
CALLS = len(CAPTURES) * COPIES
#: a new call every 50 ms of capture time, replayed 10x faster: 200 calls start per second
INTERLEAVE = 0.05
SPEED = 10.0


def most_open_at_once(timeline: Timeline) -> int:
    """The most calls (timeline items) between their first and last event at one time."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, event in enumerate(timeline.events):
        first.setdefault(event.item, index)
        last[event.item] = index
    edges = sorted([(i, 1) for i in first.values()] + [(i, -1) for i in last.values()])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


@pytest_asyncio.fixture
async def lab_dsn(migrated_dsn: str) -> str:
    await seed_lab_dsn(migrated_dsn)
    return migrated_dsn


@pytest.mark.asyncio
async def test_200_overlapping_calls_are_written_once_and_counted(
    lab_dsn: str, tmp_path: Path
) -> None:
    assert CALLS == 200
    timeline = timeline_of(CAPTURES, copies=COPIES, interleave=INTERLEAVE)
    peak = most_open_at_once(timeline)
    assert peak >= 50, f"only {peak} calls overlap: not an overlapping burst"
    sim = await start_simulator(timeline, speed=SPEED)
    written: list[Processed] = []
    daemon = Daemon(
        lab_config(lab_dsn, sim.port, tmp_path / "spool"),
        metrics=Metrics(),
        on_written=written.append,
    )
    try:
        await daemon.start()
        assert daemon.agi_port
        sim.options.agi = ("127.0.0.1", daemon.agi_port)
        await asyncio.wait_for(daemon.ready.wait(), 10)

        def all_written() -> bool:
            return len(written) >= CALLS and daemon.writer is not None and daemon.writer.idle

        await poll(lambda: sim.done and all_written(), f"{CALLS} calls written")
        samples = parse_metrics(daemon.metrics.render().decode())
    finally:
        await daemon.stop()
        await sim.close()

    ids = [p.summary.call_id for p in written]
    assert len(ids) == len(set(ids)) == CALLS
    rows = await call_rows(lab_dsn)
    assert set(rows) == set(ids)
    (activity_doubles,) = await fetch(
        lab_dsn,
        "SELECT count(*) AS n FROM (SELECT call_id FROM crm.activities "
        "GROUP BY call_id, entity_type, entity_id HAVING count(*) > 1) AS d",
    )
    assert activity_doubles["n"] == 0
    # copies have new numbers (so copies of the known client's call are new callers)
    assert rows["1795797202.2"]["crm_outcome"] == "activity_logged"  # the known client
    internal = [r for r in rows.values() if r["direction"] == "internal"]
    assert len(internal) == COPIES
    assert {r["crm_outcome"] for r in internal} == {"skipped_internal"}
    (leads,) = await fetch(lab_dsn, "SELECT count(*) AS n FROM crm.leads")
    assert leads["n"] == sum(r["crm_outcome"] == "lead_created" for r in rows.values())

    # the metrics count exactly what happened
    assert metric_sum(samples, "ami_daemon_calls_finished_total") == CALLS
    by_status_outcome = Counter((r["status"], r["crm_outcome"]) for r in rows.values())
    for (status, outcome), n in by_status_outcome.items():
        key = f'ami_daemon_calls_finished_total{{outcome="{outcome}",status="{status}"}}'
        assert samples[key] == n, key
    assert samples["ami_daemon_crm_write_seconds_count"] == CALLS
    assert samples["ami_daemon_ami_events_received_total"] == sim.sent + sim.logins
    assert sim.sent == len(timeline)
    assert len(sim.agi_outcomes) == 5 * COPIES  # the inbound captures among the eight
    answered = Counter(o.variables.get("CRM_LOOKUP") for o in sim.agi_outcomes)
    assert answered["ok"] > 0, answered
    for result, n in answered.items():
        assert samples[f'ami_daemon_agi_lookups_total{{result="{result}"}}'] == n, result
    assert metric_sum(samples, "ami_daemon_agi_lookups_total") == len(sim.agi_outcomes)
    assert samples["ami_daemon_agi_lookup_seconds_count"] == len(sim.agi_outcomes)
    assert samples["ami_daemon_calls_in_progress"] == 0
    assert samples["ami_daemon_spool_depth"] == 0
    assert samples["ami_daemon_crm_write_errors_total"] == 0
