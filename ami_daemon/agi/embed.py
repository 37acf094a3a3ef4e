"""The FastAGI server inside the daemon: its rules, its metrics.

``service.py`` runs :class:`FastAgiThread` when ``agi.enabled``: the server
of :func:`start_fastagi` on an event loop of its own; it listens once
``start()`` returned (``.port``) and stops with ``await close()``.  Routing
follows the daemon's own reloadable rules (a SIGHUP reload applies to the
next call), and every lookup is counted
in ``ami_daemon_agi_lookups{result=ok|error|timeout}`` and timed in
``ami_daemon_agi_lookup_seconds``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from typing import TYPE_CHECKING

from ami_daemon.agi.crm_server import CrmLookupServer, RuleSetRouting
from ami_daemon.agi.decision import Decision
from ami_daemon.config import Config

if TYPE_CHECKING:
    from ami_daemon.metrics import Metrics
    from ami_daemon.rules.loader import RulesSource


async def start_fastagi(
    config: Config, rules: RulesSource, metrics: Metrics | None = None
) -> CrmLookupServer:
    """Start ``crm_lookup`` on ``agi.bind:agi.port``; OSError if the port is taken."""

    def observe(decision: Decision, seconds: float) -> None:
        if metrics is not None:
            metrics.agi_lookups.labels(result=decision.status.value).inc()
            metrics.agi_lookup_seconds.observe(seconds)

    server = CrmLookupServer(
        config, routing=RuleSetRouting(lambda: rules.current), observer=observe
    )
    # A cold pool hit by a burst of lookups could trip the fail-fast window:
    # open a connection and prepare the query before Asterisk calls.
    await server.owners.warm_up()
    await server.start()
    return server


class FastAgiThread:
    """The FastAGI server on an event loop of its own, in a thread of the daemon.

    The daemon's main loop reads AMI, tracks calls and writes the CRM; under a
    burst of events it can be busy for a long time between two yields.  A
    lookup runs while the caller hears ringing and has a 300 ms budget, so it
    must not wait for that loop: on its own loop it only competes for the
    interpreter (switched every few milliseconds), not for a turn of the
    main loop.  Metrics and the rules are shared (counters are thread-safe;
    the current rule set is read once per lookup).
    """

    def __init__(self, config: Config, rules: RulesSource, metrics: Metrics | None = None) -> None:
        self._config = config
        self._rules = rules
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: CrmLookupServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Start the thread and wait until the server listens (re-raises its error)."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fastagi", daemon=True
        )
        self._thread.start()
        self.port = await asyncio.wrap_future(ready)

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            self._server = await start_fastagi(self._config, self._rules, self._metrics)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(self._server.port)
        try:
            await self._stopped.wait()
        finally:
            await self._server.close()

    async def close(self) -> None:
        """Stop accepting, let open sessions finish (the server's grace), join the thread."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stopped.set)
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)
