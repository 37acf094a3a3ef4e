"""The demo: the README's first command, and what its day of calls puts in the CRM."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from ami_daemon.demo.plan import PLAN, captures_folder
from ami_daemon.demo.runner import run_demo
from tests.paths import TRACES

EXPECTED_OUTCOMES = [
    "lead_created",  # new caller, sales
    "activity_logged",  # Marta Ruiz, known client
    "lead_created",  # new caller, support, missed
    "lead_created",  # transfer 201 → 202
    "activity_logged",  # Pedro Gil missed: activity + callback task
    "skipped_employee",  # 201's mobile
    "skipped_exception",  # door intercom on the exception list
    "lead_created",  # outbound to a new number
    "activity_logged",  # outbound again, busy: logged on that lead
    "skipped_internal",  # 201 → 202
    "lead_created",  # radio campaign number
    "activity_logged",  # Pedro Gil calls back: closes the task
]


def test_shipped_demo_captures_are_verbatim_copies_of_the_lab_recordings() -> None:
    shipped = sorted(p for p in captures_folder().glob("*/*") if p.is_file())
    assert len(shipped) >= 15
    for path in shipped:
        original = TRACES / "asterisk20" / path.parent.name / path.name
        assert original.read_bytes() == path.read_bytes(), path


@pytest.mark.asyncio
async def test_the_day_of_calls_gives_the_expected_crm(dsn: str) -> None:
    rows = await run_demo(dsn)
    assert [r.processed.decision.outcome.value for r in rows] == EXPECTED_OUTCOMES
    assert len(rows) == len(PLAN)
    transfer = rows[3].processed.summary
    assert (transfer.answered_by, transfer.final_agent) == ("201", "202")
    lookups = [r.lookup.variables.get("CRM_LOOKUP") if r.lookup else None for r in rows]
    inbound = [i for i, r in enumerate(rows) if r.processed.summary.direction.value == "inbound"]
    assert all(lookups[i] == "ok" for i in inbound)
    assert rows[1].lookup is not None and rows[1].lookup.variables["CRM_ROUTE_TO"] == "202"
    conn = await asyncpg.connect(dsn)
    try:
        calls = await conn.fetchval("SELECT count(*) FROM crm.calls WHERE pbx = 'demo'")
        leads = await conn.fetch("SELECT source, responsible_id FROM crm.leads ORDER BY id")
        tasks = await conn.fetch("SELECT status FROM crm.tasks")
        radio = await conn.fetchval(
            "SELECT count(*) FROM crm.leads WHERE source = 'RADIO_CAMPAIGN'"
        )
    finally:
        await conn.close()
    assert calls == len(PLAN)
    assert len(leads) == Counter(EXPECTED_OUTCOMES)["lead_created"]
    assert radio == 1
    assert [t["status"] for t in tasks] == ["closed"]


def test_readme_demo_command_runs_on_an_embedded_database() -> None:
    command = [str(Path(sys.executable).parent / "ami-daemon"), "demo"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMI_DAEMON_")}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lead_created" in result.stdout and "skipped_exception" in result.stdout
    assert f"{len(PLAN)} calls in" in result.stdout
    assert "Traceback" not in result.stderr
