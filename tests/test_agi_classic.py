"""The classic script as Asterisk runs it: a subprocess, environment on stdin, answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.agi import classic_settings
from tests.paths import REPO
from tests.test_agi_helpers import (
    AsteriskSide,
    classic_env,
    play_asterisk,
    replace_env,
    seed_crm,
    trace_sessions,
    write_config,
)

SCRIPT = REPO / "agi_scripts" / "crm_lookup.py"
SESSIONS = {s.name: s for s in trace_sessions()}
KNOWN_ENV = classic_env(
    SESSIONS["02_inbound_known_client_direct_202_agent_hangup"].env_lines, SCRIPT
)


@pytest_asyncio.fixture
async def crm_dsn(migrated_dsn: str) -> str:
    await seed_crm(migrated_dsn)
    return migrated_dsn


async def run_script(
    tmp_path: Path,
    env_lines: list[str],
    args: list[str],
    channel_vars: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[AsteriskSide, str, int]:
    """Start the script like Asterisk (python from the venv = the shebang to install)."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AMI_DAEMON_AGI_CACHE_DIR": str(tmp_path / "cache"),
        **(extra_env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=environment,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    vars_ = {"CRM_DID": "911234567"} if channel_vars is None else channel_vars
    side = await play_asterisk(proc.stdout, proc.stdin, env_lines, vars_)
    proc.stdin.close()
    stderr = (await proc.stderr.read()).decode()
    return side, stderr, await proc.wait()


@pytest.mark.asyncio
async def test_known_client_from_a_recorded_environment(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    side, stderr, status = await run_script(tmp_path, KNOWN_ENV, [str(config_file)])
    assert side.set_vars == {
        "CRM_KNOWN": "1",
        "CRM_SKIP": "0",
        "CRM_ENTITY": "contact:17",
        "CRM_RESPONSIBLE_EXT": "202",
        "CALLERID(name)": "Marta Ruiz",
        "CRM_ROUTE_TO": "202",
        "CRM_LOOKUP": "ok",
    }
    assert side.commands[0] == "GET VARIABLE CRM_DID"
    assert status == 0 and "Traceback" not in stderr and "ENV LINE" not in stderr


@pytest.mark.asyncio
async def test_config_from_the_environment_variable_and_the_settings_cache(
    crm_dsn: str, tmp_path: Path
) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    extra = {"AMI_DAEMON_CONFIG": str(config_file)}
    first, _, _ = await run_script(tmp_path, KNOWN_ENV, [], extra_env=extra)
    caches = list((tmp_path / "cache").glob("*.json"))
    assert len(caches) == 1
    assert json.loads(caches[0].read_text())["routing"]["default_route"] is True
    # the cached settings are used, and an edit of the rules is seen on the next call
    settings = classic_settings.load(
        None, {**extra, "AMI_DAEMON_AGI_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert settings.from_cache
    (tmp_path / "rules" / "00-routing.yaml").write_text(
        "defaults:\n  route_to_responsible: no\n# edited\n", encoding="utf-8"
    )
    second, _, _ = await run_script(tmp_path, KNOWN_ENV, [], extra_env=extra)
    assert first.set_vars["CRM_ROUTE_TO"] == "202"
    assert "CRM_ROUTE_TO" not in second.set_vars
    assert second.set_vars["CRM_ENTITY"] == "contact:17"


@pytest.mark.asyncio
async def test_employee_and_exception_numbers(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    employee = classic_env(SESSIONS["13_inbound_from_employee_mobile_queue_201"].env_lines, SCRIPT)
    side, _, _ = await run_script(tmp_path, employee, [str(config_file)])
    assert side.set_vars == {"CRM_KNOWN": "0", "CRM_SKIP": "1", "CRM_LOOKUP": "ok"}
    excepted = replace_env(KNOWN_ENV, "agi_callerid", "+34910000000")
    side, _, _ = await run_script(tmp_path, excepted, [str(config_file)])
    assert side.set_vars["CRM_SKIP"] == "1" and side.set_vars["CRM_KNOWN"] == "1"


@pytest.mark.asyncio
async def test_hostile_names_both_ways(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    lines = replace_env(KNOWN_ENV, "agi_callerid", "600555666")  # contact with a hostile name
    lines = replace_env(lines, "agi_calleridname", 'x"\nagi_callerid: 600333444; \\ Ñ')
    side, stderr, _ = await run_script(tmp_path, lines, [str(config_file)])
    assert side.set_vars["CRM_ENTITY"] == "contact:18"
    assert side.set_vars["CALLERID(name)"].startswith('O"Brien \\ x EXEC System "touch')
    assert len(side.commands) == 1 + len(side.set_vars)  # nothing injected
    assert "Traceback" not in stderr


@pytest.mark.asyncio
async def test_database_down_fails_open(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config_file = write_config(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/x")
    side, stderr, status = await run_script(tmp_path, KNOWN_ENV, [str(config_file)])
    assert side.set_vars == {"CRM_LOOKUP": "error"}
    assert status == 0 and "Traceback" not in stderr and "error" in stderr


@pytest.mark.asyncio
async def test_time_budget_exceeded(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn, time_budget_ms=250)
    locker = await asyncpg.connect(crm_dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE crm.phones IN ACCESS EXCLUSIVE MODE")
            side, stderr, status = await run_script(tmp_path, KNOWN_ENV, [str(config_file)])
    finally:
        await locker.close()
    assert side.set_vars == {"CRM_LOOKUP": "timeout"}
    assert status == 0 and "Traceback" not in stderr


@pytest.mark.asyncio
async def test_bad_config_fails_open_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pbx:\n  region: XX\n", encoding="utf-8")
    side, stderr, status = await run_script(tmp_path, KNOWN_ENV, [str(bad)])
    assert side.set_vars == {"CRM_LOOKUP": "error"}
    assert "pbx.region" in stderr and "Traceback" not in stderr and status == 0


@pytest.mark.asyncio
async def test_asterisk_hanging_up_at_once_ends_the_script_quietly(
    crm_dsn: str, tmp_path: Path
) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        str(config_file),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"AMI_DAEMON_AGI_CACHE_DIR": str(tmp_path / "cache")},
    )
    half = "\n".join(KNOWN_ENV[:6]) + "\n"
    out, err = await proc.communicate(half.encode())  # then end of input: the caller left
    assert proc.returncode == 0
    assert "Traceback" not in err.decode()
    assert out.decode().strip() in ("", 'SET VARIABLE CRM_LOOKUP "error"')


@pytest.mark.asyncio
async def test_without_the_package_the_script_finds_the_checkout_venv(tmp_path: Path) -> None:
    """Started by a Python lacking the package (a wrong shebang), it re-executes with .venv."""
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.fail("the checkout's .venv is where this test expects the package")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # isolated: no site-packages of the venv → ImportError → re-exec
        "-S",
        str(SCRIPT),
        str(tmp_path / "missing.yaml"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"AMI_DAEMON_AGI_CACHE_DIR": "off"},
    )
    out, err = await proc.communicate(("\n".join(KNOWN_ENV) + "\n\n").encode())
    # the re-executed script read the environment and reported the missing config
    assert 'SET VARIABLE CRM_LOOKUP "error"' in out.decode()
    assert "missing.yaml" in err.decode()


@pytest.mark.asyncio
async def test_sighup_from_asterisk_stops_the_script_before_its_next_command(
    crm_dsn: str, tmp_path: Path
) -> None:
    """Asterisk sends SIGHUP when the caller hangs up; pyst2's handler turns it into a hangup."""
    config_file = write_config(tmp_path, crm_dsn)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        str(config_file),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"AMI_DAEMON_AGI_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(("\n".join(KNOWN_ENV) + "\n\n").encode())
    first = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert first == b"GET VARIABLE CRM_DID\n"
    proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.2)
    proc.stdin.write(b"200 result=1 (911234567)\n")
    rest = await asyncio.wait_for(proc.stdout.read(), 20)
    err = (await proc.stderr.read()).decode()
    assert await proc.wait() == 0
    assert rest == b""  # no SET VARIABLE after the hangup
    assert "Traceback" not in err
