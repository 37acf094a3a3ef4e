"""Exactly once, all or nothing: the apply step under repeats, races and a cut connection.

The database connection that gets cut goes through a small TCP proxy owned by
the test (never the shared PostgreSQL server itself): the test holds a lock
that makes the apply wait after it wrote the call's row, cuts the proxy, and
checks that PostgreSQL kept nothing of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from ami_daemon.crm import manual
from ami_daemon.crm.apply import ApplyError, apply_decision
from ami_daemon.crm.db import DatabaseUnavailable
from ami_daemon.crm.facts import read_facts
from ami_daemon.pipeline import CallProcessor, Recorded, process_call
from ami_daemon.rules.decide import decide
from tests.crm_world import KNOWN_202, ZONE, call, counts, missed, seed_lab, shipped_rules


@pytest_asyncio.fixture
async def lab(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_lab(conn)
    return conn


class Proxy:
    """A byte pump between test clients and PostgreSQL that can be cut at once."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.dsn = dsn
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self.transports: list[asyncio.BaseTransport] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        parts = urlsplit(self.dsn)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.socket_dir and self.socket_dir.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(
                f"{self.socket_dir}/.s.PGSQL.{self.port}"
            )
        else:
            up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self.transports += [writer.transport, up_w.transport]
        self.tasks += [
            asyncio.create_task(self._pump(reader, up_w)),
            asyncio.create_task(self._pump(up_r, writer)),
        ]

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        """Drop every connection now, like a network failure."""
        if self.server is not None:
            self.server.close()
        for transport in self.transports:
            transport.abort()  # type: ignore[attr-defined]
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.asyncio
async def test_same_call_twice_writes_once(lab: asyncpg.Connection) -> None:
    rules = shipped_rules()
    first = await process_call(lab, call(), rules, ZONE)
    after_first = await counts(lab)
    second = await process_call(lab, call(), rules, ZONE)
    assert (first.recorded, second.recorded) == (Recorded.WRITTEN, Recorded.ALREADY_RECORDED)
    assert second.previous_outcome == "lead_created"
    assert await counts(lab) == after_first


@pytest.mark.asyncio
async def test_apply_decision_alone_is_idempotent_by_the_calls_key(lab: asyncpg.Connection) -> None:
    """The same decision applied twice (e.g. from a spool after a crash) writes once."""
    summary = missed(external_number=KNOWN_202)
    decision = decide(summary, await read_facts(lab, KNOWN_202), shipped_rules(), ZONE)
    made = await apply_decision(lab, summary, decision)
    assert made is not None and any(m.startswith("callback task") for m in made)
    snapshot = await counts(lab)
    assert await apply_decision(lab, summary, decision) is None
    assert await counts(lab) == snapshot


