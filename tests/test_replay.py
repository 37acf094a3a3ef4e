"""``ami-daemon replay``: every real capture through tracker, shipped rules and PostgreSQL.

Run as a real subprocess against a fresh database holding the lab's
employees (201, 202, 203; 201's mobile 699000201) and known clients
(600333444 → 202, 600555666 → 203), imported from CSV.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.crm_world import seed_lab
from tests.paths import TRACES

LAB = TRACES / "asterisk20"
PBX_ONLY = """\
pbx:
  name: main
  region: ES
  timezone: Europe/Madrid
  trunk_channels: ['^SIP/trunk-']
  employee_channels: '^(?:SIP|PJSIP|IAX2)/(?P<peer>[^-/;]+)-'
  peer_extensions: {}
  outside_prefix: ''
"""


def cli(*args: str, dsn: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMI_DAEMON_DSN": dsn}
    env.pop("AMI_DAEMON_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "ami_daemon.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def capture(name: str) -> str:
    return str(LAB / name / "ami.raw")


def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def table_counts(dsn: str) -> dict[str, int]:
    tables = ("calls", "leads", "deals", "contacts", "activities", "pending_calls", "tasks")
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM crm.{t}" for t in tables)
    return {r["t"]: r["n"] for r in fetch(dsn, sql)}


@pytest.fixture
def lab_dsn(migrated_dsn: str) -> str:
    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await seed_lab(conn)
        finally:
            await conn.close()

    asyncio.run(go())
    return migrated_dsn


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The acceptance-style config: only the pbx section (DSN from the environment)."""
    path = tmp_path / "config.yaml"
    path.write_text(PBX_ONLY, encoding="utf-8")
    return path


# capture → (outcome, responsible of the new lead or None, activity (entity, status) or None)
EXPECTED = {
    "01_inbound_queue_201_caller_hangup": ("lead_created", "201", ("lead", "answered")),
    "02_inbound_known_client_direct_202_agent_hangup": (
        "activity_logged",
        None,
        ("contact", "answered"),
    ),
    "03_inbound_support_queue_no_answer_caller_gives_up": (
        "lead_created",
        "203",
        ("lead", "missed"),
    ),
    "04_inbound_queue_201_blind_transfer_to_202": ("lead_created", "202", ("lead", "answered")),
    "06_outbound_201_to_external_answered": ("lead_created", "201", ("lead", "answered")),
    "07_outbound_201_to_external_busy": ("lead_created", "201", ("lead", "missed")),
    "08_internal_201_to_202": ("skipped_internal", None, None),
    "10_inbound_abandoned_while_ringing": ("lead_created", "201", ("lead", "missed")),
    "13_inbound_from_employee_mobile_queue_201": ("skipped_employee", None, None),
}


