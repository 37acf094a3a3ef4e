"""Who a phone number belongs to: the one lookup the AGI and the rules share.

Given an E.164 number, one indexed query over ``crm.phones`` finds every owner:
an employee whose personal number it is (a mobile in their profile: calls from
it are never CRM material, FEATURES S7), and the CRM items that carry it.
When several items share a number (a switchboard number on a company and on
its contacts, a lead created before the contact existed), DESIGN fixes the
precedence: contact, then company, then an unconverted lead; within a type the
most recently updated.  The item comes with its responsible employee (and that
employee's extension, which the AGI dials first) and its open deal, if any.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Employee:
    """A PBX user: ``extension`` is what the dialplan dials (``201``)."""

    id: int
    name: str
    extension: str
    active: bool


@dataclass(frozen=True)
class CrmItem:
    """A contact, company or lead that owns a number."""

    entity_type: str  # "contact" | "company" | "lead"
    entity_id: int
    name: str
    responsible: Employee | None
    open_deal_id: int | None
    company_id: int | None = None

    @property
    def ref(self) -> str:
        """``contact:17``: how the AGI contract names an item (``CRM_ENTITY``)."""
        return f"{self.entity_type}:{self.entity_id}"


@dataclass(frozen=True)
class PhoneOwner:
    """Everything the CRM knows about one number."""

    e164: str
    employee: Employee | None
    item: CrmItem | None

    @property
    def known(self) -> bool:
        return self.item is not None


# One round trip: the phones index finds the owners, each joined to its table;
# ordered by DESIGN's precedence so that the first row of each kind wins.
LOOKUP_SQL = """
WITH owners AS (
    SELECT entity_type, entity_id FROM crm.phones WHERE e164 = $1
)
SELECT o.kind, o.id, o.name, o.updated_at, o.company_id, o.open_deal_id,
       u.id AS u_id, u.name AS u_name, u.extension AS u_ext, u.active AS u_active
FROM (
    SELECT 0 AS rank, 'user' AS kind, e.id, e.name, e.updated_at, e.id AS responsible_id,
           NULL::bigint AS company_id, NULL::bigint AS open_deal_id
    FROM owners JOIN crm.users e ON owners.entity_type = 'user' AND e.id = owners.entity_id
    UNION ALL
    SELECT 1, 'contact', c.id, c.name, c.updated_at, c.responsible_id, c.company_id,
           (SELECT d.id FROM crm.deals d WHERE d.contact_id = c.id AND NOT d.closed
            ORDER BY d.updated_at DESC, d.id DESC LIMIT 1)
    FROM owners JOIN crm.contacts c ON owners.entity_type = 'contact' AND c.id = owners.entity_id
    UNION ALL
    SELECT 2, 'company', c.id, c.name, c.updated_at, c.responsible_id, c.id,
           (SELECT d.id FROM crm.deals d WHERE d.company_id = c.id AND NOT d.closed
            ORDER BY d.updated_at DESC, d.id DESC LIMIT 1)
    FROM owners JOIN crm.companies c ON owners.entity_type = 'company' AND c.id = owners.entity_id
    UNION ALL
    SELECT 3, 'lead', l.id, l.title, l.updated_at, l.responsible_id, l.company_id, NULL
    FROM owners JOIN crm.leads l ON owners.entity_type = 'lead' AND l.id = owners.entity_id
    WHERE l.status IN ('new', 'in_progress')
) o
LEFT JOIN crm.users u ON u.id = o.responsible_id
ORDER BY o.rank, o.updated_at DESC, o.id DESC
"""


async def lookup_phone(conn: asyncpg.Connection, e164: str) -> PhoneOwner:
    """The employee and the CRM item that own ``e164`` (either may be None)."""
    rows = await conn.fetch(LOOKUP_SQL, e164)
    employee: Employee | None = None
    item: CrmItem | None = None
    for row in rows:
        responsible = None
        if row["u_id"] is not None:
            responsible = Employee(row["u_id"], row["u_name"], row["u_ext"], row["u_active"])
        if row["kind"] == "user":
            if employee is None:
                employee = responsible
        elif item is None:
            item = CrmItem(
                entity_type=row["kind"],
                entity_id=row["id"],
                name=row["name"],
                responsible=responsible,
                open_deal_id=row["open_deal_id"],
                company_id=row["company_id"],
            )
    return PhoneOwner(e164, employee, item)


async def employee_by_extension(conn: asyncpg.Connection, extension: str) -> Employee | None:
    """The employee whose PBX extension is ``extension``."""
    row = await conn.fetchrow(
        "SELECT id, name, extension, active FROM crm.users WHERE extension = $1", extension
    )
    return Employee(row["id"], row["name"], row["extension"], row["active"]) if row else None
