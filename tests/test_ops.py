"""Operations plumbing: systemd notifications, log formats, the metrics endpoint."""

from __future__ import annotations

import asyncio
import configparser
import io
import json
import logging
import socket
from pathlib import Path

import pytest

from ami_daemon.logs import call_logger, setup_logging
from ami_daemon.metrics import Metrics, MetricsServer
from ami_daemon.sdnotify import SystemdNotifier
from tests.paths import REPO


def test_notifications_reach_a_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.enabled and notifier.watchdog_seconds == 30.0
        assert notifier.ready("tracking 0 calls")
        assert listener.recv(4096) == b"READY=1\nSTATUS=tracking 0 calls"
        assert notifier.watchdog()
        assert listener.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()
    finally:
        listener.close()


def test_without_systemd_notifications_are_no_ops() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_seconds is None


def test_json_logs_carry_the_call_id() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    try:
        call_logger(logging.getLogger("ami_daemon.test"), "1795797192.0").info("written %s", "x")
        logging.getLogger("ami_daemon.test").info("no call")
    finally:
        setup_logging("WARNING", "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["call_id"] == "1795797192.0" and first["message"] == "written x"
    assert first["level"] == "INFO" and first["logger"] == "ami_daemon.test"
    assert "call_id" not in second


def test_text_logs_name_the_call() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    try:
        call_logger(logging.getLogger("ami_daemon.test"), "42.7").warning("missed")
    finally:
        setup_logging("WARNING", "text")
    assert "WARNING ami_daemon.test: [call 42.7] missed" in stream.getvalue()


@pytest.mark.asyncio
async def test_metrics_endpoint_serves_prometheus_text() -> None:
    metrics = Metrics()
    metrics.events_received.inc(3)
    metrics.calls_finished.labels(status="answered", outcome="lead_created").inc()
    server = MetricsServer(metrics, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = (await reader.read()).decode()
        writer.close()
        assert response.startswith("HTTP/1.0 200 OK")
        assert "ami_daemon_ami_events_received_total 3.0" in response
        assert (
            'ami_daemon_calls_finished_total{outcome="lead_created",status="answered"} 1.0'
            in response
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /nope HTTP/1.0\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.0 404")
        writer.close()
    finally:
        await server.close()


def test_systemd_unit_is_notify_with_watchdog_restart_and_sandboxing() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "systemd" / "ami-daemon.service")
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "ami-daemon"
    assert service["ExecReload"].endswith("-HUP $MAINPID")
    for option in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert option in service, option
    assert service["ExecStart"].split()[0].endswith("ami-daemon")
