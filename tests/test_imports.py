"""CSV imports: good, duplicate and bad rows; re-import changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from ami_daemon.crm.imports import Kind, RowError, import_csv
from ami_daemon.crm.lookup import lookup_phone

USERS = """extension,name,email,active,phones
201,Ana García,ana@example.com,yes,699 000 201
202,Bruno Díaz,,yes,+34 699-000-202;0034699000212
203,Carla Ruiz,,no,
20x,Bad Extension,,yes,
204,Bad Phone,,yes,hello
202,Bruno Again,,yes,
"""
COMPANIES = """id,name,phones,responsible,source
acme,Acme SL,(91) 123 45 67,202,
globex,Globex,,999,
,,600000000,,
"""
CONTACTS = """id,name,phones,responsible,company,email
c1,Juan Pérez,600 111 222,201,acme,juan@example.com
c2,María López,600333444|0034600333445,202,Acme SL,
,No Id Person,600555666,,,
c4,Unknown Company,600777888,,initech,
c5,Anonymous Phone,anonymous,,,
"""


async def db_counts(conn: asyncpg.Connection) -> tuple[int, ...]:
    return tuple(
        [
            await conn.fetchval(f"SELECT count(*) FROM crm.{t}")
            for t in ("users", "companies", "contacts", "phones")
        ]
    )


@pytest.mark.asyncio
async def test_users_good_duplicate_and_bad_rows(conn: asyncpg.Connection) -> None:
    report = await import_csv(conn, Kind.USERS, USERS, "ES")
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    assert report.rejected == [
        (5, "extension '20x' is not digits"),
        (6, "phone 'hello': not a phone number"),
        (7, "duplicate of line 3"),
    ]
    owner = await lookup_phone(conn, "+34699000212")
    assert owner.employee is not None and owner.employee.extension == "202"
    carla = await conn.fetchrow("SELECT active FROM crm.users WHERE extension = '203'")
    assert carla["active"] is False


@pytest.mark.asyncio
async def test_reimporting_the_same_files_changes_nothing(conn: asyncpg.Connection) -> None:
    for kind, text in ((Kind.USERS, USERS), (Kind.COMPANIES, COMPANIES), (Kind.CONTACTS, CONTACTS)):
        await import_csv(conn, kind, text, "ES")
    before = await db_counts(conn)
    stamps = await conn.fetch("SELECT id, updated_at FROM crm.contacts ORDER BY id")
    for kind, text in ((Kind.USERS, USERS), (Kind.COMPANIES, COMPANIES), (Kind.CONTACTS, CONTACTS)):
        report = await import_csv(conn, kind, text, "ES")
        assert report.created == 0 and report.updated == 0, (kind, report)
    assert await db_counts(conn) == before
    assert await conn.fetch("SELECT id, updated_at FROM crm.contacts ORDER BY id") == stamps


@pytest.mark.asyncio
async def test_companies_and_contacts_link_responsible_and_company(
    conn: asyncpg.Connection,
) -> None:
    await import_csv(conn, Kind.USERS, USERS, "ES")
    companies = await import_csv(conn, Kind.COMPANIES, COMPANIES, "ES")
    assert companies.created == 1
    assert companies.rejected == [
        (3, "responsible '999' is no employee's extension (import users first)"),
        (4, "name is empty"),
    ]
    contacts = await import_csv(conn, Kind.CONTACTS, CONTACTS, "ES")
    assert contacts.created == 3
    assert [line for line, _ in contacts.rejected] == [5, 6]
    assert "company 'initech' not found" in contacts.rejected[0][1]
    assert "anonymous" in contacts.rejected[1][1]
    owner = await lookup_phone(conn, "+34600333445")
    assert owner.item is not None and owner.item.name == "María López"
    assert owner.item.responsible is not None and owner.item.responsible.extension == "202"
    acme = await conn.fetchval("SELECT id FROM crm.companies WHERE external_id = 'acme'")
    assert owner.item.company_id == acme


@pytest.mark.asyncio
async def test_changed_row_updates_in_place(conn: asyncpg.Connection) -> None:
    await import_csv(conn, Kind.USERS, USERS, "ES")
    await import_csv(conn, Kind.COMPANIES, COMPANIES, "ES")
    await import_csv(conn, Kind.CONTACTS, CONTACTS, "ES")
    changed = "id,name,phones,responsible\nc1,Juan Pérez Gil,600 111 222;600 111 223,202\n"
    report = await import_csv(conn, Kind.CONTACTS, changed, "ES")
    assert (report.created, report.updated) == (0, 1)
    owner = await lookup_phone(conn, "+34600111223")
    assert owner.item is not None and owner.item.name == "Juan Pérez Gil"
    assert owner.item.responsible is not None and owner.item.responsible.extension == "202"


@pytest.mark.asyncio
async def test_unknown_or_missing_columns_stop_the_file(conn: asyncpg.Connection) -> None:
    with pytest.raises(RowError, match=r"missing column.*extension.*unknown column.*phnoes"):
        await import_csv(conn, Kind.USERS, "name,phnoes\nAna,1\n", "ES")


def test_cli_reports_rejected_lines_and_exit_status(migrated_dsn: str, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text(USERS, encoding="utf-8")
    env = {**os.environ, "AMI_DAEMON_DSN": migrated_dsn}
    command = [
        sys.executable,
        "-m",
        "ami_daemon.cli",
        "import",
        "users",
        str(users),
        "--config",
        str(tmp_path / "none.yaml"),
    ]
    (tmp_path / "none.yaml").write_text("pbx: {region: ES}\n")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert f"{users}:5: rejected: extension '20x' is not digits" in result.stderr
    assert "3 created, 0 updated, 0 unchanged, 3 rejected" in result.stdout
    good = tmp_path / "good.csv"
    good.write_text("extension,name\n205,Eva\n", encoding="utf-8")
    command[5] = str(good)
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "1 created" in result.stdout
