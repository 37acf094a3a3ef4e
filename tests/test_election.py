"""The writer lease: one active CRM writer per PBX name, on a PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from ami_daemon.election import WriterLease
from tests.pgproxy import PgProxy


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(lease: WriterLease) -> AsyncIterator[WriterLease]:
    task = asyncio.create_task(lease.run())
    try:
        yield lease
    finally:
        await lease.stop()
        await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_one_active_per_pbx_and_the_other_takes_over_at_a_clean_stop(dsn: str) -> None:
    changes: list[tuple[str, bool]] = []
    a = WriterLease(dsn, "main", retry=0.1, on_change=lambda v: changes.append(("a", v)))
    b = WriterLease(dsn, "main", retry=0.1, on_change=lambda v: changes.append(("b", v)))
    async with running(a):
        await wait_until(lambda: a.active, 5, "a active")
        async with running(b):
            await asyncio.sleep(0.3)  # several retries of b: still standing by
            assert a.active and not b.active
            await a.stop()
            await wait_until(lambda: b.active, 5, "b takes over")
            assert not a.active
    assert changes == [("a", True), ("a", False), ("b", True), ("b", False)]


@pytest.mark.asyncio
async def test_different_pbx_names_are_both_active(dsn: str) -> None:
    main = WriterLease(dsn, "main", retry=0.1)
    branch = WriterLease(dsn, "branch", retry=0.1)
    async with running(main), running(branch):
        await wait_until(lambda: main.active and branch.active, 5, "both active")


@pytest.mark.asyncio
async def test_lease_connection_cut_the_standby_takes_over_and_the_old_one_stands_by(
    dsn: str,
) -> None:
    """The active daemon's lock connection dies (network cut, killed backend):
    PostgreSQL drops its session lock at once, the standby takes it within its
    retry period, and the old holder, once it notices, stands by — it does
    not get the lock back while the new one holds it."""
    async with PgProxy() as proxy:
        via_proxy = proxy.dsn_for(dsn) + "?application_name=lease-a"
        a = WriterLease(via_proxy, "main", retry=0.2, connect_timeout=1.0)
        b = WriterLease(dsn, "main", retry=0.2)
        async with running(a):
            await wait_until(lambda: a.active, 5, "a active")
            async with running(b):
                await asyncio.sleep(0.5)
                assert not b.active
                assert proxy.abort_matching(b"lease-a") == 1
                takeover = await wait_until(lambda: b.active, 5, "b takes over")
                await wait_until(lambda: not a.active, 5, "a notices and stands by")
                await asyncio.sleep(0.5)  # a retries meanwhile
                assert b.active and not a.active
    assert takeover < 2.0


@pytest.mark.asyncio
async def test_database_away_means_standby_then_active_again(dsn: str) -> None:
    async with PgProxy() as proxy:
        lease = WriterLease(proxy.dsn_for(dsn), "main", retry=0.1, connect_timeout=1.0)
        async with running(lease):
            await wait_until(lambda: lease.active, 5, "active")
            await proxy.cut()
            await wait_until(lambda: not lease.active, 5, "standby while the database is away")
            await proxy.restore()
            await wait_until(lambda: lease.active, 5, "active again")
