"""The config file: found in DESIGN's order, validated, errors naming file and key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ami_daemon import config
from ami_daemon.config import ConfigError
from tests.paths import REPO


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(path, env or {})
    return caught.value.problems


def test_shipped_sample_config_loads() -> None:
    cfg = config.load(REPO / "config.yaml", {})
    assert cfg.pbx.region == "ES"
    assert cfg.pbx.name
    assert cfg.database.dsn


def test_pbx_only_file_is_a_complete_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
pbx:
  name: main
  region: ES
  timezone: Europe/Madrid
  trunk_channels: ['^SIP/trunk-', '^PJSIP/provider-']
  employee_channels: '^(?:SIP|PJSIP|IAX2)/(?P<peer>[^-/;]+)-'
  peer_extensions: {150010001: '201'}
  outside_prefix: ''
""",
    )
    cfg = config.load(path, {})
    assert cfg.pbx.name == "main"
    assert cfg.pbx.timezone == "Europe/Madrid"
    assert [p.pattern for p in cfg.pbx.trunk_channels] == ["^SIP/trunk-", "^PJSIP/provider-"]
    match = cfg.pbx.employee_channels.match("SIP/201-00000001")
    assert match is not None and match["peer"] == "201"
    assert cfg.pbx.peer_extensions == {"150010001": "201"}
    assert cfg.database.dsn is None
    assert cfg.source == path


def test_defaults_apply_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, {})
    assert cfg.pbx.name == "default" and cfg.pbx.timezone == "UTC"
    assert cfg.source is None


def test_lookup_order_explicit_then_env_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = write(tmp_path, "pbx: {name: from-env}", "env.yaml")
    cwd_file = write(tmp_path, "pbx: {name: from-cwd}")
    explicit = write(tmp_path, "pbx: {name: explicit}", "explicit.yaml")
    monkeypatch.chdir(tmp_path)
    env = {config.ENV_CONFIG: str(env_file)}
    assert config.load(explicit, env).pbx.name == "explicit"
    assert config.load(None, env).pbx.name == "from-env"
    if not Path("/etc/ami-daemon/config.yaml").exists():
        assert config.load(None, {}).pbx.name == "from-cwd"
    assert cwd_file.exists()


def test_environment_overrides_dsn_and_ami_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "database: {dsn: 'postgresql://file/db'}\nami: {secret: file}\n")
    env = {config.ENV_DSN: "postgresql://env/db", config.ENV_AMI_SECRET: "s3cret"}
    cfg = config.load(path, env)
    assert cfg.database.dsn == "postgresql://env/db"
    assert cfg.ami_secret() == "s3cret"
    assert config.load(path, {}).ami_secret() == "file"


def test_secret_file_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("from-file\n")
    path = write(tmp_path, f"ami: {{secret_file: '{secret}'}}\n")
    assert config.load(path, {}).ami_secret() == "from-file"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("pbx: {nmae: x}", "pbx.nmae", "unknown key"),
        ("pbz: {}", "pbz", "unknown key"),
        ("pbx: {region: XX}", "pbx.region", "unknown region"),
        ("pbx: {timezone: Mars/Base}", "pbx.timezone", "unknown IANA time zone"),
        ("pbx: {trunk_channels: ['^SIP/(trunk']}", "pbx.trunk_channels[0]", "invalid regex"),
        ("pbx: {employee_channels: '^SIP/(.*)-'}", "pbx.employee_channels", "group named 'peer'"),
        ("pbx: {outside_prefix: 'x9'}", "pbx.outside_prefix", "digits only"),
        ("pbx: {peer_extensions: [1, 2]}", "pbx.peer_extensions", "must be a mapping"),
        ("ami: {port: 'five'}", "ami.port", "must be an integer"),
        ("ami: {port: 70000}", "ami.port", "TCP port"),
        ("ami: {ping_timeout: -1}", "ami.ping_timeout", "greater than 0"),
        ("agi: {enabled: 'maybe'}", "agi.enabled", "true or false"),
        ("agi: {allowed_peers: ['10.0.0.0/8', 'not-an-ip']}", "agi.allowed_peers[1]", "not an IP"),
        ("logging: {format: xml}", "logging.format", "must be one of"),
        ("database: {pool_min: 5, pool_max: 2}", "database.pool_max", "at least pool_min"),
        ("pbx: [1, 2]", "pbx", "must be a mapping"),
        ("cdr: {source: csv}", "cdr.path", "required when cdr.source is csv"),
        ("cdr: {source: mysql}", "cdr.source", "must be one of"),
        ("cdr: {source: pgsql, dsn: x, table: 'cdr; drop'}", "cdr.table", "not a table name"),
    ],
)
def test_mistakes_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: {key}: ")
    assert reason in found[0]


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx: {region: XX, timezone: Nowhere}\nami: {port: x}\nfoo: 1\n")
    found = problems(path)
    assert len(found) == 4
    assert {p.split(": ")[1] for p in found} == {"pbx.region", "pbx.timezone", "ami.port", "foo"}


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx:\n  name: main\n  region: [ES\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: line ")
    assert "invalid YAML" in problem


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: config file not found"]
    (problem,) = problems(tmp_path)  # a folder is not a file
    assert "cannot read the config file" in problem


def test_require_dsn_explains_where_to_set_it(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "pbx: {name: x}"), {})
    with pytest.raises(ConfigError, match=r"database\.dsn: not set"):
        cfg.require_dsn()


def test_cli_prints_one_message_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "ami: {port: x}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ami_daemon.cli", "migrate", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "AMI_DAEMON_DSN": ""},
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: ami.port: must be an integer" in result.stderr
