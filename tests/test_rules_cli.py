"""``ami-daemon rules check|explain`` as an admin runs it: a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

SHIPPED = REPO / "rules"


def ami_daemon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ami_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_shipped_rules_prints_a_summary(tmp_path: Path) -> None:
    cfg = config(tmp_path, "pbx:\n  region: ES\n  timezone: Europe/Madrid\n")
    done = ami_daemon("rules", "check", str(SHIPPED), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "mode: classic" in out
    assert "+34911234567 (Main sales line): queue_group=sales (responsible 201)" in out
    assert "+34911234500 (Support line): queue_group=support (responsible 203)" in out
    assert "+34930000000 (Radio campaign number): source=RADIO_CAMPAIGN" in out
    assert "trunk (Lab carrier)" in out
    assert "first match wins, not used in classic mode; times in Europe/Madrid" in out
    assert "queue groups: sales = 201, 202; support = 203" in out
    lines = out.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if f". {n}:" in line)
        for n in ("foreign-callers", "support-queue", "missed-after-hours")
    ]
    assert order == sorted(order)
    assert lines[-1] == "OK: no problems found"
    assert done.stderr == ""


def test_check_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(
        "mode: simple\ndefaults:\n  source: NOPE\n  pipeline: nowhere\n", encoding="utf-8"
    )
    (rules / "b.yaml").write_text("numbers:\n  '911234567': {}\n  '+34911234567': {}\n")
    done = ami_daemon("rules", "check", str(rules))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{rules / 'a.yaml'}:3: defaults.source: unknown source 'NOPE' (standard: CALL, EMAIL, "
        "WEB, ADVERTISING, PARTNER, RECOMMENDATION, TRADE_SHOW, WEBFORM, CALLBACK, OTHER; "
        "custom: none; declare custom ones under 'sources:')",
        f"{rules / 'a.yaml'}:4: defaults.pipeline: unknown pipeline 'nowhere' (declared: general)",
        f"{rules / 'b.yaml'}:3: numbers.+34911234567: duplicate number: '911234567' at "
        f"{rules / 'b.yaml'}:2 is the same number (+34911234567)",
    ]
    assert "3 problem(s)" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("defaults:\n  source: CALL\n   pipeline: [\n")
    done = ami_daemon("rules", "check", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.startswith(f"{tmp_path / 'r.yaml'}:3: YAML syntax error: ")
    assert "Traceback" not in done.stderr


def test_check_uses_config_rules_path_and_region(tmp_path: Path) -> None:
    (tmp_path / "myrules").mkdir()
    (tmp_path / "myrules" / "r.yaml").write_text("numbers:\n  '030 1234567': {source: WEB}\n")
    cfg = config(tmp_path, "pbx: {region: DE}\nrules: {path: myrules}\n")
    done = ami_daemon("rules", "check", "--config", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "+49301234567: source=WEB" in done.stdout
    assert "(region DE)" in done.stdout


def test_check_missing_folder(tmp_path: Path) -> None:
    done = ami_daemon("rules", "check", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert done.stdout.strip() == f"{tmp_path / 'nowhere'}: no such file or folder"


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    cfg = config(tmp_path, "pbx: {region: Spain}\n")
    done = ami_daemon("rules", "check", str(SHIPPED), "--config", str(cfg))
    assert done.returncode == 2
    assert "pbx.region" in done.stderr
    assert "Traceback" not in done.stderr


def test_explain_any_spelling_with_origins(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "00.yaml").write_text("defaults:\n  source: WEB\nqueue_groups: {support: [203]}\n")
    (rules / "10.yaml").write_text(
        "numbers:\n  '911234500':\n    label: Support\n    queue_group: support\n"
        "trunks:\n  trunk:\n    unknown_caller: offer\n"
    )
    for spelling in ("0034 911 23 45 00", "+34911234500", "911-234-500"):
        done = ami_daemon("rules", "explain", spelling, "--rules", str(rules), "--trunk", "trunk")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"number +34911234500: override at {rules / '10.yaml'}:2"
        assert lines[1] == f"trunk trunk: override at {rules / '10.yaml'}:6"
        assert "label: Support" in lines
        by_name = {line.split()[0]: line for line in lines if line.startswith("  ")}
        assert by_name["queue_group"].split()[1:3] == ["support", "(203)"]
        assert by_name["queue_group"].endswith(
            f"number override +34911234500 ({rules / '10.yaml'}:4)"
        )
        assert by_name["unknown_caller"].endswith(f"trunk override trunk ({rules / '10.yaml'}:7)")
        assert by_name["source"].endswith(f"defaults ({rules / '00.yaml'}:2)")
        assert by_name["deal_creation"].endswith("built-in default")
        assert "new callers create nothing" in done.stdout


def test_explain_a_trunk_and_an_exception(tmp_path: Path) -> None:
    done = ami_daemon("rules", "explain", "trunk", "--rules", str(SHIPPED))
    assert done.returncode == 0, done.stderr
    numbers = SHIPPED / "10-numbers.yaml"
    line = numbers.read_text().splitlines().index("  trunk:") + 1
    assert done.stdout.splitlines()[0] == f"trunk trunk: override at {numbers}:{line}"
    done = ami_daemon("rules", "explain", "910 000 000", "--rules", str(SHIPPED))
    assert done.returncode == 0
    assert "number +34910000000: no override" in done.stdout
    assert "exception list: this number is on it" in done.stdout


def test_explain_with_broken_rules_exits_1(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("mode: weird\n")
    done = ami_daemon("rules", "explain", "911234567", "--rules", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"{tmp_path / 'r.yaml'}:1: mode: must be one of classic, simple, got 'weird'"
    )


def test_rules_without_action_is_a_usage_error() -> None:
    done = ami_daemon("rules")
    assert done.returncode == 2
    assert "check" in done.stderr and "explain" in done.stderr
