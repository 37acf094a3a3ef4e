"""The live AMI connection against the simulator and small AMI servers, over real TCP.

Each panoramisk fault of STACK.md has its defence proven here: a failing
callback does not drop the link, a character split across two TCP reads
arrives intact, Originate always carries ``Async``, a refused login is an
error, a half-open link is noticed by the keepalive, actions time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest
import pytest_asyncio

from ami_daemon.ami.connection import (
    AmiActionTimeout,
    AmiConnection,
    AmiLoginError,
    AmiNotConnected,
    LinkDown,
    LinkUp,
    StreamItem,
)
from ami_daemon.ami.reader import AmiMessage, StreamDecoder, iter_messages
from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import ReplayEvent, Timeline, build_timeline, encode, load_capture
from ami_daemon.config import AmiConfig
from tests.paths import TRACES

QUEUE_CALL = TRACES / "asterisk20" / "01_inbound_queue_201_caller_hangup"
SECRET = "s3cret"


def ami_config(port: int, **changes: float | str) -> AmiConfig:
    base = AmiConfig(
        host="127.0.0.1",
        port=port,
        username="ami-daemon",
        secret=SECRET,
        connect_timeout=2.0,
        action_timeout=2.0,
        ping_interval=30.0,
        ping_timeout=2.0,
        reconnect_max_delay=0.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def timeline() -> Timeline:
    return build_timeline([load_capture(QUEUE_CALL)])


@dataclass
class Collector:
    """Reads a connection's stream from one task, like the daemon's consumer."""

    connection: AmiConnection
    items: list[StreamItem] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Collector:
        async def consume() -> None:
            async for item in self.connection.stream():
                self.items.append(item)

        self.task = asyncio.create_task(consume())
        return self

    @property
    def events(self) -> list[AmiMessage]:
        return [item[0] for item in self.items if isinstance(item, tuple)]

    def markers(self) -> list[StreamItem]:
        return [item for item in self.items if not isinstance(item, tuple)]

    async def stop(self) -> None:
        await self.connection.close()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


@pytest_asyncio.fixture
async def simulator() -> AsyncIterator[Callable[..., object]]:
    started: list[Simulator] = []

    async def make(tl: Timeline | None = None, **options: object) -> Simulator:
        opts = SimulatorOptions(secret=SECRET, speed=None, login_failure_delay=0.01)
        for key, value in options.items():
            setattr(opts, key, value)
        sim = Simulator(tl if tl is not None else timeline(), opts)
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.close()


def replayed(sim: Simulator) -> list[list[tuple[str, str]]]:
    return [e.message.headers for e in sim.timeline.events]


def received(collector: Collector) -> list[list[tuple[str, str]]]:
    return [m.headers for m in collector.events if m.get("Event") != "FullyBooted"]


async def drain(sim: Simulator, connection: AmiConnection) -> None:
    """Wait until the replay ended and everything sent before it reached the inbox."""
    await sim.wait_done(10)
    await connection.ping()


@pytest.mark.asyncio
async def test_every_event_arrives_once_in_order_after_a_link_marker(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    assert received(collector) == replayed(sim)
    first = collector.items[0]
    assert isinstance(first, LinkUp) and first.session == 1 and not first.reconnect
    assert first.banner == "Asterisk Call Manager/9.0.0"
    assert isinstance(collector.items[1], tuple) and collector.items[1][0]["Event"] == "FullyBooted"
    assert isinstance(collector.items[-1], LinkDown)
    assert connection.sessions == 1
    assert all(isinstance(item[1], float) for item in collector.items if isinstance(item, tuple))


@pytest.mark.asyncio
async def test_refused_login_raises_naming_user_and_reason(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port), "wrong")
    with pytest.raises(AmiLoginError) as caught:
        await asyncio.wait_for(connection.start(), 5)
    message = str(caught.value)
    assert "Authentication failed" in message and "'ami-daemon'" in message
    assert f"127.0.0.1:{sim.port}" in message
    # No silent retry loop: exactly one login was tried, and nothing is connected.
    assert [a.get("Action") for a in sim.actions] == ["Login"]
    assert not connection.connected
    with pytest.raises(AmiNotConnected):
        await connection.ping()


@pytest.mark.asyncio
async def test_md5_challenge_login(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port), md5=True)
    await connection.start()
    login = next(a for a in sim.actions if a.get("Action") == "Login")
    assert login.get("AuthType") == "MD5" and "Secret" not in login and len(login["Key"]) == 32
    assert connection.sessions == 1
    await connection.close()


@pytest.mark.asyncio
async def test_exception_in_an_observer_does_not_drop_the_link(simulator) -> None:  # type: ignore[no-untyped-def]
    """STACK.md: an exception escaping a panoramisk callback drops the connection."""
    calls = 0

    def faulty(message: AmiMessage) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"observer bug on {message.get('Event')}")

    def faulty_bytes(data: bytes) -> None:
        raise ValueError("raw hook bug")

    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port), observers=[faulty], on_bytes=faulty_bytes)
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    assert received(collector) == replayed(sim)
    assert calls == len(replayed(sim)) + 1  # + FullyBooted
    assert connection.sessions == 1 and connection.failed_attempts == 0
    assert [type(m) for m in collector.markers()] == [LinkUp, LinkDown]


class SplittingServer:
    """A minimal AMI server that writes an event in two TCP segments cut inside a character."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        line = b""
        while not line.startswith(b"ActionID: "):
            line = await reader.readline()
        action_id = line.strip().split(b": ", 1)[1].decode()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(encode([("Response", "Success"), ("ActionID", action_id)]))
        for number, name in enumerate(self.names):
            data = encode(
                [
                    ("Event", "Newchannel"),
                    ("Channel", f"SIP/trunk-0000000{number}"),
                    ("CallerIDName", name),
                    ("Uniqueid", f"1795797192.{number}"),
                ]
            )
            encoded_name = name.encode()
            cut = data.index(encoded_name) + 1  # inside the first (two-byte) character
            assert encoded_name[0] >= 0xC0
            writer.write(data[:cut])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(data[cut:])
            await writer.drain()
            await asyncio.sleep(0.05)
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_multibyte_character_split_across_reads_arrives_intact() -> None:
    names = ["Иван Петров", "Éloïse Muñoz"]
    server = SplittingServer(names)
    port = await server.start()
    chunks: list[bytes] = []
    connection = AmiConnection(ami_config(port), on_bytes=chunks.append)
    try:
        await connection.start()
        collector = Collector(connection).start()
        for _ in range(100):
            if len(collector.events) == len(names):
                break
            await asyncio.sleep(0.05)
        await collector.stop()
    finally:
        await server.close()
    assert [m["CallerIDName"] for m in collector.events] == names
    # The cut really happened inside a character: some read ended mid-sequence.
    assert any(c and c[-1] >= 0x80 for c in chunks)


