"""The simulated Asterisk: AMI protocol answers, replay timeline, FastAGI, CLI.

Protocol checks talk raw bytes over TCP, the way Asterisk's manager.c
answers (see the simulator's docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ami_daemon.ami.fastagi_client import AgiScript, parse_agi_log, play_agi, split_args
from ami_daemon.ami.reader import AmiMessage, StreamDecoder, read_capture
from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import build_timeline, encode, load_capture
from ami_daemon.errors import UserError
from tests.paths import REPO, TRACES

LAB = TRACES / "asterisk20"
QUEUE_CALL = LAB / "01_inbound_queue_201_caller_hangup"
KNOWN_CLIENT = LAB / "02_inbound_known_client_direct_202_agent_hangup"
LAB_CONFIG = REPO / "tests" / "tracker_configs" / "lab.yaml"
AMI_DAEMON = str(Path(sys.executable).parent / "ami-daemon")


class Client:
    """A raw AMI client: write actions, read whole messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = StreamDecoder()
        self.pending: list[AmiMessage] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, *headers: tuple[str, str]) -> None:
        self.writer.write(encode(list(headers)))

    async def read(self, timeout: float = 2.0) -> AmiMessage:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("closed")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def answer_to(self, action_id: str) -> AmiMessage:
        while True:
            message = await self.read()
            if message.get("ActionID") == action_id:
                return message

    async def closed(self) -> bool:
        try:
            while True:
                await self.read()
        except EOFError:
            return True

    async def login(self, secret: str = "pw", events: str = "off") -> AmiMessage:
        self.send(
            ("Action", "Login"),
            ("ActionID", "l1"),
            ("Username", "ami-daemon"),
            ("Secret", secret),
            ("Events", events),
        )
        return await self.answer_to("l1")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(
        build_timeline([load_capture(QUEUE_CALL)]),
        SimulatorOptions(secret="pw", speed=None, login_failure_delay=0.0),
    )
    await simulator.start()
    yield simulator
    await simulator.close()


