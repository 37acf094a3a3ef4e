"""What the decision needs to know from the CRM about one call's outside number.

The owner of the number comes from the one shared lookup
(:func:`~ami_daemon.crm.lookup.lookup_phone`, DESIGN's precedence); the open
callback tasks of the number are read only when a CRM item owns it, because
tasks are only ever opened for existing clients (B3).
"""

from __future__ import annotations

import asyncpg

from ami_daemon.crm.lookup import lookup_phone
from ami_daemon.rules.actions import CallFacts

__all__ = ["read_facts"]

_OPEN_TASKS = """
SELECT id FROM crm.tasks WHERE e164 = $1 AND status = 'open' ORDER BY id
"""


async def read_facts(conn: asyncpg.Connection, e164: str | None) -> CallFacts:
    """The owner of ``e164`` and its open callback tasks (empty facts without a number)."""
    if e164 is None:
        return CallFacts(owner=None)
    owner = await lookup_phone(conn, e164)
    if owner.item is None or owner.employee is not None:
        return CallFacts(owner=owner)
    rows = await conn.fetch(_OPEN_TASKS, e164)
    return CallFacts(owner=owner, open_task_ids=tuple(int(r["id"]) for r in rows))