@pytest.mark.asyncio
async def test_two_concurrent_applies_of_one_call_make_one_set_of_rows(
    lab: asyncpg.Connection, migrated_dsn: str
) -> None:
    rules = shipped_rules()
    conns = [await asyncpg.connect(migrated_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(process_call(c, call(), rules, ZONE) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(r.recorded.value for r in results) == [
        "already_recorded",
        "already_recorded",
        "already_recorded",
        "written",
    ]
    n = await counts(lab)
    assert (n["calls"], n["leads"], n["activities"]) == (1, 1, 1)


@pytest.mark.asyncio
async def test_two_calls_of_one_new_number_at_once_make_one_lead(
    lab: asyncpg.Connection, migrated_dsn: str
) -> None:
    """The per-number lock: the second call sees the first one's lead and logs on it."""
    rules = shipped_rules()
    a, b = await asyncpg.connect(migrated_dsn), await asyncpg.connect(migrated_dsn)
    try:
        done = await asyncio.gather(
            process_call(a, call(call_id="x1"), rules, ZONE),
            process_call(b, call(call_id="x2"), rules, ZONE),
        )
    finally:
        await a.close()
        await b.close()
    assert sorted(d.decision.outcome.value for d in done) == ["activity_logged", "lead_created"]
    n = await counts(lab)
    assert (n["calls"], n["leads"], n["activities"]) == (2, 1, 2)


async def _wait_until_blocked(conn: asyncpg.Connection, pid: int) -> None:
    for _ in range(250):
        waiting = await conn.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting == "Lock":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


async def _wait_until_gone(conn: asyncpg.Connection, pid: int) -> None:
    """PostgreSQL notices the lost client, rolls back, and ends the backend."""
    for _ in range(250):
        if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


@pytest.mark.asyncio
async def test_connection_cut_mid_apply_names_the_call_and_writes_nothing(
    lab: asyncpg.Connection, migrated_dsn: str
) -> None:
    """The cut lands after the call's row and its activity were inserted (uncommitted): the
    callback answered by 202 must close the open task, whose row the test keeps locked."""
    await process_call(lab, missed(call_id="m", external_number=KNOWN_202), shipped_rules(), ZONE)
    before = await counts(lab)
    callback = call(call_id="back", external_number=KNOWN_202, answered_by="202", final_agent="202")
    proxy = Proxy(migrated_dsn)
    victim = await asyncpg.connect(await proxy.start())
    pid = victim.get_server_pid()
    blocker = await asyncpg.connect(migrated_dsn)
    await blocker.execute("BEGIN")
    await blocker.execute("SELECT id FROM crm.tasks FOR UPDATE")
    job = asyncio.create_task(process_call(victim, callback, shipped_rules(), ZONE))
    try:
        await _wait_until_blocked(lab, pid)
        assert await blocker.fetchval("SELECT count(*) FROM crm.calls") == before["calls"]
        await proxy.cut()
        with pytest.raises(DatabaseUnavailable, match=r"call main/back: .*connection"):
            await job
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
        victim.terminate()
        await proxy.cut()
    await _wait_until_gone(lab, pid)
    assert await counts(lab) == before
    assert [t.status for t in await manual.list_tasks(lab)] == ["open"]
    # the daemon retries the same call later: written once, the task closed by it
    assert (await process_call(lab, callback, shipped_rules(), ZONE)).recorded is Recorded.WRITTEN
    (task,) = await manual.list_tasks(lab)
    assert (task.status, task.closed_by) == ("closed", "main/back")


@pytest.mark.asyncio
async def test_database_refusal_is_an_apply_error_naming_the_call(lab: asyncpg.Connection) -> None:
    await lab.execute("DROP TABLE crm.tasks")
    with pytest.raises(ApplyError, match=r"call main/1795797192\.0: the database refused"):
        await process_call(lab, missed(external_number=KNOWN_202), shipped_rules(), ZONE)
    assert await lab.fetchval("SELECT count(*) FROM crm.calls") == 0


@pytest.mark.asyncio
async def test_processor_with_pool_is_what_the_daemon_runs(
    lab: asyncpg.Connection, migrated_dsn: str
) -> None:
    rules = shipped_rules()
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)
    try:
        processor = CallProcessor(pool, lambda: rules, ZONE)
        preview = await processor.preview(call())
        assert preview.recorded is Recorded.DRY_RUN
        assert await lab.fetchval("SELECT count(*) FROM crm.calls") == 0
        done = await asyncio.gather(
            *(processor.process(replace(call(), call_id=f"c{i}")) for i in range(5))
        )
    finally:
        await pool.close()
    assert [d.decision.outcome.value for d in done].count("lead_created") == 1
    assert await lab.fetchval("SELECT count(*) FROM crm.calls") == 5


@pytest.mark.asyncio
async def test_cancelled_statement_is_transient_not_a_refusal(
    lab: asyncpg.Connection, migrated_dsn: str
) -> None:
    """A statement cancelled by the server (SQLSTATE class 57) is worth retrying: it raises
    DatabaseUnavailable (the writer keeps the call) rather than ApplyError."""
    victim = await asyncpg.connect(migrated_dsn)
    blocker = await asyncpg.connect(migrated_dsn)
    await blocker.execute("BEGIN; LOCK TABLE crm.leads IN ACCESS EXCLUSIVE MODE")
    try:
        await victim.execute("SET statement_timeout = '200ms'")
        with pytest.raises(DatabaseUnavailable, match=r"call main/1795797192\.0: .*try again"):
            await process_call(victim, call(), shipped_rules(), ZONE)
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
        await victim.close()
    assert await lab.fetchval("SELECT count(*) FROM crm.calls") == 0
