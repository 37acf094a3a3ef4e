"""The durable spool: append before the write, acknowledge after the commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ami_daemon.spool import CALLS_FILE, COMPACT_BYTES, Spool, SpoolError


def test_pending_calls_survive_a_reopen_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(3):
        spool.append(f"main:{n}", {"call_id": str(n)})
    spool.ack("main:1")
    spool.close()
    again = Spool(tmp_path)
    assert [k for k, _ in again.pending()] == ["main:0", "main:2"]
    assert again.depth == 2
    again.ack("main:0")
    again.ack("main:2")
    assert again.depth == 0
    again.close()
    reopened = Spool(tmp_path)
    assert reopened.pending() == []
    reopened.close()


def test_files_are_compacted_once_large_and_fully_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    big = "z" * (COMPACT_BYTES // 4)
    for n in range(5):
        spool.append(f"main:{n}", {"call_id": str(n), "pad": big})
    spool.sync()
    assert (tmp_path / CALLS_FILE).stat().st_size > COMPACT_BYTES
    for n in range(4):
        spool.ack(f"main:{n}")
    assert (tmp_path / CALLS_FILE).stat().st_size > COMPACT_BYTES  # one still waits
    spool.ack("main:4")
    assert (tmp_path / CALLS_FILE).stat().st_size == 0
    spool.close()


def test_survives_sigkill_during_appends(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from ami_daemon.spool import Spool
        spool = Spool(Path({str(tmp_path)!r}))
        for n in range(100000):
            spool.append(f"main:{{n}}", {{"call_id": str(n), "pad": "x" * 200}})
            if n % 2 == 0:
                spool.ack(f"main:{{n}}")
            if n == 50:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    spool = Spool(tmp_path)
    keys = [int(k.split(":")[1]) for k, _ in spool.pending()]
    assert keys, "odd-numbered calls were never acknowledged"
    assert all(n % 2 == 1 for n in keys[:-1])
    assert keys == sorted(keys)
    # every odd call up to the last one appended is there: nothing lost
    assert set(range(1, keys[-1], 2)) <= set(keys)
    spool.close()


def test_torn_last_line_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    spool.append("main:1", {"call_id": "1"})
    spool.close()
    with open(tmp_path / CALLS_FILE, "ab") as handle:
        handle.write(b'{"key":"main:2","rec')
    again = Spool(tmp_path)
    assert [k for k, _ in again.pending()] == ["main:1"]
    assert "torn last line" in caplog.text
    again.close()


def test_growing_past_the_warning_size_warns_loudly_and_keeps_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, warn_bytes=500)
    for n in range(20):
        spool.append(f"main:{n}", {"call_id": str(n), "pad": "y" * 50})
    assert spool.depth == 20
    assert "over spool.warn_bytes=500" in caplog.text
    assert caplog.text.count("over spool.warn_bytes") == 1
    spool.close()


def test_unusable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError, match="spool folder"):
        Spool(blocker / "spool")
