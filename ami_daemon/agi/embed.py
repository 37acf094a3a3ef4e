"""The FastAGI server inside the daemon: its rules, its metrics.

``service.py`` calls :func:`start_fastagi` when ``agi.enabled``; the returned
:class:`~.crm_server.CrmLookupServer` is listening (``.port``) and is stopped
with ``await server.close()``.  Routing follows the daemon's own reloadable
rules (a SIGHUP reload applies to the next call), and every lookup is counted
in ``ami_daemon_agi_lookups{result=ok|error|timeout}`` and timed in
``ami_daemon_agi_lookup_seconds``.
"""

from __future__ import annotations

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
