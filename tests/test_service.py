"""The whole daemon end to end: simulator (AMI + FastAGI) → daemon → PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import build_timeline, load_capture
from ami_daemon.config import (
    AgiConfig,
    AmiConfig,
    Config,
    DatabaseConfig,
    MetricsConfig,
    SpoolConfig,
    load,
)
from ami_daemon.crm.imports import Kind, import_csv
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import Processed
from ami_daemon.rules.loader import default_rules_path
from ami_daemon.service import Daemon
from tests.crm_world import CONTACTS_CSV, USERS_CSV
from tests.paths import REPO, TRACES

SECRET = "s3cret"
LAB = sorted((TRACES / "asterisk20").glob("[0-9]*"))


def lab_config(dsn: str, ami_port: int, spool: Path) -> Config:
    base = load(REPO / "tests" / "tracker_configs" / "lab.yaml", {})
    return dataclasses.replace(
        base,
        pbx=dataclasses.replace(base.pbx, name="main", timezone="Europe/Madrid"),
        ami=AmiConfig(
            port=ami_port,
            username="ami-daemon",
            secret=SECRET,
            reconnect_max_delay=0.5,
            ping_interval=5.0,
        ),
        database=DatabaseConfig(dsn=dsn),
        agi=AgiConfig(port=0),
        metrics=MetricsConfig(port=0),
        spool=SpoolConfig(path=spool),
        rules=dataclasses.replace(base.rules, path=default_rules_path()),
    )


@pytest_asyncio.fixture
async def lab_dsn(migrated_dsn: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await import_csv(conn, Kind.USERS, USERS_CSV, "ES")
        await import_csv(conn, Kind.CONTACTS, CONTACTS_CSV, "ES")
    finally:
        await conn.close()
    yield migrated_dsn


async def run_daemon_over(
    captures: list[Path], dsn: str, spool: Path, expected_calls: int, **sim_options: Any
) -> tuple[Daemon, Simulator, list[Processed]]:
    written: list[Processed] = []
    sim = Simulator(
        build_timeline([load_capture(c) for c in captures]),
        SimulatorOptions(secret=SECRET, speed=None, **sim_options),
    )
    await sim.start()
    daemon = Daemon(lab_config(dsn, sim.port, spool), metrics=Metrics(), on_written=written.append)
    try:
        await daemon.start()
        assert daemon.agi_port
        sim.options.agi = ("127.0.0.1", daemon.agi_port)
        await asyncio.wait_for(daemon.ready.wait(), 10)
        await sim.wait_done(60)
        for _ in range(400):
            if len(written) >= expected_calls and daemon.writer and daemon.writer.idle:
                break
            await asyncio.sleep(0.05)
    finally:
        await daemon.stop()
        await sim.close()
    return daemon, sim, written


@pytest.mark.asyncio
async def test_lab_captures_through_the_daemon_land_in_the_crm(
    lab_dsn: str, tmp_path: Path
) -> None:
    daemon, _sim, written = await run_daemon_over(LAB, lab_dsn, tmp_path / "spool", len(LAB))
    outcomes = {p.summary.call_id: p.decision.outcome.value for p in written}
    assert len(outcomes) == len(LAB)
    conn = await asyncpg.connect(lab_dsn)
    try:
        rows = {r["call_id"]: r for r in await conn.fetch("SELECT * FROM crm.calls")}
        leads = await conn.fetchval("SELECT count(*) FROM crm.leads")
        activities = await conn.fetch("SELECT entity_type, status FROM crm.activities")
    finally:
        await conn.close()
    assert set(rows) == set(outcomes)
    by_number = {r["external_e164"]: r["crm_outcome"] for r in rows.values()}
    assert by_number["+34600333444"] == "activity_logged"  # known client (02)
    assert by_number["+34699000201"] == "skipped_employee"  # employee's mobile (13)
    assert by_number["+34600111222"] == "lead_created"  # new caller (01)
    internal = [r for r in rows.values() if r["direction"] == "internal"]
    assert [r["crm_outcome"] for r in internal] == ["skipped_internal"]
    assert leads >= 3
    assert ("contact", "answered") in {(a["entity_type"], a["status"]) for a in activities}
    metrics = daemon.metrics.render().decode()
    assert "ami_daemon_calls_finished_total" in metrics
    assert 'ami_daemon_agi_lookups_total{result="ok"}' in metrics
    assert daemon.writer is not None and daemon.writer.spool.depth == 0
