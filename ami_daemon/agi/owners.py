"""Where the lookup's CRM answers come from: a pool for FastAGI, one connection for classic.

:class:`PooledOwners` serves the FastAGI server: a small asyncpg pool (the
Python client, not PostgreSQL, is the bottleneck, so 2–4 connections are
enough; STACK.md), a short TTL cache (a caller who redials, a queue that runs
the lookup for every member leg), and *fail fast*: after the database failed
— refused, unreachable, or no connection could be opened within the budget —
every lookup for ``fail_fast_seconds`` fails at once instead of costing each
ringing call the full budget; then one call tries again.

:class:`OneShotOwners` serves the classic script: one connection whose
connect is bounded by the caller's budget, closed (terminated) at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ami_daemon.crm.lookup import LOOKUP_SQL, PhoneOwner, lookup_phone

log = logging.getLogger("ami_daemon.agi")

#: Entries the cache keeps at most (a few MB); the oldest go first.
CACHE_MAX = 50_000

#: Errors that mean "the database is not there", as opposed to a bad query.
_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: the lookup is one read-only statement and changes no session
    state, so asyncpg's default reset (``RESET ALL; UNLISTEN *…``, one more round
    trip per lookup) is skipped."""


class DatabaseDown(Exception):
    """The database failed recently: not tried again until the fail-fast window ends."""


class PooledOwners:
    """Pool + TTL cache + fail-fast; no I/O until the first lookup."""

    def __init__(
        self,
        dsn: str | None,
        *,
        pool_max: int = 4,
        connect_timeout: float = 5.0,
        cache_ttl: float = 5.0,
        fail_fast_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._ttl = cache_ttl
        self._fail_fast = fail_fast_seconds
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, PhoneOwner]] = {}
        self._down_until = 0.0
        self._down_reason = ""
        self.hits = 0
        self.misses = 0

    async def find(self, e164: str) -> PhoneOwner:
        now = self._clock()
        cached = self._cache.get(e164)
        if cached is not None and cached[0] > now:
            self.hits += 1
            return cached[1]
        if now < self._down_until:
            raise DatabaseDown(
                f"database failed {self._down_reason}; retrying in {self._down_until - now:.1f} s"
            )
        self.misses += 1
        owner = await self._query(e164)
        if self._ttl > 0:
            self._remember(e164, owner, self._clock() + self._ttl)
        return owner

    async def _query(self, e164: str) -> PhoneOwner:
        if self._dsn is None:
            raise DatabaseDown("database.dsn is not configured")
        pool = await self._get_pool()
        connected = False
        try:
            async with pool.acquire() as conn:
                connected = True
                return await lookup_phone(conn, e164)
        except asyncio.CancelledError:
            # The budget ran out.  While opening the first connection that means
            # an unreachable server (packets dropped): fail fast like a refusal.
            if not connected and pool.get_size() == 0:
                self._mark_down("to connect within the time budget")
            raise
        except _DOWN_ERRORS as exc:
            self._mark_down(f"({type(exc).__name__}: {exc})")
            raise

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,  # connect on demand: a database down at start is no error
                        max_size=self._pool_max,
                        timeout=self._connect_timeout,
                        max_inactive_connection_lifetime=60.0,
                        reset=_keep_session,
                    )
        return self._pool

    def _mark_down(self, reason: str) -> None:
        self._down_until = self._clock() + self._fail_fast
        self._down_reason = reason
        log.warning("CRM database failed %s: lookups fail fast for %.1f s", reason, self._fail_fast)

    def _remember(self, e164: str, owner: PhoneOwner, expires: float) -> None:
        cache = self._cache
        cache.pop(e164, None)
        if len(cache) >= CACHE_MAX:
            now = self._clock()
            for key in [k for k, (exp, _) in cache.items() if exp <= now]:
                del cache[key]
            while len(cache) >= CACHE_MAX:
                del cache[next(iter(cache))]
        cache[e164] = (expires, owner)

    async def warm_up(self) -> None:
        """Open one connection and prepare the lookup (optional; errors are logged)."""
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                await conn.prepare(LOOKUP_SQL)
        except Exception as exc:
            log.warning("CRM database not reachable at start: %s", exc)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=2.0)
            except (TimeoutError, Exception):
                pool.terminate()


class OneShotOwners:
    """One connection per process (the classic script); ``close`` never blocks."""

    def __init__(self, dsn: str | None, connect_timeout: float, **connect_kwargs: Any) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout
        self._kwargs = connect_kwargs
        self._conn: asyncpg.Connection | None = None

    async def find(self, e164: str) -> PhoneOwner:
        if self._dsn is None:
            raise DatabaseDown("database.dsn is not configured")
        if self._conn is None:
            self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout, **self._kwargs)
        return await lookup_phone(self._conn, e164)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
