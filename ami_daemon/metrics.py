"""Prometheus metrics of one daemon, served at ``http://BIND:PORT/metrics``.

Each daemon owns its registry (no module globals), so tests and several
daemons in one process never mix their figures.  The endpoint binds to
127.0.0.1 by default: expose it deliberately (``metrics.bind``).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every figure the daemon reports (FEATURES B9)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "ami_daemon_ami_events_received", "AMI events received", registry=r
        )
        self.events_malformed = Counter(
            "ami_daemon_ami_events_malformed", "AMI messages that could not be read", registry=r
        )
        self.ami_connected = Gauge(
            "ami_daemon_ami_connected", "1 while logged in to Asterisk's AMI", registry=r
        )
        self.ami_reconnects = Counter("ami_daemon_ami_reconnects", "AMI reconnections", registry=r)
        self.calls_in_progress = Gauge(
            "ami_daemon_calls_in_progress", "calls being tracked", registry=r
        )
        self.calls_finished = Counter(
            "ami_daemon_calls_finished",
            "calls finished, by status and CRM outcome",
            ["status", "outcome"],
            registry=r,
        )
        self.crm_write_seconds = Histogram(
            "ami_daemon_crm_write_seconds",
            "time to decide and commit one call",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.crm_write_errors = Counter(
            "ami_daemon_crm_write_errors", "calls whose CRM write failed", registry=r
        )
        self.agi_lookups = Counter(
            "ami_daemon_agi_lookups", "AGI caller lookups, by result", ["result"], registry=r
        )
        self.agi_lookup_seconds = Histogram(
            "ami_daemon_agi_lookup_seconds",
            "AGI lookup latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.spool_depth = Gauge(
            "ami_daemon_spool_depth", "finished calls waiting in the spool", registry=r
        )
        self.rules_reloads = Counter(
            "ami_daemon_rules_reloads", "rules reloads, by result", ["result"], registry=r
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class MetricsServer:
    """A minimal HTTP/1.0 server for ``GET /metrics`` on the event loop."""

    def __init__(self, metrics: Metrics, bind: str = "127.0.0.1", port: int = 9105) -> None:
        self.metrics = metrics
        self.bind = bind
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.bind, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("metrics at http://%s:%d/metrics", self.bind, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = self.metrics.render()
                head = f"HTTP/1.0 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
            elif len(parts) >= 2 and parts[0] == "GET" and parts[1] == "/health":
                body = b"ok\n"
                head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
            else:
                body = b"not found\n"
                head = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()