@pytest.mark.asyncio
async def test_originate_always_carries_async_and_waits_for_originate_response(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    result = await connection.originate(
        "SIP/201", context="internal", exten="0034911000111", caller_id="CRM <201>"
    )
    assert result.queued and result.answered and result.reason == "4" and result.uniqueid
    # A raw Originate without Async: panoramisk would raise KeyError('async') and drop the link.
    answer = await connection.send_action(
        {"Action": "Originate", "Channel": "SIP/202", "Application": "Playback", "Data": "x"}
    )
    originates = [a for a in sim.actions if a.get("Action") == "Originate"]
    assert [a.get("Async") for a in originates] == ["true", "true"]
    assert isinstance(answer, list) and answer[-1]["Event"] == "OriginateResponse"
    assert connection.connected and connection.sessions == 1
    await connection.close()


@pytest.mark.asyncio
async def test_half_open_link_is_noticed_by_the_keepalive_and_replaced(simulator) -> None:  # type: ignore[no-untyped-def]
    """The simulator stops answering (socket open); the Ping timeout reconnects."""
    sim = await simulator(stall_after=40)
    connection = AmiConnection(ami_config(sim.port, ping_interval=0.2, ping_timeout=0.5))
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    assert received(collector) == replayed(sim)  # nothing lost, nothing twice
    markers = collector.markers()
    assert [type(m) for m in markers] == [LinkUp, LinkDown, LinkUp, LinkDown]
    assert "Ping" in markers[1].reason  # type: ignore[union-attr]
    assert markers[2].reconnect  # type: ignore[union-attr]
    assert sim.logins == 2


@pytest.mark.asyncio
async def test_reconnects_with_backoff_after_the_link_drops(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator(drop_after=50)
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    assert received(collector) == replayed(sim)
    ups = [m for m in collector.markers() if isinstance(m, LinkUp)]
    assert [u.session for u in ups] == [1, 2]
    # Link markers sit exactly between the two sessions' events.
    down = next(i for i, m in enumerate(collector.items) if isinstance(m, LinkDown))
    before = [m for m in collector.items[:down] if isinstance(m, tuple)]
    assert len([m for m in before if m[0].get("Event") != "FullyBooted"]) == 50


@pytest.mark.asyncio
async def test_action_timeout_when_asterisk_stops_answering(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port, action_timeout=0.2))
    await connection.start()
    sim.stall()
    with pytest.raises(AmiActionTimeout, match=r"CoreShowChannels within 0\.2 s"):
        await connection.core_show_channels()
    await connection.close()


@pytest.mark.asyncio
async def test_waits_for_an_asterisk_that_is_not_up_yet(simulator) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = AmiConnection(ami_config(port))
    starting = asyncio.create_task(connection.start())
    await asyncio.sleep(0.3)
    assert not starting.done() and connection.failed_attempts >= 1
    sim = Simulator(timeline(), SimulatorOptions(secret=SECRET, speed=None))
    await sim.start(port=port)
    try:
        await asyncio.wait_for(starting, 5)
        assert connection.sessions == 1
        await connection.wait_fully_booted(2)
    finally:
        await connection.close()
        await sim.close()


@pytest.mark.asyncio
async def test_core_show_channels_lists_the_channels_alive_in_the_replay(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator(drop_after=60, hold_after_break=True)
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    collector = Collector(connection).start()
    # The replay holds after the break: the PBX state is the one after event 60.
    for _ in range(100):
        if connection.sessions == 2:
            break
        await asyncio.sleep(0.05)
    channels = await connection.core_show_channels()
    sim.resume()
    await drain(sim, connection)
    await collector.stop()
    assert channels, "a call is in progress after 60 events"
    alive: set[str] = set()
    for event in sim.timeline.events[:60]:
        if event.message.get("Event") == "Newchannel":
            alive.add(event.message["Uniqueid"])
        elif event.message.get("Event") == "Hangup":
            alive.discard(event.message["Uniqueid"])
    assert {c["Uniqueid"] for c in channels} == alive
    assert received(collector) == replayed(sim)
    first = channels[0]
    for key in ("Channel", "ChannelState", "Linkedid", "Context", "Exten", "Duration", "BridgeId"):
        assert key in first


@pytest.mark.asyncio
async def test_event_filter_is_installed_with_one_action(simulator) -> None:  # type: ignore[no-untyped-def]
    # Paced, so that the filter is in place before the second event (0.13 s later).
    sim = await simulator(speed=5.0)
    connection = AmiConnection(ami_config(sim.port), event_filter=["Newchannel", "Hangup"])
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    names = {m["Event"] for m in collector.events}
    # "Event: Hangup" also matches HangupRequest: a superset is harmless.  The
    # capture's first event (SuccessfulAuth) comes with the login, before the filter.
    assert {"Newchannel", "Hangup", "FullyBooted"} <= names
    assert names <= {"Newchannel", "Hangup", "HangupRequest", "FullyBooted", "SuccessfulAuth"}
    filters = [a for a in sim.actions if a.get("Action") == "Filter"]
    assert [f["Filter"] for f in filters] == ["Event: (FullyBooted|Hangup|Newchannel|Shutdown)"]


@pytest.mark.asyncio
async def test_close_logs_off(simulator, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator()
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    with caplog.at_level(logging.WARNING):
        await connection.close()
    assert sim.actions[-1].get("Action") == "Logoff"
    assert not connection.connected


@pytest.mark.asyncio
async def test_asterisk_restart_announced_by_shutdown_reconnects(simulator) -> None:  # type: ignore[no-untyped-def]
    """Asterisk sends ``Event: Shutdown`` before a restart, then closes the socket."""
    events = list(timeline().events)
    shutdown = encode(
        [
            ("Event", "Shutdown"),
            ("Privilege", "system,all"),
            ("Shutdown", "Cleanly"),
            ("Restart", "True"),
        ]
    )
    [message] = StreamDecoder().feed(shutdown)
    events.insert(30, ReplayEvent(message, shutdown, None, 0))
    sim = await simulator(Timeline(tuple(events), {}, 1))
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    collector = Collector(connection).start()
    await drain(sim, connection)
    await collector.stop()
    assert received(collector) == [e.message.headers for e in events]
    assert [type(m) for m in collector.markers()] == [LinkUp, LinkDown, LinkUp, LinkDown]
    down = collector.markers()[1]
    assert isinstance(down, LinkDown) and down.session == 1
    assert connection.sessions == 2


@pytest.mark.asyncio
async def test_recorder_flushes_while_the_link_is_quiet_and_appends(simulator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ami_daemon.ami.recorder import CaptureRecorder

    sim = await simulator()
    path = tmp_path / "live.raw"
    path.write_bytes(b"")
    recorder = CaptureRecorder(path, flush_interval=0.05).open()
    connection = AmiConnection(ami_config(sim.port), on_bytes=recorder.write)
    await connection.start()
    await drain(sim, connection)
    # Not closed yet: the timer has pushed everything to the file already.
    for _ in range(100):
        if path.stat().st_size == recorder.bytes_written:
            break
        await asyncio.sleep(0.02)
    assert path.stat().st_size == recorder.bytes_written > 60_000
    await connection.close()
    recorder.close()
    data = path.read_bytes()
    assert data.startswith(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n")
    assert b"Response: Goodbye\r\n" in data  # the Logoff answer is recorded too
    events = [m.headers for m in iter_messages(data) if m.get("Event") not in (None, "FullyBooted")]
    assert events == replayed(sim)


@pytest.mark.asyncio
async def test_fully_booted_is_awaited_when_asterisk_is_still_booting(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = await simulator(booting=0.3)
    connection = AmiConnection(ami_config(sim.port))
    await connection.start()
    assert connection.connected and not connection.fully_booted
    await connection.wait_fully_booted(5)
    assert connection.fully_booted
    await connection.close()
    assert not connection.fully_booted


@pytest.mark.asyncio
async def test_reconnect_delays_double_up_to_the_cap() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there any more
    connection = AmiConnection(ami_config(port, reconnect_max_delay=0.2), initial_backoff=0.025)
    starting = asyncio.create_task(connection.start())
    for _ in range(200):
        if len(connection.backoff_delays) >= 6:
            break
        await asyncio.sleep(0.02)
    await connection.close()
    with pytest.raises(AmiNotConnected, match="closed before Asterisk"):
        await starting
    assert list(connection.backoff_delays)[:6] == [0.025, 0.05, 0.1, 0.2, 0.2, 0.2]
    assert connection.failed_attempts >= 6


@pytest.mark.asyncio
async def test_control_stock_panoramisk_corrupts_the_same_split_stream() -> None:
    """The splitting server does reproduce STACK.md's fault on unpatched panoramisk."""
    from panoramisk import Manager

    names = ["Иван Петров", "Éloïse Muñoz"]
    server = SplittingServer(names)
    port = await server.start()
    got: list[str] = []
    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="ami-daemon",
        secret=SECRET,
        ping_delay=3600,
        loop=asyncio.get_running_loop(),
    )
    manager.register_event("Newchannel", lambda _m, event: got.append(event["CallerIDName"]))
    try:
        await manager.connect()
        for _ in range(100):
            if len(got) == len(names):
                break
            await asyncio.sleep(0.05)
    finally:
        manager.close()
        await server.close()
    assert len(got) == len(names)
    assert got != names  # e.g. 'ван Петров': the split character was dropped
