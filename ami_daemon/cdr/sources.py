"""Reading CDR records of a time window from where Asterisk writes them."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from ami_daemon.cdr.records import CdrRecord, from_table_rows, parse_csv
from ami_daemon.config import CdrConfig
from ami_daemon.crm import db
from ami_daemon.errors import UserError

#: Legs of a call can start a while after the call did (transfers, callbacks).
LEG_MARGIN = timedelta(hours=2)


class CdrUnavailable(UserError):
    """The CDR source is not configured or cannot be read; the message says which."""


def read_csv_file(path: Path, zone: ZoneInfo) -> tuple[list[CdrRecord], list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CdrUnavailable(f"cannot read CDR file {path}: {exc.strerror or exc}") from None
    return parse_csv(text, zone, str(path))


async def read_pgsql(
    dsn: str, table: str, since: datetime, until: datetime, zone: ZoneInfo
) -> tuple[list[CdrRecord], list[str]]:
    """Rows of ``table`` whose call started in the window (plus a margin for late legs)."""
    try:
        conn = await db.connect(dsn)
    except db.DatabaseUnavailable as exc:
        raise CdrUnavailable(f"CDR database: {exc}") from None
    try:
        rows = await conn.fetch(
            f"SELECT * FROM {table} WHERE calldate >= $1 AND calldate < $2 ORDER BY calldate",
            since,
            until + LEG_MARGIN,
        )
    except asyncpg.PostgresError as exc:
        raise CdrUnavailable(f"CDR table {table}: {exc}") from None
    finally:
        await conn.close()
    return from_table_rows([dict(r) for r in rows], zone, f"{table}")


async def read_records(
    cfg: CdrConfig, since: datetime, until: datetime, zone: ZoneInfo
) -> tuple[list[CdrRecord], list[str]]:
    """CDR records around [since, until) from the configured source."""
    if cfg.source == "csv" and cfg.path is not None:
        return read_csv_file(cfg.path, zone)
    if cfg.source == "pgsql" and cfg.dsn is not None:
        return await read_pgsql(cfg.dsn, cfg.table, since, until, zone)
    raise CdrUnavailable("no CDR source configured (config.yaml: cdr.source csv or pgsql)")
