"""Fault tests: nothing lost, nothing doubled (issue 9, docs/RELIABILITY.md).

Real parts only: the shared PostgreSQL (behind :class:`tests.pgproxy.PgProxy`
where the test needs to take it away), the PBX simulator over TCP replaying
real lab captures and re-keyed copies of them, the daemon in-process
(:class:`ami_daemon.service.Daemon`) or as ``ami-daemon run`` subprocesses
where a real SIGKILL is needed, and CDR files in our ``cdr_custom`` format
built from the captures' real ``cdr.csv`` (tests/reliability_kit.py).

Every test prints one ``FIGURES`` line (calls sent, written, duplicated, lost,
and what else it measured); docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import Timeline
from ami_daemon.cdr.calls import summaries_from_records
from ami_daemon.cdr.records import parse_csv
from ami_daemon.metrics import Metrics
from ami_daemon.service import Daemon
from ami_daemon.spool import ACKS_FILE, CALLS_FILE
from tests.pgproxy import PgProxy
from tests.reliability_kit import (
    SECRET,
    ZONE,
    cdr_custom_for,
    expected_calls,
    lab_config,
    load_lab,
    split_at_cut,
    timeline_now,
    write_cdr,
    write_config_file,
)

AMI_DAEMON = str(Path(sys.executable).with_name("ami-daemon"))


# --------------------------------------------------------------------- helpers


async def until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float, what: str
) -> float:
    """Poll ``check`` every 20 ms until true; seconds waited; AssertionError naming ``what``."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def crm_calls(dsn: str) -> dict[tuple[str, str], asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM crm.calls")
    finally:
        await conn.close()
    return {(r["pbx"], r["call_id"]): r for r in rows}


