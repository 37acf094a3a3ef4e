"""Importing employees, companies and contacts from CSV for a real start.

Columns (header row required, any order, names case-insensitive; unknown
columns are an error so that a typo does not silently drop data):

- users: ``extension`` (required), ``name`` (required), ``email``,
  ``active`` (yes/no, default yes), ``phones`` (personal numbers: mobiles whose
  calls are never CRM material).
- companies: ``id`` (your own key, recommended), ``name`` (required),
  ``email``, ``phones``, ``responsible`` (an employee's extension), ``source``.
- contacts: the same as companies plus ``company`` (a company's ``id`` from
  its import, or its exact name).

``phones`` holds one or more numbers in any spelling separated by ``;`` or
``|``; each is stored in E.164.  A row is matched to an existing record by
extension (users), by ``id``, or else by the same name sharing a phone (or
e-mail), so re-importing the same file changes nothing.  Phones are only
added, never removed.  A bad row is reported with its line and reason and the
other rows are still imported.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ami_daemon import phones


class Kind(str, enum.Enum):
    USERS = "users"
    COMPANIES = "companies"
    CONTACTS = "contacts"


COLUMNS: dict[Kind, tuple[set[str], set[str]]] = {
    # kind: (required, optional)
    Kind.USERS: ({"extension", "name"}, {"email", "active", "phones"}),
    Kind.COMPANIES: ({"name"}, {"id", "email", "phones", "responsible", "source"}),
    Kind.CONTACTS: ({"name"}, {"id", "email", "phones", "responsible", "source", "company"}),
}
_TRUE = {"yes", "y", "true", "1", "si", "sí", "on", ""}
_FALSE = {"no", "n", "false", "0", "off"}


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected line with its reason."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.rejected)} rejected"
        )


class RowError(ValueError):
    """A row that cannot be imported; the message is the reason."""


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]
    phones: tuple[str, ...]


def parse_csv(text: str, kind: Kind, region: str, report: ImportReport) -> list[Row]:
    """Read and check the rows; bad rows go to ``report.rejected``."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise RowError("the file is empty (a header row is required)")
    header = [(name or "").strip().lower() for name in reader.fieldnames]
    required, optional = COLUMNS[kind]
    unknown = [h for h in header if h not in required | optional]
    missing = sorted(required - set(header))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        allowed = ", ".join(sorted(required | optional))
        raise RowError(f"line 1: {'; '.join(parts)} (columns for {kind.value}: {allowed})")
    rows: list[Row] = []
    for record in reader:
        line = reader.line_num
        values = {
            (k or "").strip().lower(): (v or "").strip()
            for k, v in record.items()
            if k is not None and not isinstance(v, list)
        }
        if None in record:
            report.rejected.append((line, "more fields than columns in the header"))
            continue
        if not any(values.values()):
            continue
        try:
            rows.append(_check_row(line, values, kind, region))
        except RowError as exc:
            report.rejected.append((line, str(exc)))
    return rows


def _check_row(line: int, values: dict[str, str], kind: Kind, region: str) -> Row:
    required, _ = COLUMNS[kind]
    for column in sorted(required):
        if not values.get(column):
            raise RowError(f"{column} is empty")
    if kind is Kind.USERS:
        if not values["extension"].isdigit():
            raise RowError(f"extension {values['extension']!r} is not digits")
        active = values.get("active", "").lower()
        if active not in _TRUE | _FALSE:
            raise RowError(f"active must be yes or no, got {values['active']!r}")
    numbers = []
    for raw in values.get("phones", "").replace("|", ";").split(";"):
        if not raw.strip():
            continue
        try:
            numbers.append(phones.normalize(raw, region))
        except phones.NotANumber as exc:
            raise RowError(f"phone {raw.strip()!r}: {exc.reason.value}") from None
    return Row(line, values, tuple(dict.fromkeys(numbers)))


def _row_key(kind: Kind, row: Row) -> str:
    if kind is Kind.USERS:
        return row.values["extension"]
    if row.values.get("id"):
        return "id:" + row.values["id"]
    return "name:" + row.values["name"].lower() + "|" + ",".join(sorted(row.phones))


async def import_rows(
    conn: asyncpg.Connection, kind: Kind, rows: Sequence[Row], report: ImportReport
) -> None:
    """Write the checked rows, each in its own transaction."""
    seen: dict[str, int] = {}
    for row in rows:
        key = _row_key(kind, row)
        if key in seen:
            report.rejected.append((row.line, f"duplicate of line {seen[key]}"))
            continue
        seen[key] = row.line
        try:
            async with conn.transaction():
                if kind is Kind.USERS:
                    outcome = await _upsert_user(conn, row)
                else:
                    outcome = await _upsert_party(conn, kind, row)
        except RowError as exc:
            report.rejected.append((row.line, str(exc)))
            continue
        if outcome == "created":
            report.created += 1
        elif outcome == "updated":
            report.updated += 1
        else:
            report.unchanged += 1


