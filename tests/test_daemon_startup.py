"""`ami-daemon run` refusing to start: one clear message, a non-zero status, no traceback.

systemd restarts a service that fails (``Restart=on-failure``); what the admin
reads in ``journalctl`` is the daemon's stderr, so it must say what is wrong
and how to fix it, once, and never send ``READY=1`` for a daemon that is not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ami_daemon.rules.loader import default_rules_path
from tests.daemon_harness import (
    DaemonProcess,
    NotifyListener,
    free_port,
    start_daemon,
    start_simulator,
    timeline_of,
    write_config,
)


async def run_to_exit(
    tmp_path: Path, *, dsn: str, ami_port: int, rules: Path
) -> tuple[int, str, NotifyListener]:
    """Start the daemon and wait for it to exit by itself: (status, stderr, notifications)."""
    metrics_port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        dsn=dsn,
        ami_port=ami_port,
        rules=rules,
        spool=tmp_path / "spool",
        agi_port=free_port(),
        metrics_port=metrics_port,
    )
    notify = NotifyListener()
    notify.start()
    daemon: DaemonProcess = await start_daemon(
        config, tmp_path / "daemon.log", metrics_port=metrics_port, notify=notify
    )
    try:
        status = await daemon.wait_exit()
    finally:
        await daemon.kill()
        await notify.close()
    return status, daemon.log_text(), notify


@pytest.mark.asyncio
async def test_a_refused_ami_login_exits_with_one_clear_message(
    migrated_dsn: str, tmp_path: Path
) -> None:
    sim = await start_simulator(timeline_of([]), secret="not-the-daemons-secret")
    try:
        status, log, notify = await run_to_exit(
            tmp_path, dsn=migrated_dsn, ami_port=sim.port, rules=default_rules_path()
        )
    finally:
        await sim.close()
    assert status != 0, log
    assert "Traceback" not in log
    complaints = [line for line in log.splitlines() if "refused" in line]
    assert len(complaints) == 1, log
    (complaint,) = complaints
    assert complaint.startswith("ami-daemon run: ")
    assert "'ami-daemon'" in complaint  # the user Asterisk refused
    # said once: where, who, Asterisk's reason, the hint
    assert complaint.count(f"127.0.0.1:{sim.port}") == 1, complaint
    assert complaint.count("Authentication failed") == 1, complaint
    assert complaint.count("manager.conf") == 1, complaint
    assert notify.count("READY=1") == 0


@pytest.mark.asyncio
async def test_broken_rules_at_start_exit_2_with_every_error_and_its_line(
    migrated_dsn: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    crm_file, numbers_file = rules / "00-crm.yaml", rules / "10-numbers.yaml"
    crm_file.write_text(crm_file.read_text().replace("mode: classic", "mode: clasic", 1))
    numbers = numbers_file.read_text()
    numbers_file.write_text(numbers.replace("    source: RADIO_CAMPAIGN", "    source: RADIO", 1))
    sim = await start_simulator(timeline_of([]))
    try:
        status, log, notify = await run_to_exit(
            tmp_path, dsn=migrated_dsn, ami_port=sim.port, rules=rules
        )
    finally:
        await sim.close()
    assert status == 2, log
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("ami-daemon run: ")]
    mode_line = _line_of(crm_file.read_text(), "mode: clasic")
    source_line = _line_of(numbers_file.read_text(), "source: RADIO")
    assert len(errors) == 2, log
    assert errors[0].startswith(f"ami-daemon run: {crm_file}:{mode_line}: mode: ")
    assert "clasic" in errors[0]
    assert errors[1].startswith(f"ami-daemon run: {numbers_file}:{source_line}: ")
    assert "'RADIO'" in errors[1]
    assert sim.logins == 0  # the rules are checked before anything connects
    assert notify.count("READY=1") == 0


@pytest.mark.asyncio
async def test_a_schema_behind_refuses_to_start_and_names_the_migrate_command(
    dsn: str, tmp_path: Path
) -> None:
    sim = await start_simulator(timeline_of([]))
    try:
        status, log, notify = await run_to_exit(
            tmp_path, dsn=dsn, ami_port=sim.port, rules=default_rules_path()
        )
    finally:
        await sim.close()
    assert status != 0, log
    assert "Traceback" not in log
    (complaint,) = [line for line in log.splitlines() if "ami-daemon migrate" in line]
    assert complaint.startswith("ami-daemon run: ")
    assert "behind" in complaint
    assert f"ami-daemon migrate --config {tmp_path / 'config.yaml'}" in complaint
    assert sim.logins == 0  # nothing is tracked on a CRM that cannot take it
    assert notify.count("READY=1") == 0


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 0
