"""The config file and the environment, turned into one typed, immutable object.

The file is found at ``--config FILE``, else ``$AMI_DAEMON_CONFIG``, else
``/etc/ami-daemon/config.yaml``, else ``./config.yaml``; with none of them the
defaults apply.  ``AMI_DAEMON_DSN`` overrides ``database.dsn`` and
``AMI_DAEMON_AMI_SECRET`` overrides ``ami.secret``.

Every section has defaults except what a command really needs: ``ami-daemon
calls`` uses only ``pbx``, and a file holding nothing but a ``pbx:`` section is
a complete config for it.  Any mistake (an unknown key, a wrong type, a regex
that does not compile, a missing value, an unreadable file) raises
:class:`ConfigError`, whose message names the file, the key path and the
reason, and which the CLI prints instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ami_daemon import phones
from ami_daemon.config_location import ENV_CONFIG as ENV_CONFIG
from ami_daemon.config_location import find_config_file

ENV_DSN = "AMI_DAEMON_DSN"
ENV_AMI_SECRET = "AMI_DAEMON_AMI_SECRET"

DEFAULT_EMPLOYEE_CHANNELS = r"^(?:SIP|PJSIP|IAX2)/(?P<peer>[^-/;]+)-"
DEFAULT_TRUNK_CHANNELS = (r"^SIP/trunk-", r"^PJSIP/provider-")


class ConfigError(Exception):
    """One or more mistakes in a config file, each naming file, key and reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class PbxConfig:
    """How to read this PBX's channels (DESIGN "contract: config file").

    ``trunk_channels`` are regexes on channel names (``SIP/trunk-00000003``)
    for the outside world, tried first; ``employee_channels`` must capture the
    device in a group named ``peer``; ``peer_extensions`` maps a peer to its
    extension where they differ (cacofonisk's ``SIP/150010001`` is ``201``).
    A channel that matches neither (``Local/…``) is a helper to follow.
    """

    name: str = "default"
    region: str = "ES"
    timezone: str = "UTC"
    trunk_channels: tuple[re.Pattern[str], ...] = tuple(
        re.compile(p) for p in DEFAULT_TRUNK_CHANNELS
    )
    employee_channels: re.Pattern[str] = re.compile(DEFAULT_EMPLOYEE_CHANNELS)
    peer_extensions: Mapping[str, str] = field(default_factory=dict)
    outside_prefix: str = ""

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@dataclass(frozen=True)
class AmiConfig:
    """The Asterisk Manager connection (manager.conf user of the daemon)."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ami-daemon"
    secret: str = ""
    secret_file: Path | None = None
    connect_timeout: float = 5.0
    action_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    reconnect_max_delay: float = 30.0


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the CRM lives; ``dsn`` None means "not configured"."""

    dsn: str | None = None
    pool_min: int = 1
    pool_max: int = 4
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class AgiConfig:
    """The FastAGI server (``agi://HOST:4573/crm_lookup``) and the lookup budget."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 4573
    allowed_peers: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    time_budget_ms: int = 300
    cache_ttl: float = 5.0
    fail_fast_seconds: float = 5.0


@dataclass(frozen=True)
class RulesConfig:
    """Folder of the admin-edited rules (``*.yaml``, merged)."""

    path: Path = Path("rules")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 9105


@dataclass(frozen=True)
class SpoolConfig:
    path: Path = Path("/var/lib/ami-daemon/spool")
    warn_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True)
class CdrConfig:
    """Where Asterisk's CDRs can be read for the backfill after downtime.

    ``source``: ``none``, ``csv`` (``path`` to Master.csv of cdr_csv or our
    cdr_custom template) or ``pgsql`` (``dsn`` and ``table`` of cdr_pgsql).
    """

    source: str = "none"
    path: Path | None = None
    dsn: str | None = None
    table: str = "cdr"
    max_gap_hours: float = 24.0


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``source`` is the file it came from."""

    pbx: PbxConfig = field(default_factory=PbxConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    cdr: CdrConfig = field(default_factory=CdrConfig)
    source: Path | None = None

    def require_dsn(self) -> str:
        """The database DSN, or a ConfigError telling where to set it."""
        if not self.database.dsn:
            where = self.source or "config.yaml"
            raise ConfigError(
                [f"{where}: database.dsn: not set (set it in the file or in ${ENV_DSN})"]
            )
        return self.database.dsn

    def ami_secret(self) -> str:
        """The AMI password: ``ami.secret``, else the content of ``ami.secret_file``."""
        if self.ami.secret or self.ami.secret_file is None:
            return self.ami.secret
        try:
            return self.ami.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [
                    f"{self.source}: ami.secret_file: cannot read {self.ami.secret_file}: "
                    f"{exc.strerror}"
                ]
            ) from None


