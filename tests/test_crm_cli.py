"""``ami-daemon crm …``: the manual tools, as a person runs them (real subprocesses)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg

from ami_daemon.pipeline import process_call
from ami_daemon.rules import default_rules_path
from tests.crm_world import KNOWN_202, ZONE, missed, outbound, shipped_rules
from tests.test_replay import capture, cli, config_file, fetch, lab_dsn  # noqa: F401

SUPPORT_CALL = "03_inbound_support_queue_no_answer_caller_gives_up"


def offer_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "offer-rules"
    shutil.copytree(default_rules_path(), rules)
    crm = rules / "00-crm.yaml"
    crm.write_text(crm.read_text().replace("  unknown_caller: create", "  unknown_caller: offer"))
    return rules


def test_pending_call_to_lead_then_converted(
    lab_dsn: str,  # noqa: F811
    config_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = ["--config", str(config_file)]
    rules = offer_rules(tmp_path)
    done = cli(
        "replay", capture(SUPPORT_CALL), *cfg, "--rules", str(rules), dsn=lab_dsn, cwd=tmp_path
    )
    assert done.returncode == 0 and "pending_manual" in done.stdout, done.stderr

    listed = cli("crm", "pending", *cfg, dsn=lab_dsn, cwd=tmp_path)
    header, row = listed.stdout.splitlines()
    assert header.split("\t")[:4] == ["call_id", "pbx", "number", "did"]
    call_id, pbx, number, did, answered_by, started, source, status = row.split("\t")
    assert (pbx, number, did, answered_by, source, status) == (
        "main",
        "+34600111223",
        "+34911234500",
        "-",
        "CALL",
        "open",
    )
    assert started.startswith("2026-11-27 17:33")  # Europe/Madrid wall clock

    made = cli("crm", "create-from-call", call_id, "--as", "lead", *cfg, dsn=lab_dsn, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created lead:")
    lead_id = made.stdout.split("lead:")[1].split()[0]
    again = cli(
        "crm", "create-from-call", call_id, "--as", "contact", *cfg, dsn=lab_dsn, cwd=tmp_path
    )
    assert again.returncode == 0 and f"already turned into lead:{lead_id}" in again.stdout
    assert cli("crm", "pending", *cfg, dsn=lab_dsn, cwd=tmp_path).stdout.count("\n") == 1
    resolved = cli("crm", "pending", "--all", *cfg, dsn=lab_dsn, cwd=tmp_path).stdout
    assert f"lead:{lead_id}" in resolved

    conv = cli(
        "crm", "convert-lead", lead_id, "--deal", "--company", *cfg, dsn=lab_dsn, cwd=tmp_path
    )
    assert conv.returncode == 0, conv.stderr
    assert "converted into contact:" in conv.stdout and "(general/NEW)" in conv.stdout
    (lead,) = fetch(lab_dsn, "SELECT status, contact_id, company_id, deal_id FROM crm.leads")
    assert lead["status"] == "converted" and None not in lead.values()
    phones = fetch(
        lab_dsn, "SELECT entity_type FROM crm.phones WHERE e164 = '+34600111223' ORDER BY 1"
    )
    assert [p["entity_type"] for p in phones] == ["company", "contact", "lead"]
    twice = cli("crm", "convert-lead", lead_id, *cfg, dsn=lab_dsn, cwd=tmp_path)
    assert twice.returncode == 2 and "already converted" in twice.stderr


def test_tasks_open_and_closed(
    lab_dsn: str,  # noqa: F811
    config_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def calls() -> None:
        conn = await asyncpg.connect(lab_dsn)
        try:
            rules = shipped_rules()
            await process_call(conn, missed(call_id="m1", external_number=KNOWN_202), rules, ZONE)
            await process_call(
                conn,
                missed(call_id="m2", external_number="+34600555666", did="+34911234500"),
                rules,
                ZONE,
            )
            await process_call(
                conn,
                outbound(
                    call_id="cb",
                    external_number=KNOWN_202,
                    caller_extension="202",
                    final_agent="202",
                ),
                rules,
                ZONE,
            )
        finally:
            await conn.close()

    asyncio.run(calls())
    cfg = ["--config", str(config_file)]
    every = cli("crm", "tasks", *cfg, dsn=lab_dsn, cwd=tmp_path).stdout.splitlines()
    assert len(every) == 3
    rows = [line.split("\t") for line in every[1:]]
    assert [(r[1], r[2], r[3], r[7]) for r in rows] == [
        ("closed", "202", KNOWN_202, "main/cb"),
        ("open", "203", "+34600555666", "-"),
    ]
    # options before the action work too
    only_open = cli("crm", *cfg, "tasks", "--open", dsn=lab_dsn, cwd=tmp_path).stdout.splitlines()
    assert len(only_open) == 2 and "+34600555666" in only_open[1]


def test_mistakes_are_clear(
    lab_dsn: str,  # noqa: F811
    config_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = ["--config", str(config_file)]
    nope = cli("crm", "create-from-call", "123.4", "--as", "lead", *cfg, dsn=lab_dsn, cwd=tmp_path)
    assert nope.returncode == 2 and "no pending call '123.4'" in nope.stderr
    nolead = cli("crm", "convert-lead", "999", *cfg, dsn=lab_dsn, cwd=tmp_path)
    assert nolead.returncode == 2 and "no lead 999" in nolead.stderr
    for done in (nope, nolead):
        assert "Traceback" not in done.stderr
