"""`ami-daemon run` as a real process for end-to-end tests, as systemd would start it.

What systemd gives a ``Type=notify`` service is reproduced here: a datagram
socket named in ``$NOTIFY_SOCKET`` that this side listens on (an abstract
socket, ``@name``, so no path length limit), ``$WATCHDOG_USEC``, signals by
pid.  The PBX is the simulator, run in the test's own event loop on a port the
daemon's config names; the CRM is a test database.  Nothing here sleeps for a
fixed time: every wait polls a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import Timeline, build_timeline, load_capture
from ami_daemon.crm.imports import Kind, import_csv
from ami_daemon.spool import ACKS_FILE, CALLS_FILE
from tests.crm_world import CONTACTS_CSV, USERS_CSV
from tests.paths import TRACES

SECRET = "s3cret"
PBX_NAME = "main"
LAB = sorted((TRACES / "asterisk20").glob("[0-9]*"))
AMI_DAEMON = Path(sys.executable).parent / "ami-daemon"
#: the longest any single wait of these tests may take before it fails
DEADLINE = 30.0


def lab(name_prefix: str) -> Path:
    """The lab capture folder whose name starts with ``name_prefix`` (``"01"``)."""
    (found,) = [p for p in LAB if p.name.startswith(name_prefix)]
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now (for the daemon's AGI and metrics)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def poll(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    timeout: float = DEADLINE,
    interval: float = 0.05,
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def seed_lab_dsn(dsn: str) -> None:
    """The lab's employees 201–203 (201's mobile) and its two known clients."""
    conn = await asyncpg.connect(dsn)
    try:
        await import_csv(conn, Kind.USERS, USERS_CSV, "ES")
        await import_csv(conn, Kind.CONTACTS, CONTACTS_CSV, "ES")
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def call_rows(dsn: str) -> dict[str, asyncpg.Record]:
    """``crm.calls`` by call id."""
    return {r["call_id"]: r for r in await fetch(dsn, "SELECT * FROM crm.calls")}


def timeline_of(captures: Iterable[Path], **options: Any) -> Timeline:
    return build_timeline([load_capture(c) for c in captures], **options)


async def start_simulator(
    timeline: Timeline, *, port: int = 0, agi_port: int | None = None, **options: Any
) -> Simulator:
    """A simulated Asterisk serving ``timeline``; it plays the AGI calls against ``agi_port``."""
    options.setdefault("secret", SECRET)
    options.setdefault("speed", None)
    agi = ("127.0.0.1", agi_port) if agi_port is not None else None
    sim = Simulator(timeline, SimulatorOptions(agi=agi, **options))
    await sim.start(port=port)
    return sim


def write_config(
    path: Path,
    *,
    dsn: str,
    ami_port: int,
    rules: Path,
    spool: Path,
    agi_port: int,
    metrics_port: int,
    log_format: str = "text",
    log_level: str = "INFO",
) -> Path:
    """A complete config file for one test daemon (lab PBX, everything on localhost)."""
    config = {
        "pbx": {
            "name": PBX_NAME,
            "region": "ES",
            "timezone": "Europe/Madrid",
            "trunk_channels": ["^SIP/trunk-"],
            "employee_channels": "^(?:SIP|PJSIP|IAX2)/(?P<peer>[^-/;]+)-",
            "peer_extensions": {},
            "outside_prefix": "",
        },
        "ami": {
            "host": "127.0.0.1",
            "port": ami_port,
            "username": "ami-daemon",
            "secret": SECRET,
            "reconnect_max_delay": 0.5,
            "ping_interval": 5.0,
        },
        "database": {"dsn": dsn, "connect_timeout": 5.0},
        "agi": {"port": agi_port},
        "rules": {"path": str(rules)},
        "logging": {"level": log_level, "format": log_format},
        "metrics": {"port": metrics_port},
        "spool": {"path": str(spool)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class NotifyListener:
    """The systemd side of ``sd_notify``: collects every datagram the daemon sends."""

    def __init__(self) -> None:
        self.name = f"amid-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)
        #: (monotonic time received, the datagram's lines)
        self.messages: list[tuple[float, list[str]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """The value of ``$NOTIFY_SOCKET`` (``@`` = abstract namespace)."""
        return "@" + self.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._receive(), name="notify-listener")

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def count(self, line: str) -> int:
        return sum(line in lines for _, lines in self.messages)

    def times(self, line: str) -> list[float]:
        return [at for at, lines in self.messages if line in lines]

    async def wait_for(self, line: str, count: int = 1, timeout: float = DEADLINE) -> None:
        await poll(
            lambda: self.count(line) >= count, f"{count} x {line!r} on NOTIFY_SOCKET", timeout
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()


@dataclass
class DaemonProcess:
    """One ``ami-daemon run --config FILE`` child process and what it wrote."""

    process: asyncio.subprocess.Process
    config: Path
    log_path: Path
    metrics_port: int
    notify: NotifyListener | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def json_log(self) -> list[dict[str, Any]]:
        """The log as JSON lines (``logging.format: json``); a line that is not JSON fails."""
        entries = []
        for line in self.log_text().splitlines():
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"log line is not JSON: {line!r}") from None
        return entries

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"ami-daemon did not exit within {timeout:g} s; its log:\n{self.log_text()}"
            ) from None

    async def stop(self, timeout: float = DEADLINE) -> int:
        """SIGTERM, as ``systemctl stop`` sends it; the exit status."""
        if self.running:
            self.signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> None:
        """Last resort at the end of a failed test: never leave a daemon behind."""
        if self.running:
            self.process.kill()
            await self.process.wait()

    async def metrics(self) -> dict[str, float]:
        """``GET /metrics`` parsed: ``'name{label="v",…}'`` → value."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head
        return parse_metrics(body.decode())


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    """Sum of every labelled sample of ``name`` (``name{...}``)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def daemon_env(notify: NotifyListener | None, watchdog_usec: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMI_DAEMON_")}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_daemon(
    config: Path,
    log_path: Path,
    *,
    metrics_port: int,
    notify: NotifyListener | None = None,
    watchdog_usec: int | None = None,
    args: tuple[str, ...] = (),
) -> DaemonProcess:
    """Start ``ami-daemon run --config config [args]`` with stdout and stderr in ``log_path``."""
    with open(log_path, "ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(AMI_DAEMON),
            "run",
            "--config",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=daemon_env(notify, watchdog_usec),
        )
    return DaemonProcess(process, config, log_path, metrics_port, notify, args)


def spool_pending(spool: Path) -> dict[str, dict[str, Any]]:
    """Calls waiting in a spool folder, read from its files: ``calls.jsonl`` minus ``acks.log``.

    Keyed by call id (the spool's key is ``pbx<TAB>call_id``).  Read
    independently of :class:`ami_daemon.spool.Spool`, as an operator would.
    """
    calls_path, acks_path = spool / CALLS_FILE, spool / ACKS_FILE
    acked = set()
    if acks_path.exists():
        acked = {line for line in acks_path.read_text(encoding="utf-8").splitlines() if line}
    pending: dict[str, dict[str, Any]] = {}
    if calls_path.exists():
        for line in calls_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry["key"] not in acked:
                    pending[entry["key"].split("\t", 1)[1]] = entry["record"]
    return pending
