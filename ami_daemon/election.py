"""Active/standby: of the daemons tracking one PBX, one writes the CRM.

Each daemon holds (or tries to take) a PostgreSQL session-level advisory lock
named after ``pbx.name`` on a connection of its own.  The holder is the active
writer.  PostgreSQL releases the lock as soon as the holder's connection ends
— the process died, was killed, or lost the network — and the standby, which
tries again every ``retry`` seconds, takes over within seconds.  The standby
tracks the same calls and spools them meanwhile; on takeover it writes those
the active one had not recorded.  Nothing is written twice during the switch:
both daemons write through the same ``crm.calls`` unique key, so a call
recorded by one is "already recorded" for the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from ami_daemon.crm.db import redact

log = logging.getLogger(__name__)

#: First key of the two-key advisory lock; the second is hashtext(pbx name).
WRITER_LOCK_SPACE = 7352


class WriterLease:
    """Whether this daemon is the PBX's active CRM writer, kept up to date."""

    def __init__(
        self,
        dsn: str,
        pbx: str,
        *,
        retry: float = 2.0,
        connect_timeout: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.pbx = pbx
        self.retry = retry
        self.connect_timeout = connect_timeout
        self._on_change = on_change
        self._conn: asyncpg.Connection | None = None
        self.active = False
        self._stopped = asyncio.Event()

    def _set(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        if active:
            log.info("active CRM writer for PBX %r (writer lock taken)", self.pbx)
        else:
            log.warning("no longer the active CRM writer for PBX %r: standing by", self.pbx)
        if self._on_change is not None:
            self._on_change(active)

    async def _try_acquire(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        got = await self._conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", WRITER_LOCK_SPACE, self.pbx
        )
        if got:
            self._set(True)
        elif not self.active:
            log.debug("another daemon writes for PBX %r; standing by", self.pbx)

    async def _check(self) -> None:
        assert self._conn is not None
        await asyncio.wait_for(self._conn.fetchval("SELECT 1"), self.connect_timeout)

    async def run(self) -> None:
        """Take the lock when free, notice when it is lost; until :meth:`stop`."""
        reported = False
        while not self._stopped.is_set():
            try:
                if self.active:
                    await self._check()
                else:
                    await self._try_acquire()
                reported = False
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not reported:
                    log.warning(
                        "writer lock for PBX %r: database %s unreachable (%s)",
                        self.pbx,
                        redact(self.dsn),
                        exc,
                    )
                    reported = True
                self._set(False)
                await self._drop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.retry)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def stop(self) -> None:
        """Release the lock (the standby takes over at once)."""
        self._stopped.set()
        if self.active:
            log.info("releasing the CRM writer lock for PBX %r", self.pbx)
            self.active = False
            if self._on_change is not None:
                self._on_change(False)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
