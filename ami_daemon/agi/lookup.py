"""The I/O half of ``crm_lookup``: one dialogue with Asterisk, shared by both entry points.

:func:`crm_lookup` asks Asterisk for ``CRM_DID``, looks the caller up within
the time budget, decides (:mod:`.decision`) and sets the variables.  It fails
open (STYLE 7): whatever goes wrong before the answer — a cut-short
environment, a database that is down, a lookup slower than the budget, a bug —
is logged and only ``CRM_LOOKUP=error|timeout`` is set, so the dialplan takes
its default route and the caller never waits more than the budget.

The budget is enforced without waiting for the cancelled work:
``asyncio.wait_for`` would wait for a cancelled query or connect to unwind,
which with a database that stopped answering takes as long as the network
decides.  :class:`TimeBudget` answers at the deadline and lets the straggler
finish in the background (kept referenced, its failure logged).

Where the CRM answer comes from differs: the FastAGI server uses a pooled,
cached source that fails fast after a database failure (:mod:`.owners`); the
classic script opens one connection per call.  Both implement
:class:`OwnerSource`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ami_daemon.agi import variables as v
from ami_daemon.agi.decision import Decision, build_request, caller_number, decide, failed
from ami_daemon.agi.protocol import AgiEnvironment
from ami_daemon.agi.routing import RoutingTable
from ami_daemon.agi.variables import LookupStatus
from ami_daemon.crm.lookup import PhoneOwner

log = logging.getLogger("ami_daemon.agi")

T = TypeVar("T")


class AgiChannel(Protocol):
    """The two AGI commands the lookup uses, over FastAGI or classic stdin/stdout."""

    async def get_variable(self, name: str) -> str | None: ...

    async def set_variable(self, name: str, value: str) -> None: ...


class OwnerSource(Protocol):
    """Who owns a number, from the CRM (raises on any failure)."""

    async def find(self, e164: str) -> PhoneOwner: ...


class AgiHangup(Exception):
    """The channel hung up or the AGI connection ended: stop talking to Asterisk."""


class TimeBudget:
    """Run a coroutine with a deadline, answering on time whatever it does."""

    def __init__(self) -> None:
        self._stragglers: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, T], seconds: float) -> tuple[asyncio.Task[T], float]:
        """Start the work now; its deadline is ``seconds`` from now (see :meth:`finish`)."""
        return asyncio.ensure_future(coro), asyncio.get_running_loop().time() + seconds

    async def finish(self, started: tuple[asyncio.Task[T], float]) -> T:
        """The result, or TimeoutError at the deadline (the work goes on alone)."""
        task, deadline = started
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            done, _ = await asyncio.wait({task}, timeout=max(remaining, 0.0))
        except asyncio.CancelledError:
            self.abandon(started)
            raise
        if not done:
            self.abandon(started)
            raise TimeoutError("no answer within the time budget")
        return task.result()

    async def run(self, coro: Coroutine[Any, Any, T], seconds: float) -> T:
        """:meth:`start` and :meth:`finish` in one."""
        return await self.finish(self.start(coro, seconds))

    def abandon(self, started: tuple[asyncio.Task[Any], float]) -> None:
        """Cancel the work and let it unwind in the background (kept referenced)."""
        task = started[0]
        if not task.done():
            task.cancel()
            self._keep(task)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("abandoned lookup ended with %r", task.exception())

    @property
    def pending(self) -> int:
        return len(self._stragglers)

    async def drain(self, timeout: float = 1.0) -> None:
        """Give abandoned work ``timeout`` seconds to unwind (at shutdown)."""
        if self._stragglers:
            await asyncio.wait(set(self._stragglers), timeout=timeout)


@dataclass(frozen=True)
class LookupSettings:
    """What the dialogue needs from the config."""

    region: str = "ES"
    trunk_channels: Sequence[re.Pattern[str]] = ()
    time_budget: float = 0.3  # seconds


async def crm_lookup(
    channel: AgiChannel,
    env: AgiEnvironment,
    owners: OwnerSource,
    routing: Callable[[], RoutingTable],
    settings: LookupSettings,
    budget: TimeBudget,
) -> Decision:
    """Run the whole lookup on one call and return what was set.

    Raises only :class:`AgiHangup` (or the channel's own connection errors)
    when Asterisk is gone, since nobody is left to read a variable then.
    """
    decision = await _decide(channel, env, owners, routing, settings, budget)
    for name, value in decision.variables():
        await channel.set_variable(name, value)
    # one line per call at DEBUG (metrics count them); failures always show
    level = logging.DEBUG if decision.status is LookupStatus.OK else logging.WARNING
    if log.isEnabledFor(level):
        status, reason = decision.status.value, decision.reason
        # the trunk channel's Uniqueid is the call's Linkedid: the daemon's call id
        call = {"call_id": env.uniqueid}
        log.log(level, "crm_lookup %s: %s (%s)", env.uniqueid, status, reason, extra=call)
    return decision


async def _decide(
    channel: AgiChannel,
    env: AgiEnvironment,
    owners: OwnerSource,
    routing: Callable[[], RoutingTable],
    settings: LookupSettings,
    budget: TimeBudget,
) -> Decision:
    if not env.complete:
        detail = "; ".join(env.anomalies[:3]) or "ended before agi_threadid"
        return failed(LookupStatus.ERROR, f"AGI environment cut short or out of order: {detail}")
    # The caller number is in the environment: start the query now, so that it runs
    # while Asterisk answers GET VARIABLE CRM_DID (one round trip less to wait for).
    try:
        caller, _ = caller_number(env, settings.region)
    except Exception as exc:  # a bug reading the number: fail open all the same
        return failed(LookupStatus.ERROR, f"{type(exc).__name__}: {exc}")
    pending = budget.start(owners.find(caller), settings.time_budget) if caller else None
    try:
        crm_did = await channel.get_variable(v.CRM_DID)
    except BaseException:
        if pending is not None:
            budget.abandon(pending)
        raise
    try:
        request = build_request(env, crm_did, settings.region, settings.trunk_channels)
        flags = routing().flags(request.did_e164, request.trunk, request.caller_e164)
        if pending is None:
            return decide(request, None, flags)
        owner = await budget.finish(pending)
        return decide(request, owner, flags)
    except TimeoutError:
        return failed(
            LookupStatus.TIMEOUT, f"CRM lookup took over {settings.time_budget * 1000:.0f} ms"
        )
    except AgiHangup:
        raise
    except Exception as exc:  # fail open on anything: the call must go on
        if pending is not None:
            budget.abandon(pending)
        log.debug(
            "crm_lookup %s failed", env.uniqueid, exc_info=True, extra={"call_id": env.uniqueid}
        )
        return failed(LookupStatus.ERROR, f"{type(exc).__name__}: {exc}")