def test_every_lab_capture_is_covered() -> None:
    on_disk = {p.name for p in LAB.iterdir() if (p / "ami.raw").is_file()}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_replayed_through_shipped_rules(
    name: str, lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    outcome, responsible, activity = EXPECTED[name]
    done = cli("replay", capture(name), "--config", str(config_file), dsn=lab_dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.split(" ", 1)[1].startswith(outcome)
    calls = cli("calls", capture(name), "--config", str(config_file), dsn=lab_dsn, cwd=tmp_path)
    summary = json.loads(calls.stdout)
    (row,) = fetch(lab_dsn, "SELECT * FROM crm.calls")
    assert row["crm_outcome"] == outcome and row["crm_reason"]
    assert (row["pbx"], row["call_id"], row["direction"], row["status"]) == (
        "main",
        summary["call_id"],
        summary["direction"],
        summary["status"],
    )
    assert row["external_e164"] == summary["external_number"]
    assert json.loads(row["summary"]) == summary
    leads = fetch(
        lab_dsn,
        "SELECT l.title, l.source, u.extension FROM crm.leads l "
        "LEFT JOIN crm.users u ON u.id = l.responsible_id",
    )
    if responsible is None:
        assert leads == []
    else:
        (lead,) = leads
        assert lead["extension"] == responsible and lead["source"] == "CALL"
        assert lead["title"].startswith(f"Call from {summary['external_number']} on 2026-11-27 ")
    acts = fetch(lab_dsn, "SELECT entity_type, status FROM crm.activities")
    assert [(a["entity_type"], a["status"]) for a in acts] == ([activity] if activity else [])


def test_known_client_activity_carries_the_responsible(
    lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    name = "02_inbound_known_client_direct_202_agent_hangup"
    done = cli("replay", capture(name), "--config", str(config_file), dsn=lab_dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (act,) = fetch(
        lab_dsn,
        "SELECT c.name, u.extension FROM crm.activities a "
        "JOIN crm.contacts c ON c.id = a.entity_id JOIN crm.users u ON u.id = a.responsible_id",
    )
    assert act == {"name": "Marta Ruiz", "extension": "202"}


def _all(config_file: Path, dsn: str, cwd: Path) -> list[str]:
    lines = []
    for name in sorted(EXPECTED):
        done = cli("replay", capture(name), "--config", str(config_file), dsn=dsn, cwd=cwd)
        assert done.returncode == 0, done.stderr
        lines += done.stdout.splitlines()
    return lines


def test_replaying_the_lab_twice_writes_nothing_new(
    lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    first = _all(config_file, lab_dsn, tmp_path)
    after_first = table_counts(lab_dsn)
    assert after_first["calls"] == 9 and after_first["leads"] == 5
    second = _all(config_file, lab_dsn, tmp_path)
    assert len(first) == len(second) == 9
    assert all("already recorded" in line and "nothing written" in line for line in second)
    assert table_counts(lab_dsn) == after_first


def test_two_concurrent_replays_make_one_set_of_rows(
    lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "AMI_DAEMON_DSN": lab_dsn}
    names = [
        "04_inbound_queue_201_blind_transfer_to_202",
        "02_inbound_known_client_direct_202_agent_hangup",
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ami_daemon.cli",
                "replay",
                capture(n),
                "--config",
                str(config_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for n in names
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e for _, e in outs]
    assert sum("already recorded" in o for o, _ in outs) == 2
    n = table_counts(lab_dsn)
    assert (n["calls"], n["leads"], n["activities"]) == (2, 1, 2)


def test_dry_run_prints_the_contract_and_writes_nothing(
    lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    before = table_counts(lab_dsn)
    name = "04_inbound_queue_201_blind_transfer_to_202"
    done = cli(
        "replay",
        capture(name),
        "--config",
        str(config_file),
        "--dry-run",
        dsn=lab_dsn,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    out = json.loads(line)
    assert list(out) == ["call", "outcome", "actions", "reasons"]
    calls = cli("calls", capture(name), "--config", str(config_file), dsn=lab_dsn, cwd=tmp_path)
    assert out["call"] == json.loads(calls.stdout)
    assert out["outcome"] == "lead_created"
    (action,) = out["actions"]
    assert action["type"] == "create_lead" and action["responsible"] == "202"
    assert any("update_responsible_on_forward" in r for r in out["reasons"])
    assert table_counts(lab_dsn) == before


def test_dry_run_shows_what_changed_rules_would_do(
    lab_dsn: str, config_file: Path, tmp_path: Path
) -> None:
    import shutil

    from ami_daemon.rules import default_rules_path

    rules = tmp_path / "myrules"
    shutil.copytree(default_rules_path(), rules)
    crm = rules / "00-crm.yaml"
    crm.write_text(crm.read_text().replace("mode: classic", "mode: simple"))
    name = "03_inbound_support_queue_no_answer_caller_gives_up"
    done = cli(
        "replay",
        capture(name),
        "--config",
        str(config_file),
        "--dry-run",
        "--rules",
        str(rules),
        dsn=lab_dsn,
        cwd=tmp_path,
    )
    out = json.loads(done.stdout)
    assert out["outcome"] == "deal_created"
    assert out["actions"][0]["pipeline"] == "support"
    assert any("automation rule support-queue" in r for r in out["reasons"])


def test_unmigrated_database_is_a_clear_error(dsn: str, config_file: Path, tmp_path: Path) -> None:
    done = cli(
        "replay",
        capture("01_inbound_queue_201_caller_hangup"),
        "--config",
        str(config_file),
        "--dry-run",
        dsn=dsn,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "run 'ami-daemon migrate' first" in done.stderr and "Traceback" not in done.stderr


def test_unreachable_database_is_a_clear_error(config_file: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli(
        "replay",
        capture("01_inbound_queue_201_caller_hangup"),
        "--config",
        str(config_file),
        dsn=f"postgresql://postgres@127.0.0.1:{port}/crm",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"cannot connect to postgresql://postgres@127.0.0.1:{port}/crm" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_capture_is_a_clear_error(lab_dsn: str, config_file: Path, tmp_path: Path) -> None:
    done = cli(
        "replay",
        str(tmp_path / "nope.raw"),
        "--config",
        str(config_file),
        dsn=lab_dsn,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "capture file not found" in done.stderr
