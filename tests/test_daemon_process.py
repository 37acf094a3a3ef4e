"""`ami-daemon run` as systemd runs it: a real process, signals, sd_notify, metrics, logs.

Each test starts the daemon as a child process with a config file in
``tmp_path``, a simulated Asterisk (AMI and the FastAGI calls of the lab
captures) in the test's event loop, and a fresh PostgreSQL database.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest
import pytest_asyncio

from ami_daemon.ami.fastagi_client import play_agi
from ami_daemon.ami.timeline import load_capture
from ami_daemon.rules.loader import default_rules_path
from tests.daemon_harness import (
    LAB,
    NotifyListener,
    call_rows,
    fetch,
    free_port,
    lab,
    metric_sum,
    poll,
    seed_lab_dsn,
    start_daemon,
    start_simulator,
    timeline_of,
    write_config,
)

#: 0.3 s: the daemon must send WATCHDOG=1 every 0.15 s.
WATCHDOG_USEC = 300_000


@pytest_asyncio.fixture
async def lab_dsn(migrated_dsn: str) -> str:
    await seed_lab_dsn(migrated_dsn)
    return migrated_dsn


@pytest.mark.asyncio
async def test_run_as_a_notify_service_writes_the_lab_calls_and_reports_them(
    lab_dsn: str, tmp_path: Path
) -> None:
    agi_port, metrics_port = free_port(), free_port()
    sim = await start_simulator(timeline_of(LAB), agi_port=agi_port)
    config = write_config(
        tmp_path / "config.yaml",
        dsn=lab_dsn,
        ami_port=sim.port,
        rules=default_rules_path(),
        spool=tmp_path / "spool",
        agi_port=agi_port,
        metrics_port=metrics_port,
        log_format="json",
    )
    notify = NotifyListener()
    notify.start()
    daemon = await start_daemon(
        config,
        tmp_path / "daemon.log",
        metrics_port=metrics_port,
        notify=notify,
        watchdog_usec=WATCHDOG_USEC,
    )
    try:
        await notify.wait_for("READY=1")
        await sim.wait_done(30)
        await poll(lambda: _count_calls(lab_dsn, len(LAB)), f"{len(LAB)} calls in crm.calls")
        rows = await call_rows(lab_dsn)
        samples: dict[str, float] = {}

        async def all_finished_counted() -> bool:
            samples.update(await daemon.metrics())
            return metric_sum(samples, "ami_daemon_calls_finished_total") == len(LAB)

        await poll(all_finished_counted, "every call counted in calls_finished")
        # the watchdog keeps beating while the daemon runs (every WATCHDOG_USEC / 2)
        await notify.wait_for("WATCHDOG=1", count=4)
        assert daemon.running
        status = await daemon.stop()
    finally:
        await daemon.kill()
        await sim.close()
        await notify.close()

    assert status == 0, daemon.log_text()
    assert notify.count("READY=1") == 1
    assert notify.count("STOPPING=1") == 1
    ready_at, stopping_at = notify.times("READY=1")[0], notify.times("STOPPING=1")[0]
    assert ready_at < stopping_at
    beats = notify.times("WATCHDOG=1")
    assert len([t for t in beats if ready_at <= t <= stopping_at]) >= 3

    # every lab call is in the CRM, decided as the lab world says
    assert len(rows) == len(LAB)
    by_number = {r["external_e164"]: r["crm_outcome"] for r in rows.values()}
    assert by_number["+34600111222"] == "lead_created"
    assert by_number["+34600333444"] == "activity_logged"
    assert by_number["+34699000201"] == "skipped_employee"

    # the metrics endpoint tells the same story as the database and the simulator
    finished = Counter((r["status"], r["crm_outcome"]) for r in rows.values())
    for (status_value, outcome), count in finished.items():
        key = f'ami_daemon_calls_finished_total{{outcome="{outcome}",status="{status_value}"}}'
        assert samples[key] == count, key
    assert metric_sum(samples, "ami_daemon_calls_finished_total") == len(LAB)
    # every replayed event, plus the FullyBooted Asterisk sends after the login
    assert samples["ami_daemon_ami_events_received_total"] == sim.sent + sim.logins
    lookups = [o for o in sim.agi_outcomes if o.variables.get("CRM_LOOKUP") == "ok"]
    assert len(lookups) == len(sim.agi_outcomes) == 6  # one per inbound lab call
    assert samples['ami_daemon_agi_lookups_total{result="ok"}'] == len(lookups)
    assert samples["ami_daemon_agi_lookup_seconds_count"] == len(lookups)
    assert samples["ami_daemon_crm_write_seconds_count"] == len(LAB)
    assert samples["ami_daemon_ami_connected"] == 1
    assert samples["ami_daemon_calls_in_progress"] == 0
    assert samples["ami_daemon_spool_depth"] == 0

    # JSON logs: one object per line; the line of each written call carries its id
    entries = daemon.json_log()
    assert {e["call_id"] for e in entries if "call_id" in e} == set(rows)
    assert any(e["message"].startswith("stopped in") for e in entries)


@pytest.mark.asyncio
async def test_json_logs_name_the_call_on_every_line_about_a_call(
    lab_dsn: str, tmp_path: Path
) -> None:
    """At DEBUG, with the AGI lookups too: a line that names a call has its ``call_id``."""
    agi_port, metrics_port = free_port(), free_port()
    sim = await start_simulator(timeline_of(LAB), agi_port=agi_port)
    config = write_config(
        tmp_path / "config.yaml",
        dsn=lab_dsn,
        ami_port=sim.port,
        rules=default_rules_path(),
        spool=tmp_path / "spool",
        agi_port=agi_port,
        metrics_port=metrics_port,
        log_format="json",
        log_level="DEBUG",
    )
    daemon = await start_daemon(config, tmp_path / "daemon.log", metrics_port=metrics_port)
    try:
        await sim.wait_done(30)
        await poll(lambda: _count_calls(lab_dsn, len(LAB)), f"{len(LAB)} calls in crm.calls")
        status = await daemon.stop()
    finally:
        await daemon.kill()
        await sim.close()
    assert status == 0, daemon.log_text()
    ids = set(await call_rows(lab_dsn))
    entries = daemon.json_log()
    about_a_call = [e for e in entries if any(i in e["message"] for i in ids)]
    assert len(about_a_call) >= len(ids) + 6  # the written calls and the 6 lookups at least
    unnamed = [e["message"] for e in about_a_call if e.get("call_id") not in ids]
    assert unnamed == []
    for entry in about_a_call:
        assert entry["call_id"] in entry["message"], entry


async def _count_calls(dsn: str, expected: int) -> bool:
    return len(await call_rows(dsn)) >= expected


@pytest.mark.asyncio
async def test_sighup_with_broken_rules_keeps_the_old_ones_and_a_fixed_file_applies(
    lab_dsn: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    crm_file, numbers_file = rules / "00-crm.yaml", rules / "10-numbers.yaml"
    original_crm, original_numbers = crm_file.read_text(), numbers_file.read_text()
    agi_port, metrics_port = free_port(), free_port()
    # the daemon first meets a PBX with no calls; each phase below is a new
    # simulator on the same port (as if Asterisk restarted), which the daemon
    # reconnects to by itself
    sim = await start_simulator(timeline_of([]), agi_port=agi_port)
    ami_port = sim.port
    config = write_config(
        tmp_path / "config.yaml",
        dsn=lab_dsn,
        ami_port=ami_port,
        rules=rules,
        spool=tmp_path / "spool",
        agi_port=agi_port,
        metrics_port=metrics_port,
    )
    notify = NotifyListener()
    notify.start()
    daemon = await start_daemon(
        config, tmp_path / "daemon.log", metrics_port=metrics_port, notify=notify
    )
    sims = [sim]

    async def play(capture: Path, call_id: str) -> str:
        """Replay one capture to the daemon; the crm_outcome its call got."""
        await sims[-1].close()
        sims.append(await start_simulator(timeline_of([capture]), port=ami_port, agi_port=agi_port))
        await sims[-1].wait_done(30)
        await poll(lambda: _has_call(lab_dsn, call_id), f"call {call_id} in crm.calls")
        (row,) = await fetch(lab_dsn, "SELECT * FROM crm.calls WHERE call_id = $1", call_id)
        return str(row["crm_outcome"])

    try:
        await notify.wait_for("READY=1")
        # a valid change (simple mode) together with two mistakes in two files
        crm_file.write_text(
            original_crm.replace("mode: classic", "mode: simple", 1).replace(
                "  source: CALL", "  source: NOPE", 1
            )
        )
        numbers_file.write_text(
            original_numbers.replace(
                "    label: Support line\n", "    label: Support line\n    colour: blue\n", 1
            )
        )
        daemon.signal(signal.SIGHUP)
        await poll(lambda: "10-numbers.yaml:" in daemon.log_text(), "the reload errors logged")
        assert daemon.running
        # the old rules (classic mode) still decide: a new caller gets a lead, not a deal
        assert await play(lab("01"), "1795797192.0") == "lead_created"
        # and still route the FastAGI lookups: the known client rings its responsible first
        assert (await lookup_known_client(agi_port)).get("CRM_ROUTE_TO") == "202"

        crm_file.write_text(
            original_crm.replace("mode: classic", "mode: simple", 1).replace(
                "  route_to_responsible: yes", "  route_to_responsible: no", 1
            )
        )
        numbers_file.write_text(original_numbers)
        daemon.signal(signal.SIGHUP)
        await poll(lambda: "rules reloaded from" in daemon.log_text(), "the reload logged")
        # the fixed rules apply to the next call: simple mode creates a deal
        assert await play(lab("04"), "1795797227.7") == "deal_created"
        # and to the next lookup: still known, no longer routed to the responsible
        variables = await lookup_known_client(agi_port)
        assert variables["CRM_LOOKUP"] == "ok" and variables["CRM_KNOWN"] == "1"
        assert "CRM_ROUTE_TO" not in variables
        samples = await daemon.metrics()
        status = await daemon.stop()
    finally:
        await daemon.kill()
        for s in sims:
            await s.close()
        await notify.close()

    assert status == 0, daemon.log_text()
    assert samples['ami_daemon_rules_reloads_total{result="error"}'] == 1
    assert samples['ami_daemon_rules_reloads_total{result="ok"}'] == 1
    log = daemon.log_text()
    # every problem of the broken reload, each with its file and line
    source_line = _line_of(crm_file.read_text(), "mode: simple")  # unchanged layout
    assert source_line > 0
    nope_line = _line_of(original_crm, "  source: CALL")
    colour_line = _line_of(original_numbers, "    label: Support line") + 1
    assert re.search(
        rf"{re.escape(str(crm_file))}:{nope_line}: defaults\.source: unknown source 'NOPE'", log
    )
    assert re.search(
        rf"{re.escape(str(numbers_file))}:{colour_line}: numbers\.911234500\.colour: unknown key",
        log,
    )
    assert "previous rules stay in force" in log
    assert "Traceback" not in log
    deals = await fetch(lab_dsn, "SELECT count(*) AS n FROM crm.deals")
    assert deals[0]["n"] == 1


async def lookup_known_client(agi_port: int) -> dict[str, str]:
    """Asterisk's side of capture 02's ``crm_lookup`` (Marta Ruiz calls): the variables set."""
    (script,) = load_capture(lab("02")).agi
    outcome = await play_agi("127.0.0.1", agi_port, script, timeout=10)
    assert outcome.error is None, outcome.error
    return dict(outcome.variables)


async def _has_call(dsn: str, call_id: str) -> bool:
    rows = await fetch(dsn, "SELECT 1 FROM crm.calls WHERE call_id = $1", call_id)
    return bool(rows)


def _line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing ``needle`` (0 when absent)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 0


@pytest.mark.asyncio
async def test_sigint_stops_a_daemon_still_waiting_for_asterisk(
    lab_dsn: str, tmp_path: Path
) -> None:
    """Asterisk unreachable at start: retried, not ready, and Ctrl-C still stops it cleanly."""
    metrics_port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        dsn=lab_dsn,
        ami_port=free_port(),  # nobody listens there
        rules=default_rules_path(),
        spool=tmp_path / "spool",
        agi_port=free_port(),
        metrics_port=metrics_port,
    )
    notify = NotifyListener()
    notify.start()
    daemon = await start_daemon(
        config,
        tmp_path / "daemon.log",
        metrics_port=metrics_port,
        notify=notify,
        watchdog_usec=WATCHDOG_USEC,
    )
    try:
        await poll(lambda: "cannot connect to Asterisk" in daemon.log_text(), "a retry logged")
        # alive (the watchdog beats) but not ready: systemd would keep it "activating"
        await notify.wait_for("WATCHDOG=1", count=2)
        samples = await daemon.metrics()
        daemon.signal(signal.SIGINT)
        status = await daemon.wait_exit()
    finally:
        await daemon.kill()
        await notify.close()
    assert status == 0, daemon.log_text()
    assert notify.count("READY=1") == 0
    assert notify.count("STOPPING=1") == 1
    assert samples["ami_daemon_ami_connected"] == 0
    assert "Traceback" not in daemon.log_text()