async def _add_phones(
    conn: asyncpg.Connection, entity: str, entity_id: int, numbers: Sequence[str]
) -> int:
    added = 0
    for e164 in numbers:
        result = await conn.execute(
            "INSERT INTO crm.phones (entity_type, entity_id, e164) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            entity,
            entity_id,
            e164,
        )
        added += result.endswith(" 1")
    return added


async def _upsert_user(conn: asyncpg.Connection, row: Row) -> str:
    v = row.values
    active = v.get("active", "").lower() not in _FALSE
    email = v.get("email") or None
    existing = await conn.fetchrow(
        "SELECT id, name, email, active FROM crm.users WHERE extension = $1", v["extension"]
    )
    if existing is None:
        user_id = await conn.fetchval(
            "INSERT INTO crm.users (name, extension, email, active) VALUES ($1,$2,$3,$4) "
            "RETURNING id",
            v["name"],
            v["extension"],
            email,
            active,
        )
        await _add_phones(conn, "user", user_id, row.phones)
        return "created"
    changed = (existing["name"], existing["email"], existing["active"]) != (
        v["name"],
        email,
        active,
    )
    if changed:
        await conn.execute(
            "UPDATE crm.users SET name = $2, email = $3, active = $4 WHERE id = $1",
            existing["id"],
            v["name"],
            email,
            active,
        )
    added = await _add_phones(conn, "user", existing["id"], row.phones)
    return "updated" if changed or added else "unchanged"


async def _responsible_id(conn: asyncpg.Connection, extension: str) -> int | None:
    if not extension:
        return None
    user_id = await conn.fetchval("SELECT id FROM crm.users WHERE extension = $1", extension)
    if user_id is None:
        raise RowError(f"responsible {extension!r} is no employee's extension (import users first)")
    return int(user_id)


async def _company_id(conn: asyncpg.Connection, ref: str) -> int | None:
    if not ref:
        return None
    rows = await conn.fetch(
        "SELECT id FROM crm.companies WHERE external_id = $1 "
        "UNION SELECT id FROM crm.companies WHERE external_id IS DISTINCT FROM $1 AND name = $1",
        ref,
    )
    if not rows:
        raise RowError(f"company {ref!r} not found (import companies first)")
    if len(rows) > 1:
        raise RowError(f"company {ref!r} matches several companies; use its id")
    return int(rows[0]["id"])


async def _find_party(conn: asyncpg.Connection, table: str, entity: str, row: Row) -> Any:
    v = row.values
    columns = "id, name, email, source, responsible_id, external_id"
    if table == "contacts":
        columns += ", company_id"
    if v.get("id"):
        return await conn.fetchrow(
            f"SELECT {columns} FROM crm.{table} WHERE external_id = $1", v["id"]
        )
    if row.phones:
        return await conn.fetchrow(
            f"SELECT {columns} FROM crm.{table} t WHERE t.name = $1 AND t.external_id IS NULL "
            "AND EXISTS (SELECT 1 FROM crm.phones p WHERE p.entity_type = $2 "
            "AND p.entity_id = t.id AND p.e164 = ANY($3::text[])) ORDER BY id LIMIT 1",
            v["name"],
            entity,
            list(row.phones),
        )
    return await conn.fetchrow(
        f"SELECT {columns} FROM crm.{table} WHERE name = $1 AND external_id IS NULL "
        "AND email IS NOT DISTINCT FROM $2 ORDER BY id LIMIT 1",
        v["name"],
        v.get("email") or None,
    )


async def _upsert_party(conn: asyncpg.Connection, kind: Kind, row: Row) -> str:
    table = kind.value
    entity = "company" if kind is Kind.COMPANIES else "contact"
    v = row.values
    wanted: dict[str, Any] = {
        "name": v["name"],
        "email": v.get("email") or None,
        "source": (v.get("source") or "CALL").upper(),
        "responsible_id": await _responsible_id(conn, v.get("responsible", "")),
        "external_id": v.get("id") or None,
    }
    if kind is Kind.CONTACTS:
        wanted["company_id"] = await _company_id(conn, v.get("company", ""))
    existing = await _find_party(conn, table, entity, row)
    if existing is None:
        names = ", ".join(wanted)
        params = ", ".join(f"${i}" for i in range(1, len(wanted) + 1))
        new_id = await conn.fetchval(
            f"INSERT INTO crm.{table} ({names}) VALUES ({params}) RETURNING id",
            *wanted.values(),
        )
        await _add_phones(conn, entity, new_id, row.phones)
        return "created"
    changes = {k: val for k, val in wanted.items() if existing[k] != val}
    if changes:
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
        await conn.execute(
            f"UPDATE crm.{table} SET {sets} WHERE id = $1", existing["id"], *changes.values()
        )
    added = await _add_phones(conn, entity, existing["id"], row.phones)
    return "updated" if changes or added else "unchanged"


async def import_csv(conn: asyncpg.Connection, kind: Kind, text: str, region: str) -> ImportReport:
    """Parse and import one CSV document; the report says what happened."""
    report = ImportReport()
    rows = parse_csv(text, kind, region, report)
    await import_rows(conn, kind, rows, report)
    report.rejected.sort()
    return report
