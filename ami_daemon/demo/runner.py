"""``ami-daemon demo``: a day of real calls through the real daemon, on a private database.

What runs is what production runs: the PBX simulator replays the day's calls
over AMI (and plays Asterisk's side of each inbound call's FastAGI lookup),
the daemon (:class:`~ami_daemon.service.Daemon`) tracks them, answers the
lookups from its in-process FastAGI server, applies the shipped rules and
writes PostgreSQL.  Only the database is private: an embedded PostgreSQL
(pgserver) in a temporary folder, removed at the end, unless ``--dsn`` names
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from ami_daemon.ami.fastagi_client import AgiOutcome
from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import build_timeline
from ami_daemon.config import (
    AgiConfig,
    AmiConfig,
    Config,
    DatabaseConfig,
    MetricsConfig,
    PbxConfig,
    RulesConfig,
    SpoolConfig,
)
from ami_daemon.crm import db, embedded, migrate
from ami_daemon.crm.db import with_database
from ami_daemon.crm.imports import Kind, import_csv
from ami_daemon.demo.plan import GAP_SECONDS, PLAN, DemoCall, build_captures
from ami_daemon.errors import UserError
from ami_daemon.metrics import Metrics
from ami_daemon.pipeline import Processed
from ami_daemon.rules.loader import default_rules_path
from ami_daemon.service import Daemon

DEMO_DATABASE = "ami_daemon_demo"
#: The lab PBX of the recordings is in Spain: calls are shown in its local time.
DEMO_PBX = PbxConfig(name="demo", region="ES", timezone="Europe/Madrid")
AMI_SECRET = "demo-secret"


@dataclass(frozen=True)
class DemoRow:
    """One call of the demo: the story, what the daemon saw, the lookup, the CRM result."""

    story: str
    processed: Processed
    lookup: AgiOutcome | None


@contextlib.asynccontextmanager
async def demo_database(dsn: str | None) -> AsyncIterator[str]:
    """A fresh database for the demo: in ``--dsn``'s server, else an embedded one."""
    server: Any = None
    if dsn is None:
        try:
            admin, server = embedded.start(f"ami-daemon-demo-{os.getpid()}", cleanup="delete")
        except ImportError as exc:
            raise UserError(str(exc)) from None
    else:
        admin = dsn
    conn = await db.connect(admin)
    try:
        if dsn is None:
            await conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}"')
            await conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    finally:
        await conn.close()
    target = dsn if dsn is not None else with_database(admin, DEMO_DATABASE)
    try:
        yield target
    finally:
        if server is not None:
            server.cleanup()


async def prepare_crm(dsn: str, region: str) -> None:
    """Schema, then the small company: employees 201–203, a company, two clients."""
    data = resources.files("ami_daemon.demo") / "data"
    conn = await db.connect(dsn)
    try:
        await migrate.migrate(conn)
        for kind in (Kind.USERS, Kind.COMPANIES, Kind.CONTACTS):
            text = (data / f"{kind.value}.csv").read_text(encoding="utf-8")
            report = await import_csv(conn, kind, text, region)
            if report.rejected:
                raise UserError(f"demo data {kind.value}.csv rejected: {report.rejected}")
    finally:
        await conn.close()


def demo_config(dsn: str, ami_port: int, workdir: Path) -> Config:
    """The lab PBX of the recordings (chan_sip trunk ``trunk``, phones 201–203, Spain)."""
    return Config(
        pbx=DEMO_PBX,
        ami=AmiConfig(
            port=ami_port, username="ami-daemon", secret=AMI_SECRET, reconnect_max_delay=1.0
        ),
        database=DatabaseConfig(dsn=dsn),
        agi=AgiConfig(port=0),
        rules=RulesConfig(default_rules_path()),
        metrics=MetricsConfig(enabled=False),
        spool=SpoolConfig(path=workdir / "spool"),
    )


