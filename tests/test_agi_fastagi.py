"""FastAGI ``crm_lookup`` over real TCP, with the environment Asterisk 20 really sent.

Each test starts the server as the daemon embeds it (:class:`CrmLookupServer`
on a free port) against a fresh PostgreSQL database seeded with a few users
and contacts, and plays Asterisk's side of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon import config
from ami_daemon.agi.crm_server import CrmLookupServer, RuleSetRouting, RulesRouting
from ami_daemon.agi.server import FastAgiServer
from ami_daemon.rules.loader import load_rules
from tests.test_agi_helpers import (
    EVIL_NAME,
    LONG_NAME,
    AsteriskSide,
    asterisk_parse_args,
    play_asterisk,
    replace_env,
    seed_crm,
    trace_sessions,
    write_config,
)

SESSIONS = {s.name: s for s in trace_sessions()}
BASE_ENV = SESSIONS["01_inbound_queue_201_caller_hangup"].env_lines


def env_for(caller: str, name: str = "unknown", pres: str = "0") -> list[str]:
    lines = replace_env(BASE_ENV, "agi_callerid", caller)
    lines = replace_env(lines, "agi_callingpres", pres)
    return replace_env(lines, "agi_calleridname", name)


@pytest_asyncio.fixture
async def crm_dsn(migrated_dsn: str) -> str:
    await seed_crm(migrated_dsn)
    return migrated_dsn


@contextlib.asynccontextmanager
async def running(folder: Path, dsn: str, **agi: Any) -> AsyncIterator[CrmLookupServer]:
    server = CrmLookupServer(config.load(write_config(folder, dsn, **agi)), port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def call(
    server: CrmLookupServer, env: list[str], did: str | None = "911234567"
) -> AsteriskSide:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        return await play_asterisk(reader, writer, env, {"CRM_DID": did} if did else {})
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dsn_at(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


@pytest.mark.asyncio
async def test_recorded_sessions_get_the_contract_variables(crm_dsn: str, tmp_path: Path) -> None:
    expected = {
        "02_inbound_known_client_direct_202_agent_hangup": {
            "CRM_KNOWN": "1",
            "CRM_SKIP": "0",
            "CRM_ENTITY": "contact:17",
            "CRM_RESPONSIBLE_EXT": "202",
            "CALLERID(name)": "Marta Ruiz",
            "CRM_ROUTE_TO": "202",
            "CRM_LOOKUP": "ok",
        },
        "13_inbound_from_employee_mobile_queue_201": {
            "CRM_KNOWN": "0",
            "CRM_SKIP": "1",
            "CRM_LOOKUP": "ok",
        },
    }
    unknown = {"CRM_KNOWN": "0", "CRM_SKIP": "0", "CRM_LOOKUP": "ok"}
    async with running(tmp_path, crm_dsn) as server:
        for name, session in SESSIONS.items():
            did = re.search(r"\((.*)\)", session.answers["GET VARIABLE CRM_DID"]).group(1)  # type: ignore[union-attr]
            side = await call(server, session.env_lines, did)
            assert side.commands[0] == "GET VARIABLE CRM_DID", name
            assert side.set_vars == expected.get(name, unknown), name
            assert side.closed_by_script


@pytest.mark.asyncio
async def test_routing_off_for_the_number_keeps_the_client_known(
    crm_dsn: str, tmp_path: Path
) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("600333444"), did="911234500")
    assert side.set_vars["CRM_ENTITY"] == "contact:17"
    assert side.set_vars["CRM_RESPONSIBLE_EXT"] == "202"
    assert "CRM_ROUTE_TO" not in side.set_vars


@pytest.mark.asyncio
async def test_inactive_responsible_and_a_hostile_crm_name(crm_dsn: str, tmp_path: Path) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("+34 600 555 666"))
    assert side.set_vars["CRM_RESPONSIBLE_EXT"] == "203"
    assert "CRM_ROUTE_TO" not in side.set_vars
    assert side.set_vars["CALLERID(name)"] == EVIL_NAME.replace("\n", " ")[:40]
    # every command was one line that Asterisk splits into exactly 3 or 4 arguments
    assert all(len(asterisk_parse_args(c)) in (3, 4) for c in side.commands)
    assert not any(c.startswith("EXEC") or c.startswith("200") for c in side.commands)


@pytest.mark.asyncio
async def test_exception_number_is_skipped_and_still_routed(crm_dsn: str, tmp_path: Path) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("0034910000000"))
    assert side.set_vars["CRM_SKIP"] == "1"
    assert side.set_vars["CRM_KNOWN"] == "1"
    assert side.set_vars["CRM_ROUTE_TO"] == "202"


@pytest.mark.asyncio
async def test_anonymous_and_withheld_callers_are_ok_and_unknown(
    crm_dsn: str, tmp_path: Path
) -> None:
    async with running(tmp_path, crm_dsn) as server:
        anonymous = await call(server, env_for("anonymous"))
        withheld = await call(server, env_for("600333444", pres="32"))
    for side in (anonymous, withheld):
        assert side.set_vars == {"CRM_KNOWN": "0", "CRM_SKIP": "0", "CRM_LOOKUP": "ok"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "caller_name",
    [
        'Ruiz "El Jefe"',
        "Evil\nagi_callerid: 600111222\nagi_dnid: 911234500",
        "semi;colon\\back",
        "Иван Петров Añejo",
    ],
)
async def test_caller_names_from_the_trunk_cannot_change_the_lookup(
    crm_dsn: str, tmp_path: Path, caller_name: str
) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("600333444", name=caller_name), did=None)
    assert side.set_vars["CRM_ENTITY"] == "contact:17"
    assert side.set_vars["CRM_ROUTE_TO"] == "202"  # the real agi_dnid, routing on


@pytest.mark.asyncio
async def test_a_blank_line_in_the_caller_name_fails_open(crm_dsn: str, tmp_path: Path) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("600111222", name="x\n\n200 result=1 (911234500)"))
    assert side.set_vars == {"CRM_LOOKUP": "error"}


@pytest.mark.asyncio
async def test_non_ascii_name_is_cut_to_40_characters(crm_dsn: str, tmp_path: Path) -> None:
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env_for("600777888"))
    assert side.set_vars["CALLERID(name)"] == LONG_NAME[:40]


@pytest.mark.asyncio
async def test_second_lookup_of_a_number_comes_from_the_cache(crm_dsn: str, tmp_path: Path) -> None:
    async with running(tmp_path, crm_dsn) as server:
        first = await call(server, env_for("600333444"))
        second = await call(server, env_for("600333444"))
        assert (server.owners.misses, server.owners.hits) == (1, 1)
    assert first.set_vars == second.set_vars


class CountingListener:
    """A 'database' that accepts TCP connections and then never answers, or closes them."""

    def __init__(self, close_at_once: bool) -> None:
        self.close_at_once = close_at_once
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> CountingListener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.close_at_once:
            writer.transport.abort()
        else:
            self._writers.append(writer)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.transport.abort()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_database_down_fails_open_then_fails_fast(tmp_path: Path) -> None:
    async with (
        CountingListener(close_at_once=True) as db,
        running(tmp_path, dsn_at(db.port), fail_fast_seconds=60) as server,
    ):
        first = await call(server, env_for("600333444"))
        tried = db.connections
        second = await call(server, env_for("600555666"))
        assert tried >= 1
        assert db.connections == tried  # no new attempt inside the fail-fast window
    assert first.set_vars == {"CRM_LOOKUP": "error"}
    assert second.set_vars == {"CRM_LOOKUP": "error"}


@pytest.mark.asyncio
async def test_nothing_listening_is_an_error_not_a_crash(tmp_path: Path) -> None:
    async with running(tmp_path, dsn_at(free_port())) as server:
        side = await call(server, env_for("600333444"))
    assert side.set_vars == {"CRM_LOOKUP": "error"}


@pytest.mark.asyncio
async def test_unreachable_database_times_out_then_fails_fast(tmp_path: Path) -> None:
    async with (
        CountingListener(close_at_once=False) as db,
        running(tmp_path, dsn_at(db.port), time_budget_ms=200) as server,
    ):
        first = await call(server, env_for("600333444"))
        tried = db.connections
        second = await call(server, env_for("600555666"))
        assert db.connections == tried
    assert first.set_vars == {"CRM_LOOKUP": "timeout"}
    assert second.set_vars == {"CRM_LOOKUP": "error"}


@pytest.mark.asyncio
async def test_lookup_slower_than_the_budget_times_out(crm_dsn: str, tmp_path: Path) -> None:
    locker = await asyncpg.connect(crm_dsn)
    try:
        async with running(tmp_path, crm_dsn, time_budget_ms=200) as server:
            async with locker.transaction():
                await locker.execute("LOCK TABLE crm.phones IN ACCESS EXCLUSIVE MODE")
                slow = await call(server, env_for("600333444"))
            after = await call(server, env_for("600333444"))
    finally:
        await locker.close()
    assert slow.set_vars == {"CRM_LOOKUP": "timeout"}
    assert after.set_vars["CRM_ENTITY"] == "contact:17"  # a query timeout is no outage


@pytest.mark.asyncio
async def test_peer_outside_the_allow_list_is_closed_unanswered(
    crm_dsn: str, tmp_path: Path
) -> None:
    async with running(tmp_path, crm_dsn, allowed_peers=["10.0.0.0/8"]) as server:
        side = await call(server, env_for("600333444"))
        assert server.fastagi.refused == 1
    assert side.commands == [] and side.set_vars == {}
    assert side.closed_by_script


@pytest.mark.asyncio
async def test_unknown_script_is_closed(crm_dsn: str, tmp_path: Path) -> None:
    env = replace_env(BASE_ENV, "agi_network_script", "other_script")
    async with running(tmp_path, crm_dsn) as server:
        side = await call(server, env)
    assert side.commands == [] and side.closed_by_script


@pytest.mark.asyncio
async def test_bad_clients_do_not_stall_other_sessions(crm_dsn: str, tmp_path: Path) -> None:
    """Port scans, early closes and a client hanging mid-environment (panoramisk's spin)."""
    async with running(tmp_path, crm_dsn) as server:
        # a port scan / health check: connect and leave
        for _ in range(5):
            _, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.close()
        # half an environment, then close (the panoramisk spin)
        for cut in (1, 7, 23):
            _, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(("\n".join(BASE_ENV[:cut]) + "\nagi_chan").encode())
            await w.drain()
            w.close()
        # an environment that never ends: closed at the size bound
        flood_reader, flood = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            flood.write(b"agi_network: yes\n" * 3000)
            await flood.drain()
            answer = await asyncio.wait_for(flood_reader.read(), 5)
        except ConnectionResetError:  # closed with our bytes unread: a reset
            answer = b""
        assert answer == b""  # closed, nothing sent
        flood.close()
        # half an environment, and stay connected
        _, hanging = await asyncio.open_connection("127.0.0.1", server.port)
        hanging.write(("\n".join(BASE_ENV[:10]) + "\n").encode())
        await hanging.drain()
        # good calls still get answers, concurrently
        sides = await asyncio.gather(*(call(server, env_for("600333444")) for _ in range(10)))
        assert all(s.set_vars.get("CRM_ENTITY") == "contact:17" for s in sides)
        hanging.close()
        for _ in range(100):  # every bad session ends by itself
            if server.fastagi.active_sessions == 0:
                break
            await asyncio.sleep(0.02)
        assert server.fastagi.active_sessions == 0
        assert server.fastagi.served == 10


def test_rules_routing_reloads_edited_rules_and_keeps_the_last_good(tmp_path: Path) -> None:
    now = [0.0]
    (tmp_path / "00.yaml").write_text("defaults:\n  route_to_responsible: yes\n")
    routing = RulesRouting(tmp_path, "ES", check_every=2.0, clock=lambda: now[0])
    assert routing().default_route is True
    (tmp_path / "00.yaml").write_text("defaults:\n  route_to_responsible: no\n# longer\n")
    assert routing().default_route is True  # not checked again yet
    now[0] = 5.0
    assert routing().default_route is False
    (tmp_path / "00.yaml").write_text("defaults: [broken\n")
    now[0] = 10.0
    assert routing().default_route is False


def test_allow_list_reads_ipv4_mapped_ipv6_and_rejects_garbage() -> None:
    server = FastAgiServer({}, allowed_peers=["127.0.0.1/32", "10.0.0.0/8", "::1/128"])
    assert server.allowed("127.0.0.1") and server.allowed("::1")
    assert server.allowed("::ffff:10.1.2.3")
    assert not server.allowed("192.168.1.10") and not server.allowed("fe80::1%eth0")
    assert not server.allowed("not-an-address")


def test_rule_set_routing_follows_the_daemons_reloads(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "00.yaml").write_text("defaults:\n  route_to_responsible: yes\n")
    (tmp_path / "b" / "00.yaml").write_text("defaults:\n  route_to_responsible: no\n")
    current: list[Any] = [load_rules(tmp_path / "a", "ES")]
    routing = RuleSetRouting(lambda: current[0])
    assert routing().default_route is True
    current[0] = load_rules(tmp_path / "b", "ES")  # what a SIGHUP reload does
    assert routing().default_route is False

    def not_loaded() -> Any:
        raise RuntimeError("rules not loaded yet")

    assert RuleSetRouting(not_loaded)().default_route is False


class SwitchableProxy:
    """A TCP proxy to PostgreSQL that can refuse (accept and close) instead of forwarding."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refuse = True
        self.attempts = 0
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SwitchableProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        if self.refuse:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            t = asyncio.ensure_future(task)
            self._pipes.add(t)
            t.add_done_callback(self._pipes.discard)

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._pipes):
            task.cancel()
        if self._pipes:
            await asyncio.wait(set(self._pipes), timeout=2)
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_lookups_resume_after_the_fail_fast_window(crm_dsn: str, tmp_path: Path) -> None:
    pg_port = int(re.search(r":(\d+)/", crm_dsn).group(1))  # type: ignore[union-attr]
    name = crm_dsn.rsplit("/", 1)[1]
    async with SwitchableProxy(pg_port) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
        async with running(tmp_path, dsn, fail_fast_seconds=0.5, cache_ttl=0) as server:
            down = await call(server, env_for("600333444"))
            tried = proxy.attempts
            proxy.refuse = False  # the database is back...
            still_failing_fast = await call(server, env_for("600333444"))
            assert proxy.attempts == tried  # ...but not tried inside the window
            await asyncio.sleep(0.6)
            back = await call(server, env_for("600333444"))
    assert down.set_vars == {"CRM_LOOKUP": "error"}
    assert still_failing_fast.set_vars == {"CRM_LOOKUP": "error"}
    assert back.set_vars["CRM_ENTITY"] == "contact:17"


@pytest.mark.asyncio
async def test_a_bug_inside_the_lookup_still_lets_the_call_through(
    crm_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_routing() -> Any:
        raise RuntimeError("a bug")

    server = CrmLookupServer(
        config.load(write_config(tmp_path, crm_dsn)), routing=broken_routing, port=0
    )
    await server.start()
    try:
        side = await call(server, env_for("600333444"))
    finally:
        await server.close()
    assert side.set_vars == {"CRM_LOOKUP": "error"}
    assert "RuntimeError: a bug" in caplog.text
