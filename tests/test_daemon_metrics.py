"""Bad AMI bytes in the middle of a call: the daemon goes on, and the metrics say so.

Asterisk does not send malformed messages on purpose, but a proxy, a bug or a
half-written buffer after a network fault can; the daemon logs the bytes'
offset, skips them, keeps tracking the calls around them, and counts them in
``ami_daemon_ami_events_malformed`` so that monitoring sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import pytest_asyncio

from ami_daemon.ami.timeline import ReplayEvent, Timeline
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import Processed
from ami_daemon.service import Daemon
from tests.daemon_harness import (
    call_rows,
    lab,
    parse_metrics,
    poll,
    seed_lab_dsn,
    start_simulator,
    timeline_of,
)
from tests.test_service import lab_config

NO_HEADER = b"only noise here\r\n\r\n"


@pytest_asyncio.fixture
async def lab_dsn(migrated_dsn: str) -> str:
    await seed_lab_dsn(migrated_dsn)
    return migrated_dsn


def with_noise(timeline: Timeline, at: int) -> Timeline:
    """The timeline with one message of no ``Key: Value`` line sent before event ``at``."""
    events = list(timeline.events)
    model = events[at]
    bad = dataclasses.replace(model, data=NO_HEADER)
    events.insert(at, ReplayEvent(bad.message, bad.data, bad.at, bad.item))
    agi = {(i + 1 if i >= at else i): scripts for i, scripts in timeline.agi.items()}
    return Timeline(tuple(events), agi, timeline.items)


@pytest.mark.asyncio
async def test_malformed_ami_data_is_skipped_and_counted(lab_dsn: str, tmp_path: Path) -> None:
    clean = timeline_of([lab("01")])
    timeline = with_noise(clean, len(clean.events) // 2)
    sim = await start_simulator(timeline)
    written: list[Processed] = []
    daemon = Daemon(
        lab_config(lab_dsn, sim.port, tmp_path / "spool"),
        metrics=Metrics(),
        on_written=written.append,
    )
    try:
        await daemon.start()
        await asyncio.wait_for(daemon.ready.wait(), 10)
        await poll(lambda: sim.done and len(written) == 1, "the call written")
        samples = parse_metrics(daemon.metrics.render().decode())
    finally:
        await daemon.stop()
        await sim.close()
    # the call around the bad bytes is whole
    (row,) = (await call_rows(lab_dsn)).values()
    assert (row["call_id"], row["status"], row["crm_outcome"]) == (
        "1795797192.0",
        "answered",
        "lead_created",
    )
    assert samples["ami_daemon_ami_events_received_total"] == len(clean.events) + 1
    assert samples["ami_daemon_ami_events_malformed_total"] == 1