async def run_demo(
    dsn: str | None = None, plan: Sequence[DemoCall] = PLAN, timeout: float = 50.0
) -> list[DemoRow]:
    """Run the day through simulator and daemon; one row per call, in the day's order."""
    workdir = Path(tempfile.mkdtemp(prefix="ami-daemon-demo-"))
    try:
        async with demo_database(dsn) as target:
            await prepare_crm(target, DEMO_PBX.region)
            return await _replay_day(target, plan, workdir, timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _replay_day(
    dsn: str, plan: Sequence[DemoCall], workdir: Path, timeout: float
) -> list[DemoRow]:
    captures = build_captures(plan)
    timeline = build_timeline(captures, gap=GAP_SECONDS)
    written: list[Processed] = []
    simulator = Simulator(timeline, SimulatorOptions(secret=AMI_SECRET, speed=None))
    await simulator.start()
    daemon = Daemon(
        demo_config(dsn, simulator.port, workdir), metrics=Metrics(), on_written=written.append
    )
    try:
        await daemon.start()
        assert daemon.agi_port is not None
        simulator.options.agi = ("127.0.0.1", daemon.agi_port)
        deadline = time.monotonic() + timeout
        await asyncio.wait_for(daemon.ready.wait(), timeout)
        await simulator.wait_done(max(1.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            if len(written) >= len(plan) and daemon.writer is not None and daemon.writer.idle:
                break
            await asyncio.sleep(0.05)
    finally:
        await daemon.stop()
        await simulator.close()
    lookups = {o.uniqueid: o for o in simulator.agi_outcomes}
    by_start = sorted(written, key=lambda p: (p.summary.started_at is None, p.summary.started_at))
    stories = [call.story for call in plan]
    rows = []
    for index, processed in enumerate(by_start):
        story = stories[index] if index < len(stories) else ""
        rows.append(DemoRow(story, processed, lookups.get(processed.summary.call_id)))
    return rows


def _who(processed: Processed) -> str:
    s = processed.summary
    if s.direction.value == "outbound":
        return f"{s.caller_extension} → {s.external_number}"
    if s.direction.value == "internal":
        return f"{s.caller_extension} → {s.final_agent or ','.join(s.agents_rung)}"
    taken = s.answered_by or "nobody"
    if s.final_agent and s.final_agent != s.answered_by:
        taken = f"{s.answered_by} → {s.final_agent}"
    return f"{s.external_number or 'anonymous'} → {s.did or '?'} ({taken})"


def _lookup_text(lookup: AgiOutcome | None) -> str:
    if lookup is None:
        return "-"
    v = lookup.variables
    if v.get("CRM_LOOKUP") != "ok":
        return f"CRM_LOOKUP={v.get('CRM_LOOKUP', '?')}"
    if v.get("CRM_SKIP") == "1":
        return "skip (employee or excluded)"
    if v.get("CRM_KNOWN") == "1":
        route = f", route to {v['CRM_ROUTE_TO']}" if "CRM_ROUTE_TO" in v else ""
        return f"{v.get('CALLERID(name)', v.get('CRM_ENTITY', 'known'))}{route}"
    return "unknown caller"


def print_table(rows: Sequence[DemoRow], out: TextIO = sys.stdout) -> None:
    """The day as a readable table, then why each call went where it went."""
    headers = ("#", "time", "call", "status", "lookup (FastAGI)", "CRM")
    lines = []
    for n, row in enumerate(rows, start=1):
        s = row.processed.summary
        when = s.started_at.astimezone(DEMO_PBX.zone).strftime("%H:%M") if s.started_at else "--:--"
        lines.append(
            (
                str(n),
                when,
                f"{s.direction.value}: {_who(row.processed)}",
                s.status.value,
                _lookup_text(row.lookup),
                row.processed.line().split(" ", 1)[1],
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*headers).rstrip(), file=out)
    print(fmt.format(*("-" * w for w in widths)), file=out)
    for line in lines:
        print(fmt.format(*line).rstrip(), file=out)
    print(file=out)
    print("Why:", file=out)
    for n, row in enumerate(rows, start=1):
        print(f"{n:>2}. {row.story}", file=out)
        for reason in row.processed.decision.reasons:
            print(f"      - {reason}", file=out)
    print(file=out)
    print(
        "The lookup column is what the daemon's FastAGI server answered while each inbound "
        "call rang.\nThe replayed calls are recordings: they do not change with that answer "
        "(a real dialplan\nwould have routed a known client to CRM_ROUTE_TO first).",
        file=out,
    )


__all__ = ["DemoRow", "demo_database", "prepare_crm", "print_table", "run_demo"]
