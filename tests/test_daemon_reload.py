"""SIGHUP re-reads the config file: the log level changes live, the rest names its restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ami_daemon import config
from ami_daemon.service import Daemon

BASE = "pbx: {{name: main}}\nami: {{port: {port}}}\nlogging: {{level: {level}}}\n"


def test_log_level_changes_live_and_other_changes_ask_for_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE.format(port=5038, level="INFO"))
    daemon = Daemon(config.load(path, {}))
    root = logging.getLogger()
    before = root.level
    try:
        path.write_text(BASE.format(port=5039, level="DEBUG"))
        with caplog.at_level(logging.INFO):
            daemon.reload_config()
            assert root.level == logging.DEBUG
        assert daemon.config.logging.level == "DEBUG"
        assert daemon.config.ami.port == 5038  # bound to the open AMI link: not swapped
        assert "config section 'ami' changed: restart the daemon" in caplog.text
        assert "section 'pbx' changed" not in caplog.text
    finally:
        root.setLevel(before)


def test_a_broken_config_changes_nothing_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE.format(port=5038, level="INFO"))
    daemon = Daemon(config.load(path, {}))
    path.write_text(BASE.format(port="nope", level="LOUD"))
    daemon.reload_config()
    assert daemon.config.logging.level == "INFO"
    assert "config reload failed" in caplog.text
    assert f"{path}: ami.port: must be an integer" in caplog.text
    assert f"{path}: logging.level: must be one of" in caplog.text