@pytest.mark.asyncio
async def test_banner_ping_unknown_action_and_actionid_echo(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    assert (await client.reader.readline()) == b"Asterisk Call Manager/9.0.0\r\n"
    client.send(("Action", "Ping"), ("ActionID", "early"))
    assert (await client.answer_to("early"))["Message"] == "Permission denied"
    assert (await client.login())["Message"] == "Authentication accepted"
    client.send(("Action", "Ping"), ("ActionID", "p1"))
    pong = await client.answer_to("p1")
    assert pong["Response"] == "Success" and pong["Ping"] == "Pong"
    assert float(pong["Timestamp"]) > 0
    client.send(("Action", "NoSuchThing"), ("ActionID", "x1"))
    unknown = await client.answer_to("x1")
    assert (unknown["Response"], unknown["Message"]) == ("Error", "Invalid/unknown command")
    client.send(("ActionID", "m1"), ("Foo", "bar"))
    assert (await client.answer_to("m1"))["Message"] == "Missing action in request"
    client.send(("Action", "Logoff"), ("ActionID", "bye"))
    assert (await client.answer_to("bye"))["Response"] == "Goodbye"
    assert await client.closed()
    await client.close()


@pytest.mark.asyncio
async def test_bad_credentials_are_refused_and_the_socket_closed(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    answer = await client.login(secret="nope")
    assert (answer["Response"], answer["Message"]) == ("Error", "Authentication failed")
    assert await client.closed()
    await client.close()
    assert sim.logins == 0


@pytest.mark.asyncio
async def test_md5_challenge_login(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    client.send(("Action", "Challenge"), ("ActionID", "c"), ("AuthType", "MD5"))
    challenge = (await client.answer_to("c"))["Challenge"]
    key = hashlib.md5((challenge + "pw").encode()).hexdigest()
    client.send(
        ("Action", "Login"),
        ("ActionID", "l"),
        ("Username", "ami-daemon"),
        ("AuthType", "MD5"),
        ("Key", key),
        ("Events", "off"),
    )
    assert (await client.answer_to("l"))["Response"] == "Success"
    await client.close()


@pytest.mark.asyncio
async def test_events_flow_after_login_with_fully_booted_first(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    await client.login(events="on")
    first = await client.read()
    assert first["Event"] == "FullyBooted" and first["Status"] == "Fully Booted"
    events = [await client.read() for _ in range(len(sim.timeline))]
    assert [e.headers for e in events] == [e.message.headers for e in sim.timeline.events]
    await client.close()


@pytest.mark.asyncio
async def test_events_off_gets_no_events_until_switched_on(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    await client.login(events="off")
    client.send(("Action", "Ping"), ("ActionID", "p"))
    assert (await client.read())["ActionID"] == "p"  # nothing came before it
    client.send(("Action", "Events"), ("ActionID", "e"), ("EventMask", "on"))
    assert (await client.answer_to("e"))["Events"] == "On"
    assert "Event" in await client.read()
    await client.close()


@pytest.mark.asyncio
async def test_core_show_channels_answers_like_asterisk_20() -> None:
    simulator = Simulator(
        build_timeline([load_capture(QUEUE_CALL)]),
        SimulatorOptions(secret="pw", speed=None, drop_after=60, hold_after_break=True),
    )
    await simulator.start()
    try:
        first = await Client.connect(simulator.port)
        await first.login(events="on")
        assert await first.closed()  # dropped after 60 events
        client = await Client.connect(simulator.port)
        await client.login(events="off")
        client.send(("Action", "CoreShowChannels"), ("ActionID", "c"))
        head = await client.answer_to("c")
        assert (head["Response"], head["EventList"], head["Message"]) == (
            "Success",
            "start",
            "Channels will follow",
        )
        items = []
        while True:
            message = await client.answer_to("c")
            if message["Event"] == "CoreShowChannelsComplete":
                break
            items.append(message)
        assert message["EventList"] == "Complete" and int(message["ListItems"]) == len(items)
        assert items and {m["Uniqueid"] for m in items} == set(simulator.channels)
        assert all(m["Event"] == "CoreShowChannel" for m in items)
        assert [k for k, _ in items[0].headers][:3] == ["Event", "ActionID", "Channel"]
        assert items[0]["Duration"].count(":") == 2
        await first.close()
        await client.close()
    finally:
        await simulator.close()


@pytest.mark.asyncio
async def test_sync_and_async_originate(sim: Simulator) -> None:
    client = await Client.connect(sim.port)
    await client.login()
    client.send(
        ("Action", "Originate"),
        ("ActionID", "o1"),
        ("Channel", "SIP/201"),
        ("Context", "internal"),
        ("Exten", "202"),
        ("Priority", "1"),
        ("Async", "true"),
    )
    queued = await client.answer_to("o1")
    assert (queued["Response"], queued["Message"]) == ("Success", "Originate successfully queued")
    final = await client.answer_to("o1")
    assert final["Event"] == "OriginateResponse" and final["Response"] == "Success"
    assert final["Reason"] == "4" and final["Channel"] == "SIP/201"
    client.send(("Action", "Originate"), ("ActionID", "o2"), ("Channel", "SIP/202"))
    assert (await client.answer_to("o2"))["Message"] == "Originate successfully queued"
    await client.close()


# ----------------------------------------------------------------- timeline


def test_single_capture_replays_its_events_unchanged() -> None:
    timeline = build_timeline([load_capture(QUEUE_CALL / "ami.raw")])
    source = [
        m.headers
        for m in read_capture(QUEUE_CALL / "ami.raw")
        if "Event" in m and m["Event"] != "FullyBooted"
    ]
    assert [e.message.headers for e in timeline.events] == source
    assert all(e.data.endswith(b"\r\n\r\n") for e in timeline.events)


def test_captures_follow_each_other_on_one_clock() -> None:
    one, two = load_capture(QUEUE_CALL), load_capture(KNOWN_CLIENT)
    timeline = build_timeline([two, one], gap=2.0)
    times = [e.at for e in timeline.events if e.at is not None]
    assert times == sorted(times)
    assert [e.item for e in timeline.events] == sorted(e.item for e in timeline.events)
    end_of_first = max(e.at for e in timeline.events if e.item == 0 and e.at)
    start_of_second = min(e.at for e in timeline.events if e.item == 1 and e.at)
    assert start_of_second == pytest.approx(end_of_first + 2.0, abs=1e-5)


def test_interleaved_items_overlap() -> None:
    one, two = load_capture(QUEUE_CALL), load_capture(KNOWN_CLIENT)
    timeline = build_timeline([one, two], interleave=1.0)
    items = [e.item for e in timeline.events]
    first_of_second = items.index(1)
    assert 0 in items[first_of_second:], "the first call is still going on"
    times = [e.at for e in timeline.events if e.at is not None]
    assert times == sorted(times)


def test_copies_are_rekeyed_with_the_given_function() -> None:
    def rekey(messages: object, copy: int) -> tuple[list[AmiMessage], dict[str, str]]:
        out = []
        for m in messages:  # type: ignore[attr-defined]
            out.append(
                AmiMessage(
                    [
                        (k, f"{v}-{copy}" if k in ("Uniqueid", "Linkedid") else v)
                        for k, v in m.headers
                    ],
                    m.offset,
                )
            )
        return out, {"1795797192.0": f"1795797192.0-{copy}"}

    timeline = build_timeline([load_capture(QUEUE_CALL)], copies=3, interleave=0.5, rekey=rekey)
    ids = {e.message.get("Linkedid") for e in timeline.events} - {None}
    assert {"1795797192.0", "1795797192.0-1", "1795797192.0-2"} <= ids
    agi = [s for scripts in timeline.agi.values() for s in scripts]
    assert sorted(s.uniqueid for s in agi) == ["1795797192.0", "1795797192.0-1", "1795797192.0-2"]


def test_copies_use_the_rekey_helper_and_their_agi_matches_their_events() -> None:
    timeline = build_timeline([load_capture(KNOWN_CLIENT)], copies=2, interleave=1.0)
    [(first_at, [original]), (second_at, [copy])] = sorted(
        (i, list(s)) for i, s in timeline.agi.items()
    )
    assert original.uniqueid == "1795797202.2" and copy.uniqueid != original.uniqueid
    for index, script in ((first_at, original), (second_at, copy)):
        trigger = timeline.events[index].message
        assert trigger["Uniqueid"] == script.uniqueid and trigger["Channel"] == script.channel
        assert trigger["CallerIDNum"] == script.get("agi_callerid")
    assert copy.get("agi_callerid") != original.get("agi_callerid")
    assert copy.variables == {"CRM_DID": "911234567"}


def test_missing_or_empty_capture_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="capture file not found"):
        load_capture(tmp_path / "nothing.raw")
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"Asterisk Call Manager/9.0.0\r\n")
    with pytest.raises(UserError, match="no AMI event"):
        load_capture(empty)


# ----------------------------------------------------------------- FastAGI


def test_agi_log_gives_environment_and_what_asterisk_answered() -> None:
    [script] = parse_agi_log(KNOWN_CLIENT / "agi.log")
    assert script.uniqueid == "1795797202.2"
    assert script.get("agi_callerid") == "600333444"
    assert script.get("agi_accountcode") == ""
    assert script.variables == {"CRM_DID": "911234567"}


def test_split_args_like_asterisk() -> None:
    assert split_args('SET VARIABLE CALLERID(name) "Marta Ruiz (Ferreteria)"') == [
        "SET",
        "VARIABLE",
        "CALLERID(name)",
        "Marta Ruiz (Ferreteria)",
    ]
    assert split_args(r'SET VARIABLE X "O\"Brien \\ x"') == ["SET", "VARIABLE", "X", 'O"Brien \\ x']
    assert split_args('SET VARIABLE E ""') == ["SET", "VARIABLE", "E", ""]


class TinyAgiServer:
    """A FastAGI server reduced to a script of commands; records what it got."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.env: dict[str, str] = {}
        self.replies: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (line := (await reader.readline()).decode().rstrip("\n")) != "":
            key, _, value = line.partition(": ")
            self.env[key] = value
        for command in self.commands:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            self.replies.append((await reader.readline()).decode().rstrip("\n"))
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_fastagi_client_answers_like_asterisk() -> None:
    [script] = parse_agi_log(KNOWN_CLIENT / "agi.log")
    server = TinyAgiServer(
        [
            "GET VARIABLE CRM_DID",
            "GET FULL VARIABLE ${CALLERID(num)}",
            "GET VARIABLE CRM_NOT_SET",
            'SET VARIABLE CALLERID(name) "Marta \\"La Jefa\\" Ruiz"',
            "SET VARIABLE CRM_LOOKUP ok",
            "GET VARIABLE CRM_LOOKUP",
            "VERBOSE hello 1",
            "FLY AWAY",
        ]
    )
    port = await server.start()
    try:
        outcome = await play_agi("127.0.0.1", port, script)
    finally:
        await server.close()
    assert outcome.error is None
    assert server.env["agi_request"] == f"agi://127.0.0.1:{port}/crm_lookup"
    assert server.env["agi_uniqueid"] == "1795797202.2" and server.env["agi_dnid"] == "911234567"
    assert server.replies == [
        "200 result=1 (911234567)",
        "200 result=1 (600333444)",
        "200 result=0",
        "200 result=1",
        "200 result=1",
        "200 result=1 (ok)",
        "200 result=1",
        "510 Invalid or unknown command",
    ]
    assert outcome.variables == {"CALLERID(name)": 'Marta "La Jefa" Ruiz', "CRM_LOOKUP": "ok"}


@pytest.mark.asyncio
async def test_fastagi_client_reports_an_unreachable_server() -> None:
    script = AgiScript((("agi_uniqueid", "1.1"), ("agi_channel", "SIP/trunk-1")))
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    outcome = await play_agi("127.0.0.1", port, script, timeout=1.0)
    assert outcome.error and "cannot connect" in outcome.error


@pytest.mark.asyncio
async def test_simulator_plays_the_capture_agi_at_the_right_event() -> None:
    server = TinyAgiServer(["GET VARIABLE CRM_DID", "SET VARIABLE CRM_LOOKUP ok"])
    port = await server.start()
    simulator = Simulator(
        build_timeline([load_capture(KNOWN_CLIENT)]),
        SimulatorOptions(secret="pw", speed=None, agi=("127.0.0.1", port)),
    )
    await simulator.start()
    try:
        client = await Client.connect(simulator.port)
        await client.login(events="on")
        await simulator.wait_done(10)
        await client.close()
    finally:
        await simulator.close()
        await server.close()
    [outcome] = simulator.agi_outcomes
    assert outcome.error is None and outcome.variables == {"CRM_LOOKUP": "ok"}
    assert outcome.caller == "600333444" and server.replies[0] == "200 result=1 (911234567)"
    [(index, _)] = simulator.timeline.agi.items()
    trigger = simulator.timeline.events[index].message
    assert trigger["Event"] == "Newexten" and trigger["Application"] == "AGI"


# ----------------------------------------------------------------- CLI


def _start_simulator(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [AMI_DAEMON, "simulate", *args, "--port", "0", "--secret", "pw"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), (
        process.stderr.read() if process.stderr else ""
    )
    return process, int(line.rsplit(":", 1)[1])


def test_record_cli_writes_a_capture_that_calls_reads(tmp_path: Path) -> None:
    simulator, port = _start_simulator(str(QUEUE_CALL), "--fast", "--drop-after", "70")
    try:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            f"pbx:\n  name: lab\n  region: ES\n  trunk_channels: ['^SIP/trunk-']\n"
            f"ami:\n  port: {port}\n  username: ami-daemon\n  secret: pw\n"
            "  reconnect_max_delay: 0.5\n",
            encoding="utf-8",
        )
        out = tmp_path / "recorded.raw"
        recorder = subprocess.Popen(
            [AMI_DAEMON, "record", "--out", str(out), "--config", str(cfg)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert simulator.stdout is not None
        assert simulator.stdout.readline().startswith("replay finished")
        recorder.send_signal(signal.SIGTERM)
        _, err = recorder.communicate(timeout=10)
        assert recorder.returncode == 0, err
        assert "2 session(s)" in err
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.communicate(timeout=10)
    data = out.read_bytes()
    assert data.startswith(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n")
    assert data.count(b"Asterisk Call Manager/9.0.0\r\n") == 2  # banner again after the drop
    recorded = [
        m.headers for m in read_capture(out) if "Event" in m and m["Event"] != "FullyBooted"
    ]
    original = [e.message.headers for e in build_timeline([load_capture(QUEUE_CALL)]).events]
    assert recorded == original
    calls = subprocess.run(
        [AMI_DAEMON, "calls", str(out), "--config", str(LAB_CONFIG)],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = subprocess.run(
        [AMI_DAEMON, "calls", str(QUEUE_CALL / "ami.raw"), "--config", str(LAB_CONFIG)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert calls.stdout == expected.stdout and json.loads(calls.stdout)["status"] == "answered"


def test_record_cli_refused_login_is_one_clear_line(tmp_path: Path) -> None:
    simulator, port = _start_simulator(str(QUEUE_CALL), "--fast")
    try:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"ami:\n  port: {port}\n  secret: wrong\n", encoding="utf-8")
        result = subprocess.run(
            [AMI_DAEMON, "record", "--out", str(tmp_path / "x.raw"), "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.communicate(timeout=10)
    assert result.returncode == 2
    assert "refused the login of user 'ami-daemon': Authentication failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    env = {**os.environ, "AMI_DAEMON_CONFIG": str(tmp_path / "none.yaml")}
    env.pop("AMI_DAEMON_CONFIG")
    for args, message in [
        ([str(tmp_path / "missing.raw")], "capture file not found"),
        ([str(QUEUE_CALL), "--agi", "http://x"], "expected agi://HOST:PORT"),
        ([str(QUEUE_CALL), "--speed", "0"], "--speed must be greater than 0"),
    ]:
        result = subprocess.run(
            [AMI_DAEMON, "simulate", *args, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
