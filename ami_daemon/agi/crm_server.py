"""The ``crm_lookup`` FastAGI service: config → pool, rules → routing, route → server.

What the daemon embeds (and ``ami-daemon agi-server`` runs alone)::

    server = CrmLookupServer(config)          # or CrmLookupServer(config, routing=provider)
    await server.start()                      # listening on agi.bind:agi.port
    ...                                       # server.port, server.fastagi.active_sessions
    await server.close()                      # stop listening, end sessions, close the pool

``routing`` is a callable returning the current :class:`RoutingTable`; the
daemon, which already holds a reloadable rule set, passes
``RuleSetRouting(lambda: rules.current)`` (see :mod:`.embed`).  Without it the
server reads ``rules.path`` itself and reloads it when the files change
(:class:`RulesRouting`); broken rules keep the previous table, and with no
usable rules at all routing is off and the exception list empty (logged),
while lookups go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ami_daemon.agi.decision import Decision
from ami_daemon.agi.lookup import LookupSettings, TimeBudget, crm_lookup
from ami_daemon.agi.owners import PooledOwners
from ami_daemon.agi.routing import RoutingTable, rules_signature
from ami_daemon.agi.server import AgiSession, FastAgiServer
from ami_daemon.agi.variables import SCRIPT_CRM_LOOKUP
from ami_daemon.config import Config

if TYPE_CHECKING:
    from ami_daemon.rules.model import RuleSet

log = logging.getLogger("ami_daemon.agi")

#: Called after each lookup with what was decided and how long it took (seconds).
Observer = Callable[[Decision, float], None]


class RuleSetRouting:
    """The routing table of whatever rule set ``current()`` returns (a reloadable source).

    Rebuilt only when ``current()`` returns another object, i.e. after a reload.
    """

    def __init__(self, current: Callable[[], RuleSet]) -> None:
        self._current = current
        self._rules: RuleSet | None = None
        self._table = RoutingTable()

    def __call__(self) -> RoutingTable:
        try:
            rules = self._current()
        except Exception as exc:  # not loaded: routing off, lookups go on
            log.debug("no rules for routing: %s", exc)
            return self._table
        if rules is not self._rules:
            self._rules = rules
            self._table = RoutingTable.from_ruleset(rules)
        return self._table


class RulesRouting:
    """The routing table of a rules folder, rebuilt when its files change.

    Checks the files' sizes and times at most every ``check_every`` seconds
    (a few ``stat`` calls), so edits apply within seconds without a restart.
    """

    def __init__(
        self,
        path: Path,
        region: str,
        check_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.region = region
        self._check_every = check_every
        self._clock = clock
        self._table = RoutingTable()
        self._signature: list[list[object]] | None = None
        self._checked = float("-inf")

    def __call__(self) -> RoutingTable:
        now = self._clock()
        if now - self._checked >= self._check_every:
            self._checked = now
            signature = rules_signature(self.path)
            if signature != self._signature:
                self._signature = signature
                self._reload()
        return self._table

    def _reload(self) -> None:
        from ami_daemon.rules.loader import try_load_rules  # PyYAML only when needed

        rules, problems = try_load_rules(self.path, self.region)
        if rules is None:
            shown = "; ".join(str(p) for p in problems[:5])
            log.warning("rules %s not usable, routing table unchanged: %s", self.path, shown)
            return
        self._table = RoutingTable.from_ruleset(rules)
        log.info(
            "routing from %s: default %s, %d number(s), %d trunk(s), %d exception phone(s)",
            self.path,
            "on" if self._table.default_route else "off",
            len(self._table.number_route),
            len(self._table.trunk_route),
            len(self._table.exception_phones),
        )


class CrmLookupRoute:
    """The ``crm_lookup`` route: one call → :func:`~.lookup.crm_lookup`."""

    def __init__(
        self,
        owners: PooledOwners,
        settings: LookupSettings,
        routing: Callable[[], RoutingTable],
        observer: Observer | None = None,
    ) -> None:
        self.owners = owners
        self.settings = settings
        self.routing = routing
        self.observer = observer
        self.budget = TimeBudget()

    async def __call__(self, session: AgiSession) -> Decision:
        started = time.perf_counter()
        decision = await crm_lookup(
            session.channel, session.env, self.owners, self.routing, self.settings, self.budget
        )
        if self.observer is not None:
            try:
                self.observer(decision, time.perf_counter() - started)
            except Exception:
                log.exception("lookup observer failed")
        return decision

    async def close(self) -> None:
        await self.budget.drain(1.0)
        await self.owners.close()


class CrmLookupServer:
    """The FastAGI server with the ``crm_lookup`` route, built from the config."""

    def __init__(
        self,
        config: Config,
        routing: Callable[[], RoutingTable] | None = None,
        *,
        port: int | None = None,
        bind: str | None = None,
        observer: Observer | None = None,
    ) -> None:
        agi = config.agi
        self.owners = PooledOwners(
            config.database.dsn,
            pool_max=min(config.database.pool_max, 4),
            connect_timeout=config.database.connect_timeout,
            cache_ttl=agi.cache_ttl,
            fail_fast_seconds=agi.fail_fast_seconds,
        )
        if routing is None:
            routing = RulesRouting(config.rules.path, config.pbx.region)
        settings = LookupSettings(
            region=config.pbx.region,
            trunk_channels=config.pbx.trunk_channels,
            time_budget=agi.time_budget_ms / 1000.0,
        )
        self.lookup = CrmLookupRoute(self.owners, settings, routing, observer)
        self.fastagi = FastAgiServer(
            {SCRIPT_CRM_LOOKUP: self.lookup},
            bind=agi.bind if bind is None else bind,
            port=agi.port if port is None else port,
            allowed_peers=agi.allowed_peers,
        )

    @property
    def port(self) -> int:
        return self.fastagi.port

    async def start(self) -> None:
        """Listen; the database is contacted in the background of the first call."""
        try:
            self.lookup.routing()  # load the rules now: problems show at startup
        except Exception:
            log.exception("routing rules unavailable at start; lookups will answer error")
        await self.fastagi.start()

    async def close(self) -> None:
        await self.fastagi.close()
        await self.lookup.close()
