"""``ami-daemon agi-server`` and ``ami-daemon-agi`` as installed commands, in subprocesses."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from tests.test_agi_helpers import (
    classic_env,
    play_asterisk,
    seed_crm,
    trace_sessions,
    write_config,
)

BIN = Path(sys.executable).parent
KNOWN = {s.name: s for s in trace_sessions()}["02_inbound_known_client_direct_202_agent_hangup"]


@pytest_asyncio.fixture
async def crm_dsn(migrated_dsn: str) -> str:
    await seed_crm(migrated_dsn)
    return migrated_dsn


@pytest.mark.asyncio
async def test_agi_server_serves_and_stops_on_sigterm(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "ami-daemon"),
        "agi-server",
        "--config",
        str(config_file),
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    port = None
    while port is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        assert line, "agi-server ended before listening"
        match = re.search(r"FastAGI listening on 127\.0\.0\.1:(\d+)", line)
        port = int(match.group(1)) if match else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    side = await play_asterisk(reader, writer, KNOWN.env_lines, {"CRM_DID": "911234567"})
    writer.close()
    proc.send_signal(signal.SIGTERM)
    rest = (await asyncio.wait_for(proc.stderr.read(), 20)).decode()
    assert await proc.wait() == 0
    assert side.set_vars["CRM_ROUTE_TO"] == "202"
    assert "FastAGI server stopped" in rest and "Traceback" not in rest


@pytest.mark.asyncio
async def test_agi_server_without_a_database_says_where_to_set_it(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("pbx:\n  region: ES\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "ami-daemon"),
        "agi-server",
        "--config",
        str(config_file),
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "database.dsn" in err.decode() and "Traceback" not in err.decode()


@pytest.mark.asyncio
async def test_console_script_is_the_classic_lookup(crm_dsn: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, crm_dsn)
    script = BIN / "ami-daemon-agi"
    proc = await asyncio.create_subprocess_exec(
        str(script),
        str(config_file),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={"AMI_DAEMON_AGI_CACHE_DIR": "off"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    side = await play_asterisk(proc.stdout, proc.stdin, classic_env(KNOWN.env_lines, script), {})
    proc.stdin.close()
    assert await proc.wait() == 0
    assert side.set_vars["CRM_ENTITY"] == "contact:17"
    assert side.set_vars["CRM_ROUTE_TO"] == "202"  # DID from agi_dnid: CRM_DID not set
