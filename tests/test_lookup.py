"""The one phone lookup: owners of a number, with DESIGN's precedence."""

from __future__ import annotations

import asyncpg
import pytest

from ami_daemon.crm.lookup import LOOKUP_SQL, employee_by_extension, lookup_phone

NUMBER = "+34600111222"


async def user(conn: asyncpg.Connection, ext: str, active: bool = True) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO crm.users (name, extension, active) VALUES ($1, $2, $3) RETURNING id",
            f"Agent {ext}",
            ext,
            active,
        )
    )


async def phone(conn: asyncpg.Connection, entity: str, entity_id: int, e164: str = NUMBER) -> None:
    await conn.execute(
        "INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES ($1,$2,$3)",
        entity,
        entity_id,
        e164,
    )


async def touch(conn: asyncpg.Connection, table: str, entity_id: int) -> None:
    await conn.execute(
        f"UPDATE crm.{table} SET updated_at = now() + interval '1 minute' WHERE id = $1", entity_id
    )


@pytest.mark.asyncio
async def test_unknown_number(conn: asyncpg.Connection) -> None:
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is None and owner.employee is None and not owner.known


@pytest.mark.asyncio
async def test_precedence_contact_then_company_then_unconverted_lead(
    conn: asyncpg.Connection,
) -> None:
    u201, u202, u203 = await user(conn, "201"), await user(conn, "202"), await user(conn, "203")
    lead = await conn.fetchval(
        "INSERT INTO crm.leads (title, responsible_id) VALUES ('Call from 600111222', $1) "
        "RETURNING id",
        u203,
    )
    await phone(conn, "lead", lead)
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is not None and owner.item.ref == f"lead:{lead}"

    company = await conn.fetchval(
        "INSERT INTO crm.companies (name, responsible_id) VALUES ('Acme', $1) RETURNING id", u202
    )
    await phone(conn, "company", company)
    await touch(conn, "leads", lead)  # a fresher lead still loses to a company
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is not None and owner.item.ref == f"company:{company}"
    assert owner.item.responsible is not None and owner.item.responsible.extension == "202"

    contact = await conn.fetchval(
        "INSERT INTO crm.contacts (name, company_id, responsible_id) VALUES ('Ana', $1, $2) "
        "RETURNING id",
        company,
        u201,
    )
    await phone(conn, "contact", contact)
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is not None
    assert (owner.item.ref, owner.item.name, owner.item.company_id) == (
        f"contact:{contact}",
        "Ana",
        company,
    )
    assert owner.item.responsible is not None and owner.item.responsible.extension == "201"


@pytest.mark.asyncio
async def test_within_a_type_the_most_recently_updated_wins(conn: asyncpg.Connection) -> None:
    first = await conn.fetchval("INSERT INTO crm.contacts (name) VALUES ('Old') RETURNING id")
    second = await conn.fetchval("INSERT INTO crm.contacts (name) VALUES ('New') RETURNING id")
    await phone(conn, "contact", first)
    await phone(conn, "contact", second)
    await touch(conn, "contacts", first)
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is not None and owner.item.entity_id == first


@pytest.mark.asyncio
async def test_converted_and_junk_leads_are_not_owners(conn: asyncpg.Connection) -> None:
    for status in ("converted", "junk"):
        lead = await conn.fetchval(
            "INSERT INTO crm.leads (title, status) VALUES ('x', $1) RETURNING id", status
        )
        await phone(conn, "lead", lead)
    assert (await lookup_phone(conn, NUMBER)).item is None


@pytest.mark.asyncio
async def test_employee_number_and_client_number_are_both_reported(
    conn: asyncpg.Connection,
) -> None:
    u201 = await user(conn, "201", active=False)
    await phone(conn, "user", u201)
    contact = await conn.fetchval("INSERT INTO crm.contacts (name) VALUES ('Ana') RETURNING id")
    await phone(conn, "contact", contact)
    owner = await lookup_phone(conn, NUMBER)
    assert owner.employee is not None
    assert (owner.employee.extension, owner.employee.active) == ("201", False)
    assert owner.item is not None and owner.item.responsible is None


@pytest.mark.asyncio
async def test_open_deal_of_the_item(conn: asyncpg.Connection) -> None:
    contact = await conn.fetchval("INSERT INTO crm.contacts (name) VALUES ('Ana') RETURNING id")
    await phone(conn, "contact", contact)
    await conn.execute(
        "INSERT INTO crm.deals (title, stage, contact_id, closed) VALUES ('old', 'won', $1, true)",
        contact,
    )
    deal = await conn.fetchval(
        "INSERT INTO crm.deals (title, stage, contact_id) VALUES ('open', 'new', $1) RETURNING id",
        contact,
    )
    owner = await lookup_phone(conn, NUMBER)
    assert owner.item is not None and owner.item.open_deal_id == deal


@pytest.mark.asyncio
async def test_lookup_uses_the_phone_index(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO crm.phones SELECT 'contact', g, '+3460' || lpad(g::text, 7, '0') "
        "FROM generate_series(1, 20000) g"
    )
    await conn.execute("ANALYZE crm.phones")
    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + LOOKUP_SQL, NUMBER))
    assert "phones_e164_idx" in plan or "phones_pkey" in plan
    assert "Seq Scan on phones" not in plan


@pytest.mark.asyncio
async def test_employee_by_extension(conn: asyncpg.Connection) -> None:
    await user(conn, "202")
    found = await employee_by_extension(conn, "202")
    assert found is not None and found.name == "Agent 202"
    assert await employee_by_extension(conn, "299") is None
