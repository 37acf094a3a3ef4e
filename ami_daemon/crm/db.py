"""Connecting to PostgreSQL, with one error type a person can act on."""

from __future__ import annotations

from typing import Any

import asyncpg

from ami_daemon.errors import UserError


class DatabaseUnavailable(UserError):
    """PostgreSQL could not be reached or refused us; the message says which DSN."""


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else dsn


def with_database(dsn: str, name: str) -> str:
    """The same DSN pointing at database ``name`` (a query such as ``?host=/tmp`` kept)."""
    main, sep, query = dsn.partition("?")
    return f"{main.rsplit('/', 1)[0]}/{name}{sep}{query}"


async def connect(dsn: str, timeout: float = 5.0, **kwargs: Any) -> asyncpg.Connection:
    """One connection, or DatabaseUnavailable naming the DSN and the reason."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout, **kwargs)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact(dsn)}: {reason}") from None
