"""Schema migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from ami_daemon.crm import migrate

EXPECTED_TABLES = {
    "users",
    "contacts",
    "companies",
    "leads",
    "deals",
    "phones",
    "calls",
    "activities",
}


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'crm'"
    )
    return {r["table_name"] for r in rows}


@pytest.mark.asyncio
async def test_migrate_from_empty_creates_every_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.available()]
        assert await tables(conn) >= EXPECTED_TABLES
        for table in EXPECTED_TABLES:
            columns = {
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'crm' AND table_name = $1",
                    table,
                )
            }
            assert {"created_at", "updated_at"} <= columns, table
        assert await migrate.pending(conn) == []
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_rerun_is_a_no_op(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
        before = await conn.fetch("SELECT version, applied_at FROM crm_meta.migrations")
        assert await migrate.migrate(conn) == []
        after = await conn.fetch("SELECT version, applied_at FROM crm_meta.migrations")
        assert before == after
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_two_concurrent_runs_apply_each_migration_once(dsn: str) -> None:
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        results = await asyncio.gather(migrate.migrate(first), migrate.migrate(second))
        versions = sorted(m.version for r in results for m in r)
        assert versions == [m.version for m in migrate.available()]
        count = await first.fetchval("SELECT count(*) FROM crm_meta.migrations")
        assert count == len(migrate.available())
    finally:
        await first.close()
        await second.close()


def test_two_concurrent_migrate_processes(dsn: str) -> None:
    command = [sys.executable, "-m", "ami_daemon.cli", "migrate", "--dsn", dsn]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = "".join(o[0] for o in outputs)
    assert stdout.count("applied 0001_") == 1
    assert "nothing to apply" in stdout


@pytest.mark.asyncio
async def test_constraints_one_call_per_pbx_and_call_id_and_no_duplicate_phone(
    conn: asyncpg.Connection,
) -> None:
    insert_call = (
        "INSERT INTO crm.calls (pbx, call_id, direction, status, crm_outcome, crm_reason) "
        "VALUES ($1, $2, 'inbound', 'answered', 'lead_created', 'test')"
    )
    await conn.execute(insert_call, "main", "1.1")
    await conn.execute(insert_call, "other", "1.1")  # another PBX may reuse Linkedids
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert_call, "main", "1.1")
    await conn.execute("INSERT INTO crm.phones VALUES ('contact', 1, '+34600111222')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO crm.phones VALUES ('contact', 1, '+34600111222')")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO crm.phones VALUES ('contact', 2, '600111222')")


@pytest.mark.asyncio
async def test_lookup_indexes_exist(conn: asyncpg.Connection) -> None:
    """The indexes the lookups need (test_lookup checks the planner uses the phone index)."""
    indexes = {
        r["indexname"]
        for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'crm'")
    }
    assert {"phones_e164_idx", "calls_external_idx", "activities_entity_idx"} <= indexes


def test_status_reports_pending_then_up_to_date(dsn: str) -> None:
    command = [sys.executable, "-m", "ami_daemon.cli", "migrate", "--dsn", dsn]
    status = subprocess.run([*command, "--status"], capture_output=True, text=True, check=False)
    assert status.returncode == 1 and "pending 0001_" in status.stdout
    subprocess.run(command, check=True, capture_output=True)
    status = subprocess.run([*command, "--status"], capture_output=True, text=True, check=False)
    assert status.returncode == 0 and "up to date" in status.stdout


def test_unreachable_database_is_one_clear_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ami_daemon.cli",
            "migrate",
            "--dsn",
            "postgresql://nobody:pw@127.0.0.1:9/none",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot connect to postgresql://nobody:***@127.0.0.1:9/none" in result.stderr
