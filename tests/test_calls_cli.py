"""``ami-daemon calls CAPTURE [--config FILE]`` as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ami_daemon.calls.summary import CallSummary
from tests.paths import REPO, TRACES

BIN = Path(sys.executable).parent / "ami-daemon"
CONFIGS = REPO / "tests" / "tracker_configs"
CONTRACT_KEYS = [
    "pbx", "call_id", "direction", "external_number", "did", "trunk", "status", "answered_by",
    "final_agent", "caller_extension", "agents_rung", "queue", "transfers", "started_at",
    "answered_at", "ended_at", "talk_seconds",
]  # fmt: skip


def ami_daemon(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_prints_one_json_line_per_call_with_the_contracts_keys_in_order() -> None:
    capture = TRACES / "asterisk20" / "04_inbound_queue_201_blind_transfer_to_202" / "ami.raw"
    result = ami_daemon("calls", capture, "--config", CONFIGS / "lab.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert list(data) == CONTRACT_KEYS
    assert data["transfers"] == [{"kind": "blind", "from": "201", "to": "202"}]
    assert data["started_at"] == "2026-11-27T16:33:47.029+00:00"
    assert data["talk_seconds"] == 8
    assert CallSummary.from_json_dict(data).to_json_dict() == data


def test_a_config_with_only_a_pbx_section_is_enough(tmp_path: Path) -> None:
    cfg = tmp_path / "only-pbx.yaml"
    cfg.write_text("pbx:\n  name: main\n  region: ES\n")
    capture = TRACES / "asterisk20" / "07_outbound_201_to_external_busy" / "ami.raw"
    result = ami_daemon("calls", capture, "--config", cfg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    data = json.loads(line)
    assert (data["pbx"], data["direction"], data["status"]) == ("main", "outbound", "busy")
    assert (data["external_number"], data["caller_extension"]) == ("+34911000111", "201")


def test_calls_in_the_order_they_ended_including_internal_ones() -> None:
    capture = TRACES / "cacofonisk" / "simple" / "ab_success_twoclients.ami"
    result = ami_daemon("calls", capture, "--config", CONFIGS / "cacofonisk.yaml")
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["direction"] for c in calls] == ["outbound", "inbound"]
    internal = ami_daemon(
        "calls", TRACES / "asterisk20" / "08_internal_201_to_202" / "ami.raw",
        "--config", CONFIGS / "lab.yaml",
    )  # fmt: skip
    assert json.loads(internal.stdout)["direction"] == "internal"


def test_missing_or_unreadable_capture_is_a_clear_error(tmp_path: Path) -> None:
    cfg = CONFIGS / "lab.yaml"
    missing = ami_daemon("calls", tmp_path / "nope.raw", "--config", cfg)
    assert missing.returncode == 2
    assert "nope.raw: capture file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    folder = ami_daemon("calls", tmp_path, "--config", cfg)
    assert folder.returncode == 2 and "is a directory" in folder.stderr


def test_bad_config_is_reported_not_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pbx:\n  trunk_channels: ['(unclosed']\n")
    capture = TRACES / "asterisk20" / "01_inbound_queue_201_caller_hangup" / "ami.raw"
    result = ami_daemon("calls", capture, "--config", cfg)
    assert result.returncode == 2
    assert "pbx.trunk_channels[0]" in result.stderr and "Traceback" not in result.stderr


def test_garbage_capture_gives_no_calls_and_a_warning(tmp_path: Path) -> None:
    capture = tmp_path / "garbage.raw"
    capture.write_bytes(bytes(range(256)) * 10 + b"\r\n\r\n")
    result = ami_daemon("calls", capture, "--config", CONFIGS / "lab.yaml")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "garbage.raw: byte 0:" in result.stderr and "Traceback" not in result.stderr
