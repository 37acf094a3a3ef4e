"""What the classic AGI script needs from the config and the rules, read cheaply.

Asterisk starts one process per call, so every import counts (STACK.md: the
interpreter with asyncpg and phonenumbers alone is ~100 ms).  Validating the
config and the rules needs PyYAML and the rules package (+25–40 ms), for six
values and a routing table.  So the first call after a change reads them the
normal way (:func:`ami_daemon.config.load`, the rules loader) and writes what
it needs as a small JSON file; later calls read that file after checking, with
a few ``stat`` calls, that neither the config file nor any rule file changed
(size, modification time, inode).  ``AMI_DAEMON_DSN`` is read from the
environment on every call and never cached.

The cache lives in ``$AMI_DAEMON_AGI_CACHE_DIR``, else
``$TMPDIR/ami-daemon-agi-<uid>`` (``/tmp`` by default), a folder of the user
Asterisk runs as, mode 0700; one that is not owned by that user or is writable
by others is not used (every call then reads the YAML).  Set the variable to
``off`` to disable the cache.  Broken rules are never cached: each call reads
them again and logs why they are broken, with routing off meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ami_daemon.agi.routing import RoutingTable, rules_signature
from ami_daemon.config_location import find_config_file

log = logging.getLogger("ami_daemon.agi.classic")

# As in ami_daemon.config (not imported: it pulls in PyYAML).
ENV_DSN = "AMI_DAEMON_DSN"
ENV_CACHE_DIR = "AMI_DAEMON_AGI_CACHE_DIR"
FORMAT = 1


@dataclass(frozen=True)
class ClassicSettings:
    """The config values and the routing table one classic lookup uses."""

    dsn: str | None
    connect_timeout: float
    time_budget: float  # seconds
    region: str
    trunk_channels: tuple[str, ...]
    routing: RoutingTable
    source: str | None
    from_cache: bool = False


def find_config(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """DESIGN's order: the script's argument, ``$AMI_DAEMON_CONFIG``, the default places."""
    return find_config_file(explicit, env)


def load(explicit: str | None, env: Mapping[str, str]) -> ClassicSettings:
    """The settings, from the cache when still valid; ConfigError on a bad config."""
    path = find_config(explicit, env)
    key = _file_key(path)
    cache = _cache_file(path, env)
    settings = _read_cache(cache, key) if cache is not None else None
    if settings is None:
        settings, data = _load_slow(path)
        if cache is not None and data is not None:
            data["config_key"] = key
            _write_cache(cache, data)
    dsn = env.get(ENV_DSN) or settings.dsn
    return ClassicSettings(
        dsn,
        settings.connect_timeout,
        settings.time_budget,
        settings.region,
        settings.trunk_channels,
        settings.routing,
        settings.source,
        settings.from_cache,
    )


def _file_key(path: Path | None) -> list[Any]:
    if path is None:
        return ["(defaults)", os.getcwd()]
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ino]


def _load_slow(path: Path | None) -> tuple[ClassicSettings, dict[str, Any] | None]:
    """Read config and rules the full way; the dict to cache (None: don't cache)."""
    from ami_daemon import config as config_module

    cfg = config_module.load(path, env={}) if path is not None else config_module.load(None, {})
    from ami_daemon.rules.loader import try_load_rules

    rules, problems = try_load_rules(cfg.rules.path, cfg.pbx.region)
    cacheable = rules is not None
    if rules is None:
        shown = "; ".join(str(p) for p in problems[:5])
        log.warning("rules %s not usable, routing off: %s", cfg.rules.path, shown)
        routing = RoutingTable()
    else:
        routing = RoutingTable.from_ruleset(rules)
    settings = ClassicSettings(
        dsn=cfg.database.dsn,
        connect_timeout=cfg.database.connect_timeout,
        time_budget=cfg.agi.time_budget_ms / 1000.0,
        region=cfg.pbx.region,
        trunk_channels=tuple(p.pattern for p in cfg.pbx.trunk_channels),
        routing=routing,
        source=str(path) if path else None,
    )
    if not cacheable:
        return settings, None
    data = {
        "format": FORMAT,
        "dsn": settings.dsn,
        "connect_timeout": settings.connect_timeout,
        "time_budget": settings.time_budget,
        "region": settings.region,
        "trunk_channels": list(settings.trunk_channels),
        "routing": routing.to_json(),
        "source": settings.source,
        "rules_path": str(cfg.rules.path),
        "rules_key": rules_signature(cfg.rules.path),
    }
    return settings, data


def _cache_file(path: Path | None, env: Mapping[str, str]) -> Path | None:
    folder_setting = env.get(ENV_CACHE_DIR, "")
    if folder_setting.lower() == "off":
        return None
    uid = os.getuid()
    folder = Path(folder_setting or Path(env.get("TMPDIR") or "/tmp") / f"ami-daemon-agi-{uid}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        log.warning("AGI settings cache %s is not a private folder: not used", folder)
        return None
    name = str(path.absolute()) if path is not None else f"defaults{os.getcwd()}"
    return folder / (name.strip("/").replace("/", "%") + ".json")


def _read_cache(cache: Path, key: list[Any]) -> ClassicSettings | None:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("config_key") != key:
            return None
        if rules_signature(Path(data["rules_path"])) != data["rules_key"]:
            return None
        return ClassicSettings(
            dsn=data["dsn"],
            connect_timeout=float(data["connect_timeout"]),
            time_budget=float(data["time_budget"]),
            region=str(data["region"]),
            trunk_channels=tuple(data["trunk_channels"]),
            routing=RoutingTable.from_json(data["routing"]),
            source=data["source"],
            from_cache=True,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cache(cache: Path, data: dict[str, Any]) -> None:
    temporary = cache.with_name(f".{cache.name}.{os.getpid()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, cache)
    except OSError as exc:
        log.warning("cannot write the AGI settings cache %s: %s", cache, exc)
        with contextlib.suppress(OSError):
            temporary.unlink()