async def count_calls(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM crm.calls"))
    finally:
        await conn.close()


async def doubles(dsn: str) -> int:
    """Rows beyond one per call in every table keyed by the call (0 when nothing doubled)."""
    conn = await asyncpg.connect(dsn)
    try:
        total = 0
        for table in ("calls", "leads", "deals", "pending_calls"):
            total += int(
                await conn.fetchval(
                    f"SELECT count(*) - count(DISTINCT (pbx, call_id)) FROM crm.{table} "
                    "WHERE call_id IS NOT NULL"
                )
            )
        total += int(
            await conn.fetchval(
                "SELECT count(*) - count(DISTINCT (pbx, call_id, entity_type, entity_id)) "
                "FROM crm.activities"
            )
        )
        return total
    finally:
        await conn.close()


def spool_depth_metric(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("ami_daemon_spool_depth")
    return float(value or 0.0)


def spool_lines(folder: Path) -> int:
    path = folder / CALLS_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


def spool_waiting(folder: Path) -> int:
    """Calls in the spool not acknowledged yet (what a restart would offer again)."""
    calls = folder / CALLS_FILE
    acks = folder / ACKS_FILE
    keys = (
        [json.loads(line)["key"] for line in calls.read_bytes().splitlines() if line.strip()]
        if calls.exists()
        else []
    )
    done = set(acks.read_text().split("\n")) if acks.exists() else set()
    return sum(1 for key in keys if key not in done)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def figures(name: str, **values: Any) -> None:
    print(f"\nFIGURES {name}: {json.dumps(values, sort_keys=True)}")


def simulator(timeline: Timeline, **options: Any) -> Simulator:
    options.setdefault("speed", None)
    return Simulator(timeline, SimulatorOptions(secret=SECRET, **options))


class DaemonProcess:
    """``ami-daemon run --config FILE`` as a child process, its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._handle = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [AMI_DAEMON, "run", "--config", str(config)],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, the sockets just close."""
        os.kill(self.proc.pid, signal.SIGKILL)
        await self._exited(10)

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code (the test's loop keeps serving meanwhile:
        the simulator and the proxy live in it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self._exited(timeout)

    async def _exited(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"ami-daemon still running {timeout} s after the signal")
            await asyncio.sleep(0.02)
        self._handle.close()
        return int(self.proc.returncode)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._handle.close()


@pytest.fixture
def processes() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for proc in started:
        proc.ensure_dead()


# ------------------------------------------------------------ 1. database down


@pytest.mark.asyncio
async def test_database_down_during_a_burst_of_200_calls_every_call_written_once(
    migrated_dsn: str, tmp_path: Path
) -> None:
    captures = load_lab(["01", "02", "03", "04", "06", "07", "08", "10"])
    timeline = timeline_now(captures, copies=25, interleave=0.2)
    expected = expected_calls(timeline.events)
    assert len(expected) == 200
    ami_port = free_port()
    async with PgProxy() as proxy:
        metrics = Metrics()
        spool = tmp_path / "spool"
        daemon = Daemon(lab_config(proxy.dsn_for(migrated_dsn), ami_port, spool), metrics=metrics)
        sim = simulator(timeline)
        try:
            await daemon.start()  # schema checked through the proxy
            await proxy.cut()  # PostgreSQL gone before the first call ends
            await sim.start(port=ami_port)
            await sim.wait_done(60)
            assert daemon.writer is not None
            await until(lambda: daemon.tracker.open_calls() == 0, 10, "every call ended")
            await until(lambda: daemon.writer.spool.depth == 200, 10, "200 calls spooled")
            peak = spool_depth_metric(metrics)
            assert peak == 200
            assert spool_lines(spool) == 200  # on disk, fsync-ed
            assert await count_calls(migrated_dsn) == 0
            await proxy.restore()
            drained = await until(
                lambda: daemon.writer is not None and daemon.writer.idle, 30, "spool drained"
            )
            assert spool_depth_metric(metrics) == 0
            written, already = daemon.writer.written, daemon.writer.already_recorded
            rejected = daemon.writer.rejected
        finally:
            await daemon.stop()
            await sim.close()
    rows = await crm_calls(migrated_dsn)
    assert {cid for _, cid in rows} == set(expected)
    assert await doubles(migrated_dsn) == 0
    assert rejected == 0 and not (spool / "rejected.jsonl").exists()
    assert written == 200
    figures(
        "database_down_200",
        sent=len(expected),
        written=len(rows),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - {cid for _, cid in rows}),
        peak_spool_depth=peak,
        already_recorded_retries=already,
        drain_seconds=round(drained, 2),
    )


@pytest.mark.asyncio
async def test_database_outage_is_logged_with_the_growing_spool_depth(
    migrated_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9: "the spool depth is in metrics and logs".  An operator reading
    the log during an outage must see that calls are piling up, and how many —
    not only that the writer lock was lost ("standing by")."""
    captures = load_lab(["01", "02", "03", "04", "06", "07", "08", "10"])
    timeline = timeline_now(captures, copies=13, interleave=0.2)
    expected = expected_calls(timeline.events)
    ami_port = free_port()
    caplog.set_level("INFO")
    async with PgProxy() as proxy:
        daemon = Daemon(lab_config(proxy.dsn_for(migrated_dsn), ami_port, tmp_path / "spool"))
        sim = simulator(timeline)
        try:
            await daemon.start()
            await proxy.cut()
            await sim.start(port=ami_port)
            await sim.wait_done(60)
            assert daemon.writer is not None
            await until(lambda: daemon.writer.spool.depth == len(expected), 10, "all spooled")

            def depths() -> list[int]:
                return [
                    int(m.group(1))
                    for r in caplog.records
                    if r.levelno >= logging.WARNING
                    and (m := re.search(r"(\d+) call\(s\) wait in the spool", r.getMessage()))
                ]

            await until(
                lambda: any(d >= 100 for d in depths()),
                5,
                "a warning in the log with the number of calls waiting in the spool",
            )
            await proxy.restore()
            await until(
                lambda: daemon.writer is not None and daemon.writer.idle, 30, "spool drained"
            )
        finally:
            await daemon.stop()
            await sim.close()
    assert "CRM database reachable again" in caplog.text


# ---------------------------------------------------- 2. SIGKILL during writes


@pytest.mark.asyncio
async def test_sigkill_during_writes_and_restart_nothing_lost_nothing_doubled(
    migrated_dsn: str, tmp_path: Path, processes: list[DaemonProcess]
) -> None:
    captures = load_lab(["01", "02", "03", "04", "06", "07", "08", "10"])
    timeline = timeline_now(captures, copies=25, interleave=0.2)
    expected = expected_calls(timeline.events)
    ami_port = free_port()
    spool = tmp_path / "spool"
    async with PgProxy() as proxy:
        config = write_config_file(
            tmp_path / "config.yaml", proxy.dsn_for(migrated_dsn), ami_port, spool
        )
        await proxy.cut()  # the daemon starts with the database away: calls pile up
        sim = simulator(timeline)
        try:
            first = DaemonProcess(config, tmp_path / "first.log")
            processes.append(first)
            await sim.start(port=ami_port)
            await sim.wait_done(60)
            await until(lambda: spool_lines(spool) == len(expected), 20, "every call spooled")
            await proxy.restore()
            third = len(expected) // 3

            async def some_written() -> bool:
                return await count_calls(migrated_dsn) >= third

            await until(some_written, 30, "the first daemon writing")
            await first.kill()
            at_kill = await count_calls(migrated_dsn)
            assert at_kill < len(expected), "the kill came too late to test anything"

            second = DaemonProcess(config, tmp_path / "second.log")
            processes.append(second)

            async def all_written() -> bool:
                return await count_calls(migrated_dsn) == len(expected)

            await until(all_written, 30, "the restarted daemon writing the rest")
            await until(lambda: spool_waiting(spool) == 0, 10, "spool emptied")
            assert await second.terminate() == 0
        finally:
            await sim.close()
    rows = await crm_calls(migrated_dsn)
    assert {cid for _, cid in rows} == set(expected)
    assert await doubles(migrated_dsn) == 0
    log = second.text()
    assert "waiting for the CRM from a previous run" in log
    retried = log.count("already recorded")
    figures(
        "sigkill_during_writes",
        sent=len(expected),
        written_before_kill=at_kill,
        written=len(rows),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - {cid for _, cid in rows}),
        committed_not_acknowledged_at_kill=retried,
    )


@pytest.mark.asyncio
async def test_sigkill_mid_replay_calls_in_memory_come_back_from_the_cdr(
    migrated_dsn: str, tmp_path: Path, processes: list[DaemonProcess]
) -> None:
    """Killed while calls are in progress: those only in the tracker's memory, and
    those that happen while no daemon runs, come back at the restart from the
    CDR (state.json says since when); those already spooled come from the spool
    (its AMI version, not the CDR's), and nothing is written twice."""
    captures = load_lab()
    timeline = timeline_now(captures, copies=3, interleave=2.0)
    expected = expected_calls(timeline.events)
    cdr_file = write_cdr(tmp_path / "Master.csv", cdr_custom_for(timeline, captures, copies=3))
    records, _ = parse_csv(cdr_file.read_text(), ZONE)
    spool = tmp_path / "spool"
    sim = simulator(timeline, speed=25.0)
    await sim.start()
    try:
        config = write_config_file(
            tmp_path / "config.yaml", migrated_dsn, sim.port, spool, cdr=cdr_file
        )
        first = DaemonProcess(config, tmp_path / "first.log")
        processes.append(first)
        await until(lambda: sim.played >= len(timeline.events) // 2, 30, "half the replay")
        await first.kill()
        at_kill = await count_calls(migrated_dsn)
        assert 0 < at_kill < len(expected)
        assert (spool / "state.json").exists()
        await sim.wait_done(60)
        second = DaemonProcess(config, tmp_path / "second.log")
        processes.append(second)

        async def all_written() -> bool:
            return await count_calls(migrated_dsn) == len(expected)

        await until(all_written, 30, "every call back after the restart")
        assert await second.terminate() == 0
    finally:
        await sim.close()
    stored = {cid: r for (_, cid), r in (await crm_calls(migrated_dsn)).items()}
    assert set(stored) == set(expected)
    assert await doubles(migrated_dsn) == 0
    truth = {s.call_id: s for s in summaries_from_records(records, lab_config("", 0, spool).pbx)}
    for call_id, row in stored.items():
        assert row["status"] == truth[call_id].status.value, call_id
    log = second.text()
    assert "CDR backfill" in log
    figures(
        "sigkill_mid_replay",
        sent=len(expected),
        written_before_kill=at_kill,
        written=len(stored),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - set(stored)),
        interrupted=sum(1 for r in stored.values() if r["status"] == "interrupted"),
    )


# ------------------------------------------------------- 3. AMI link cut, CDR


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["drop", "stall"])
async def test_ami_cut_mid_call_calls_ended_meanwhile_completed_from_the_cdr(
    migrated_dsn: str, tmp_path: Path, how: str
) -> None:
    """``drop``: the sockets close (Asterisk restarted, a reset); ``stall``: they
    stay open and silent (a half-open link) until the keepalive Ping times out."""
    captures = load_lab()
    timeline = timeline_now(captures, copies=3, interleave=2.0)
    expected = expected_calls(timeline.events)
    drop_after, lost_events = 2000, 300
    before, held, unseen, live = split_at_cut(timeline, drop_after, lost_events)
    assert len(held) >= 3 and len(unseen) >= 1, "the cut must catch calls in both states"
    missing = sorted(held)[0]  # Asterisk's CDR lacks this one (e.g. buffered, lost)
    rows = [r for r in cdr_custom_for(timeline, captures, copies=3) if r[18] != missing]
    cdr_file = write_cdr(tmp_path / "Master.csv", rows)
    records, problems = parse_csv(cdr_file.read_text(), ZONE)
    assert problems == []
    config = lab_config(migrated_dsn, 0, tmp_path / "spool", cdr=cdr_file)
    truth = {s.call_id: s for s in summaries_from_records(records, config.pbx)}
    sim = simulator(timeline, lost_events=lost_events, **{f"{how}_after": drop_after})
    await sim.start()
    daemon = Daemon(lab_config(migrated_dsn, sim.port, tmp_path / "spool", cdr=cdr_file, ping=0.5))
    try:
        await daemon.start()
        await sim.wait_done(60)
        await until(lambda: sim.logins >= 2, 10, "the daemon reconnected")

        async def all_written() -> bool:
            return await count_calls(migrated_dsn) == len(expected)

        await until(all_written, 30, "every call of the replay in the CRM")
        assert daemon.writer is not None
        await until(lambda: daemon.writer is not None and daemon.writer.idle, 10, "writer idle")
        backfills = list(daemon.backfills)
    finally:
        await daemon.stop()
        await sim.close()
    stored = {cid: r for (_, cid), r in (await crm_calls(migrated_dsn)).items()}
    assert set(stored) == set(expected)
    assert await doubles(migrated_dsn) == 0
    assert len(backfills) == 1
    assert stored[missing]["status"] == "interrupted"
    for call_id in (held - {missing}) | unseen:
        row, cdr = stored[call_id], truth[call_id]
        assert row["status"] == cdr.status.value, call_id
        if row["direction"] != "outbound":
            assert row["answered_by"] == cdr.answered_by, call_id
    for call_id in unseen:  # never seen on AMI: what the CDR tells
        assert stored[call_id]["direction"] == truth[call_id].direction.value
    for call_id in live:  # alive at the reconnect: the tracker went on following them
        assert stored[call_id]["status"] == truth[call_id].status.value, call_id
    for call_id in before:  # seen whole on AMI: the tracker's own facts
        assert stored[call_id]["status"] == expected[call_id].status.value
    figures(
        f"ami_cut_{how}",
        sent=len(expected),
        written=len(stored),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - set(stored)),
        ended_during_cut=len(held),
        completed_from_cdr=len(held) - 1,
        interrupted_not_in_cdr=1,
        never_seen_recovered_from_cdr=len(unseen),
        still_live_at_reconnect=len(live),
    )


@pytest.mark.asyncio
async def test_ami_cut_without_a_cdr_source_writes_what_it_knew(
    migrated_dsn: str, tmp_path: Path
) -> None:
    """The documented limit (cdr.source: none): calls that ended during the cut
    are written ``interrupted`` with what AMI had shown; calls that started and
    ended during the cut were never seen and are missing."""
    captures = load_lab()
    timeline = timeline_now(captures, copies=3, interleave=2.0)
    expected = expected_calls(timeline.events)
    drop_after, lost_events = 2000, 300
    _before, held, unseen, _live = split_at_cut(timeline, drop_after, lost_events)
    sim = simulator(timeline, drop_after=drop_after, lost_events=lost_events)
    await sim.start()
    daemon = Daemon(lab_config(migrated_dsn, sim.port, tmp_path / "spool"))
    try:
        await daemon.start()
        await sim.wait_done(60)

        async def all_seen_written() -> bool:
            return await count_calls(migrated_dsn) == len(expected) - len(unseen)

        await until(all_seen_written, 30, "every call the daemon saw in the CRM")
        await until(lambda: daemon.writer is not None and daemon.writer.idle, 10, "writer idle")
    finally:
        await daemon.stop()
        await sim.close()
    stored = {cid: r for (_, cid), r in (await crm_calls(migrated_dsn)).items()}
    assert set(stored) == set(expected) - unseen
    assert {cid for cid, r in stored.items() if r["status"] == "interrupted"} == held
    assert daemon.backfills == []
    figures(
        "ami_cut_no_cdr",
        sent=len(expected),
        written=len(stored),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - set(stored)),
        written_interrupted=len(held),
    )


@pytest.mark.asyncio
async def test_ami_and_database_down_together_the_ami_version_of_a_call_wins(
    migrated_dsn: str, tmp_path: Path
) -> None:
    """A call seen whole on AMI waits in the spool (database down) when the link
    drops; the backfill after the reconnect cannot ask the CRM what it has and
    offers the CDR's version of the same call.  The spooled AMI version is the
    one written: the CDR does not know the DID of a transferred call (Asterisk
    rewrote ``dst`` to the transfer target, capture 04) nor its transfers."""
    captures = load_lab(["04", "01"])
    timeline = timeline_now(captures)
    ends_04 = max(i for i, e in enumerate(timeline.events) if e.item == 0)
    starts_01 = min(i for i, e in enumerate(timeline.events) if e.item == 1)
    drop_after = starts_01 + 5  # capture 04 over, capture 01 ringing
    lost_events = len(timeline.events) - drop_after
    assert ends_04 < drop_after
    expected = expected_calls(timeline.events)
    transfer_id = next(cid for cid, s in expected.items() if s.transfers)
    cdr_file = write_cdr(tmp_path / "Master.csv", cdr_custom_for(timeline, captures, 1))
    async with PgProxy() as proxy:
        sim = simulator(timeline, drop_after=drop_after, lost_events=lost_events)
        await sim.start()
        config = lab_config(proxy.dsn_for(migrated_dsn), sim.port, tmp_path / "spool", cdr=cdr_file)
        daemon = Daemon(config)
        try:
            await daemon.start()
            await proxy.cut()
            await sim.wait_done(30)
            await until(lambda: len(daemon.backfills) == 1, 15, "backfill after the reconnect")
            await proxy.restore()
            await until(
                lambda: daemon.writer is not None and daemon.writer.spool.depth == 0,
                30,
                "spool drained",
            )
        finally:
            await daemon.stop()
            await sim.close()
    stored = {cid: r for (_, cid), r in (await crm_calls(migrated_dsn)).items()}
    assert set(stored) == set(expected)
    assert stored[transfer_id]["did_e164"] == expected[transfer_id].did == "+34911234567"


# --------------------------------------------------- 4. start after downtime


@pytest.mark.asyncio
async def test_start_after_downtime_backfills_the_gap_once_and_backfill_cli_adds_nothing(
    migrated_dsn: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    cdr_file = tmp_path / "Master.csv"
    # Before the stop: the daemon sees calls 01 and 02.
    seen_caps = load_lab(["01", "02"])
    seen = timeline_now(seen_caps)
    sim = simulator(seen)
    await sim.start()
    daemon = Daemon(lab_config(migrated_dsn, sim.port, spool, cdr=cdr_file))
    cdr_rows = cdr_custom_for(seen, seen_caps, 1)
    write_cdr(cdr_file, cdr_rows)
    try:
        await daemon.start()
        await sim.wait_done(30)

        async def two_written() -> bool:
            return await count_calls(migrated_dsn) == 2

        await until(two_written, 20, "the calls seen before the stop")
    finally:
        await daemon.stop()
        await sim.close()
    state = json.loads((spool / "state.json").read_text())
    stopped_at = float(state["last_event_at"])
    # The downtime: Asterisk goes on and writes CDRs for calls 07, 10 and 13,
    # each starting a second after the daemon's last event.
    gap_caps = load_lab(["07", "10", "13"])
    gap = timeline_now(gap_caps)
    gap_rows = cdr_custom_for(gap, gap_caps, 1)
    restart = datetime.fromtimestamp(stopped_at, UTC) + timedelta(seconds=1)
    firsts: dict[str, datetime] = {}
    for row in gap_rows:
        start = datetime.fromisoformat(row[9]).replace(tzinfo=ZONE)
        firsts[row[18]] = min(firsts.get(row[18], start), start)
    for row in gap_rows:
        for column in (9, 10, 11):
            if row[column]:
                at = datetime.fromisoformat(row[column]).replace(tzinfo=ZONE)
                moved = at - firsts[row[18]] + restart
                row[column] = moved.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")
    last_end = max(datetime.fromisoformat(r[11]).replace(tzinfo=ZONE) for r in gap_rows)
    write_cdr(cdr_file, cdr_rows + gap_rows)
    gap_ids = {r[18] for r in gap_rows}
    await until(lambda: time.time() > last_end.timestamp() + 0.5, 30, "the downtime calls over")
    # The restart: a new call (08) is live on AMI; the gap comes from the CDR.
    live_caps = load_lab(["08"])
    sim = simulator(timeline_now(live_caps))
    await sim.start()
    daemon = Daemon(lab_config(migrated_dsn, sim.port, spool, cdr=cdr_file))
    try:
        await daemon.start()
        await sim.wait_done(30)

        async def six_written() -> bool:
            return await count_calls(migrated_dsn) == 6

        await until(six_written, 20, "the gap's calls and the live one")
        assert daemon.writer is not None
        await until(lambda: daemon.writer is not None and daemon.writer.idle, 10, "writer idle")
        backfills = list(daemon.backfills)
        already = daemon.writer.already_recorded
    finally:
        await daemon.stop()
        await sim.close()
    assert len(backfills) == 1
    since, _until, submitted = backfills[0]
    assert since == datetime.fromtimestamp(stopped_at, UTC)
    assert submitted == 3 and already == 0  # 01 and 02 were known: not offered again
    stored = {cid: r for (_, cid), r in (await crm_calls(migrated_dsn)).items()}
    assert gap_ids <= set(stored)
    statuses = {stored[cid]["status"] for cid in gap_ids}
    assert statuses == {"busy", "missed", "answered"}  # 07, 10, 13 as the CDR tells
    # Later, an admin runs the backfill by hand over the same period: nothing new.
    config = write_config_file(tmp_path / "config.yaml", migrated_dsn, 5038, spool, cdr=cdr_file)
    since_text = (datetime.fromtimestamp(stopped_at, UTC) - timedelta(minutes=10)).isoformat()
    done = subprocess.run(
        [AMI_DAEMON, "backfill", "--since", since_text, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "0 to write" in done.stdout, done.stdout
    assert await count_calls(migrated_dsn) == 6
    assert await doubles(migrated_dsn) == 0
    figures(
        "start_after_downtime",
        sent=6,
        seen_before_stop=2,
        gap_calls_in_cdr=3,
        backfilled=submitted,
        written=len(stored),
        duplicated=await doubles(migrated_dsn),
        lost=6 - len(stored),
        backfill_cli_new_rows=await count_calls(migrated_dsn) - 6,
    )


# ------------------------------------------------------ 5. active / standby


class TwoSessionSimulator(Simulator):
    """Starts the replay only once ``sessions`` daemons listen (both see every event)."""

    sessions = 2

    def _update_ready(self) -> None:
        listening = sum(1 for s in self._sessions if s.listening)
        if listening >= self.sessions:
            self._ready.set()
            self.sessions = 1  # later, one listener is enough (a daemon may die)
        elif listening == 0:
            self._ready.clear()


async def lock_holder(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7352 "
            "AND objid = hashtext('main')::oid AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(value) if value is not None else None
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_active_daemon_killed_standby_takes_over_no_gap_no_duplicate(
    migrated_dsn: str, tmp_path: Path, processes: list[DaemonProcess]
) -> None:
    captures = load_lab()
    timeline = timeline_now(captures, copies=3, interleave=0.5)
    expected = expected_calls(timeline.events)
    sim = TwoSessionSimulator(timeline, SimulatorOptions(secret=SECRET, speed=8.0))
    await sim.start()
    try:
        config_a = write_config_file(
            tmp_path / "a.yaml", migrated_dsn, sim.port, tmp_path / "spool-a"
        )
        config_b = write_config_file(
            tmp_path / "b.yaml", migrated_dsn, sim.port, tmp_path / "spool-b"
        )
        active = DaemonProcess(config_a, tmp_path / "a.log")
        processes.append(active)
        await until(lambda: "active CRM writer" in active.text(), 20, "daemon A active")
        holder_a = await lock_holder(migrated_dsn)
        standby = DaemonProcess(config_b, tmp_path / "b.log")
        processes.append(standby)
        await until(lambda: sim.logins >= 2, 20, "both daemons logged in")

        async def some_written() -> bool:
            return await count_calls(migrated_dsn) >= 5

        await until(some_written, 30, "daemon A writing")
        assert not sim.done, "the replay ended before the kill"
        await active.kill()
        at_kill = await count_calls(migrated_dsn)

        async def taken_over() -> bool:
            holder = await lock_holder(migrated_dsn)
            return holder is not None and holder != holder_a

        takeover = await until(taken_over, 15, "daemon B takes the writer lock")
        await sim.wait_done(60)

        async def all_written() -> bool:
            return await count_calls(migrated_dsn) == len(expected)

        await until(all_written, 30, "every call of the replay in the CRM")
        assert await standby.terminate() == 0
    finally:
        await sim.close()
    stored = {cid for _, cid in await crm_calls(migrated_dsn)}
    assert stored == set(expected)
    assert await doubles(migrated_dsn) == 0
    log_b = standby.text()
    assert "active CRM writer" in log_b
    figures(
        "active_standby",
        sent=len(expected),
        written_by_active_before_kill=at_kill,
        written=len(stored),
        duplicated=await doubles(migrated_dsn),
        lost=len(set(expected) - stored),
        takeover_seconds=round(takeover, 2),
        standby_already_recorded=log_b.count("already recorded"),
    )


# ------------------------------------------------------------- 6. two PBXs


@pytest.mark.asyncio
async def test_same_capture_replayed_into_two_pbx_names_gives_two_sets_of_rows(
    migrated_dsn: str, tmp_path: Path
) -> None:
    captures = load_lab()
    timeline = timeline_now(captures)
    expected = expected_calls(timeline.events)
    sims = [simulator(timeline), simulator(timeline)]
    daemons = []
    try:
        for sim, name in zip(sims, ("main", "branch"), strict=True):
            await sim.start()
            config = lab_config(migrated_dsn, sim.port, tmp_path / name, pbx=name)
            daemon = Daemon(config)
            daemons.append(daemon)
            await daemon.start()
        for sim in sims:
            await sim.wait_done(30)

        async def both_written() -> bool:
            return await count_calls(migrated_dsn) == 2 * len(expected)

        await until(both_written, 30, "both PBXs' calls written")
    finally:
        for daemon in daemons:
            await daemon.stop()
        for sim in sims:
            await sim.close()
    rows = await crm_calls(migrated_dsn)
    by_pbx = {name: {cid for pbx, cid in rows if pbx == name} for name in ("main", "branch")}
    assert by_pbx["main"] == by_pbx["branch"] == set(expected)
    assert await doubles(migrated_dsn) == 0
    figures(
        "two_pbx_names",
        sent=2 * len(expected),
        written=len(rows),
        duplicated=await doubles(migrated_dsn),
        lost=2 * len(expected) - len(rows),
    )