T = TypeVar("T")


class _Reader:
    """Reads one mapping of the YAML, collecting every problem with its key path."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(f"{self.where}: {path}: {reason}")

    def section(self, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a mapping, got {_kind(value)}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], path: str, known: set[str]) -> None:
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                hint = ", ".join(sorted(known))
                self.problem(where, f"unknown key (known keys: {hint})")

    def get(
        self,
        data: Mapping[str, Any],
        path: str,
        key: str,
        kind: type[T] | tuple[type, ...],
        default: T,
        check: Callable[[Any], str | None] | None = None,
    ) -> T:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        expected = kind if isinstance(kind, tuple) else (kind,)
        if float in expected and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in expected:
            self.problem(f"{path}.{key}", f"must be {_names(expected)}, got a boolean")
            return default
        if not isinstance(value, expected):
            self.problem(f"{path}.{key}", f"must be {_names(expected)}, got {_kind(value)}")
            return default
        if check is not None:
            reason = check(value)
            if reason:
                self.problem(f"{path}.{key}", reason)
                return default
        return value  # type: ignore[return-value]

    def regex(self, path: str, pattern: Any) -> re.Pattern[str] | None:
        if not isinstance(pattern, str):
            self.problem(path, f"must be a regex string, got {_kind(pattern)}")
            return None
        try:
            return re.compile(pattern)
        except re.error as exc:
            self.problem(path, f"invalid regex {pattern!r}: {exc}")
            return None


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _names(kinds: tuple[type, ...]) -> str:
    words = {
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a mapping",
    }
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else f"must be a TCP port (0-65535), got {value}"


def _timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown IANA time zone {value!r} (e.g. Europe/Madrid)"
    return None


def _region(value: Any) -> str | None:
    if phones.is_valid_region(value):
        return None
    return f"unknown region {value!r} (an ISO 3166 country code such as ES, DE, US)"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {value!r}"

    return check


def _digits(value: Any) -> str | None:
    return None if value == "" or value.isdigit() else f"must be digits only, got {value!r}"


def _read_pbx(r: _Reader, data: Mapping[str, Any]) -> PbxConfig:
    d = PbxConfig()
    section = r.section(data, "pbx")
    r.unknown(section, "pbx", {f for f in PbxConfig.__dataclass_fields__})
    name = r.get(section, "pbx", "name", str, d.name)
    region = r.get(section, "pbx", "region", str, d.region, _region).upper()
    tz = r.get(section, "pbx", "timezone", str, d.timezone, _timezone)
    trunks = d.trunk_channels
    raw_trunks = section.get("trunk_channels")
    if raw_trunks is not None:
        if isinstance(raw_trunks, str):
            raw_trunks = [raw_trunks]
        if not isinstance(raw_trunks, list):
            r.problem("pbx.trunk_channels", f"must be a list of regexes, got {_kind(raw_trunks)}")
        else:
            compiled = [r.regex(f"pbx.trunk_channels[{i}]", p) for i, p in enumerate(raw_trunks)]
            trunks = tuple(p for p in compiled if p is not None)
    employees = d.employee_channels
    if section.get("employee_channels") is not None:
        pattern = r.regex("pbx.employee_channels", section["employee_channels"])
        if pattern is not None:
            if "peer" not in pattern.groupindex:
                r.problem(
                    "pbx.employee_channels",
                    "the regex needs a group named 'peer', e.g. (?P<peer>[^-/;]+)",
                )
            else:
                employees = pattern
    peers: dict[str, str] = {}
    raw_peers = section.get("peer_extensions")
    if raw_peers is not None:
        if not isinstance(raw_peers, Mapping):
            r.problem(
                "pbx.peer_extensions", f"must be a mapping peer: extension, got {_kind(raw_peers)}"
            )
        else:
            for peer, ext in raw_peers.items():
                if not isinstance(ext, (str, int)) or isinstance(ext, bool):
                    r.problem(
                        f"pbx.peer_extensions.{peer}", f"must be an extension, got {_kind(ext)}"
                    )
                    continue
                peers[str(peer)] = str(ext)
    prefix = r.get(section, "pbx", "outside_prefix", (str, int), d.outside_prefix)
    prefix = str(prefix)
    if _digits(prefix):
        r.problem("pbx.outside_prefix", _digits(prefix) or "")
        prefix = ""
    return PbxConfig(name, region, tz, trunks, employees, peers, prefix)


def _read_ami(r: _Reader, data: Mapping[str, Any], env: Mapping[str, str]) -> AmiConfig:
    d = AmiConfig()
    s = r.section(data, "ami")
    r.unknown(s, "ami", set(AmiConfig.__dataclass_fields__))
    secret_file = r.get(s, "ami", "secret_file", str, "")
    return AmiConfig(
        host=r.get(s, "ami", "host", str, d.host),
        port=r.get(s, "ami", "port", int, d.port, _port),
        username=r.get(s, "ami", "username", str, d.username),
        secret=env.get(ENV_AMI_SECRET) or str(r.get(s, "ami", "secret", (str, int), d.secret)),
        secret_file=Path(secret_file) if secret_file else None,
        connect_timeout=r.get(s, "ami", "connect_timeout", float, d.connect_timeout, _positive),
        action_timeout=r.get(s, "ami", "action_timeout", float, d.action_timeout, _positive),
        ping_interval=r.get(s, "ami", "ping_interval", float, d.ping_interval, _positive),
        ping_timeout=r.get(s, "ami", "ping_timeout", float, d.ping_timeout, _positive),
        reconnect_max_delay=r.get(
            s, "ami", "reconnect_max_delay", float, d.reconnect_max_delay, _positive
        ),
    )


def _read_database(r: _Reader, data: Mapping[str, Any], env: Mapping[str, str]) -> DatabaseConfig:
    d = DatabaseConfig()
    s = r.section(data, "database")
    r.unknown(s, "database", set(DatabaseConfig.__dataclass_fields__))
    dsn: str | None = r.get(s, "database", "dsn", str, "") or None
    if env.get(ENV_DSN):
        dsn = env[ENV_DSN]
    pool_min = r.get(s, "database", "pool_min", int, d.pool_min, _positive)
    pool_max = r.get(s, "database", "pool_max", int, d.pool_max, _positive)
    if pool_max < pool_min:
        r.problem("database.pool_max", f"must be at least pool_min ({pool_min}), got {pool_max}")
        pool_max = pool_min
    return DatabaseConfig(
        dsn=dsn,
        pool_min=pool_min,
        pool_max=pool_max,
        connect_timeout=r.get(
            s, "database", "connect_timeout", float, d.connect_timeout, _positive
        ),
    )


def _read_agi(r: _Reader, data: Mapping[str, Any]) -> AgiConfig:
    d = AgiConfig()
    s = r.section(data, "agi")
    r.unknown(s, "agi", set(AgiConfig.__dataclass_fields__))
    peers = d.allowed_peers
    raw = s.get("allowed_peers")
    if raw is not None:
        if not isinstance(raw, list):
            r.problem(
                "agi.allowed_peers", f"must be a list of addresses or networks, got {_kind(raw)}"
            )
        else:
            good = []
            for i, item in enumerate(raw):
                try:
                    good.append(str(ipaddress.ip_network(str(item), strict=False)))
                except ValueError:
                    r.problem(f"agi.allowed_peers[{i}]", f"not an IP address or network: {item!r}")
            peers = tuple(good)
    return AgiConfig(
        enabled=r.get(s, "agi", "enabled", bool, d.enabled),
        bind=r.get(s, "agi", "bind", str, d.bind),
        port=r.get(s, "agi", "port", int, d.port, _port),
        allowed_peers=peers,
        time_budget_ms=r.get(s, "agi", "time_budget_ms", int, d.time_budget_ms, _positive),
        cache_ttl=r.get(s, "agi", "cache_ttl", float, d.cache_ttl),
        fail_fast_seconds=r.get(s, "agi", "fail_fast_seconds", float, d.fail_fast_seconds),
    )


def _read_simple_sections(
    r: _Reader, data: Mapping[str, Any], base: Path
) -> tuple[RulesConfig, LoggingConfig, MetricsConfig, SpoolConfig]:
    s = r.section(data, "rules")
    r.unknown(s, "rules", {"path"})
    rules_path = Path(r.get(s, "rules", "path", str, str(RulesConfig.path)))
    if not rules_path.is_absolute():
        rules_path = base / rules_path
    s = r.section(data, "logging")
    r.unknown(s, "logging", {"level", "format"})
    logging_cfg = LoggingConfig(
        level=r.get(
            s, "logging", "level", str, "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR")
        ),
        format=r.get(s, "logging", "format", str, "text", _one_of("text", "json")),
    )
    s = r.section(data, "metrics")
    r.unknown(s, "metrics", {"enabled", "bind", "port"})
    metrics = MetricsConfig(
        enabled=r.get(s, "metrics", "enabled", bool, True),
        bind=r.get(s, "metrics", "bind", str, "127.0.0.1"),
        port=r.get(s, "metrics", "port", int, 9105, _port),
    )
    s = r.section(data, "spool")
    r.unknown(s, "spool", {"path", "warn_bytes"})
    spool_path = Path(r.get(s, "spool", "path", str, str(SpoolConfig.path)))
    if not spool_path.is_absolute():
        spool_path = base / spool_path
    spool = SpoolConfig(
        path=spool_path,
        warn_bytes=r.get(s, "spool", "warn_bytes", int, SpoolConfig.warn_bytes, _positive),
    )
    return RulesConfig(rules_path), logging_cfg, metrics, spool


SECTIONS = {"pbx", "ami", "database", "agi", "rules", "logging", "metrics", "spool", "cdr"}


def _read_cdr(r: _Reader, data: Mapping[str, Any], base: Path) -> CdrConfig:
    d = CdrConfig()
    s = r.section(data, "cdr")
    r.unknown(s, "cdr", set(CdrConfig.__dataclass_fields__))
    source = r.get(s, "cdr", "source", str, d.source, _one_of("none", "csv", "pgsql"))
    raw_path = r.get(s, "cdr", "path", str, "")
    path = Path(raw_path) if raw_path else None
    if path is not None and not path.is_absolute():
        path = base / path
    dsn = r.get(s, "cdr", "dsn", str, "") or None
    table = r.get(s, "cdr", "table", str, d.table)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?", table):
        r.problem("cdr.table", f"not a table name: {table!r}")
        table = d.table
    if source == "csv" and path is None:
        r.problem("cdr.path", "required when cdr.source is csv (the Master.csv file)")
    if source == "pgsql" and dsn is None:
        r.problem("cdr.dsn", "required when cdr.source is pgsql")
    return CdrConfig(
        source=source,
        path=path,
        dsn=dsn,
        table=table,
        max_gap_hours=r.get(s, "cdr", "max_gap_hours", float, d.max_gap_hours, _positive),
    )


def parse(data: Any, where: str, base: Path, env: Mapping[str, str]) -> Config:
    """Validate already-loaded YAML ``data``; ``where`` names it in messages."""
    problems: list[str] = []
    r = _Reader(where, problems)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"{where}: the file must hold a mapping of sections, got {_kind(data)}"])
    r.unknown(data, "", SECTIONS)
    pbx = _read_pbx(r, data)
    ami = _read_ami(r, data, env)
    database = _read_database(r, data, env)
    agi = _read_agi(r, data)
    rules, logging_cfg, metrics, spool = _read_simple_sections(r, data, base)
    cdr = _read_cdr(r, data, base)
    if problems:
        raise ConfigError(problems)
    return Config(pbx, ami, database, agi, rules, logging_cfg, metrics, spool, cdr, None)


def load(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Find, read and validate the config; raise ConfigError naming file and key."""
    env = os.environ if env is None else env
    path = find_config_file(explicit, env)
    if path is None:
        return parse({}, "(defaults)", Path.cwd(), env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise ConfigError([f"{path}: cannot read the config file: {reason}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: {line}invalid YAML: {problem}"]) from None
    config = parse(data, str(path), path.resolve().parent, env)
    return dataclasses.replace(config, source=path)
