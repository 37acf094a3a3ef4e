"""The shipped systemd unit, checked by systemd's own tools (``systemd-analyze``).

``verify`` parses the unit as systemd would load it: a misspelt directive is
only a warning at boot ("Unknown key 'WatchdgSec'", then ignored), so the
watchdog or a sandboxing option would silently be missing.  ``security``
scores the sandboxing offline; the unit must stay in systemd's "OK" band.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon_harness import AMI_DAEMON
from tests.paths import REPO

UNIT = REPO / "systemd" / "ami-daemon.service"
ANALYZE = shutil.which("systemd-analyze")
#: systemd's exposure score x 10 (0 = fully sandboxed, 100 = none); "OK" is below 2.0
MAX_EXPOSURE = 20

needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed_copy(tmp_path: Path) -> Path:
    """The unit as installed here: ExecStart pointing at this checkout's ami-daemon."""
    text = UNIT.read_text(encoding="utf-8")
    shipped = "ExecStart=/opt/ami-daemon/.venv/bin/ami-daemon run"
    assert shipped in text
    unit = tmp_path / "ami-daemon.service"
    unit.write_text(text.replace(shipped, f"ExecStart={AMI_DAEMON} run"), encoding="utf-8")
    return unit


@needs_systemd
def test_systemd_loads_the_unit_without_a_warning(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_systemd
def test_the_unit_sandboxing_scores_ok(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            f"--threshold={MAX_EXPOSURE}",
            str(installed_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for ami-daemon.service" in result.stdout
