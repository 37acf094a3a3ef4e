"""A TCP proxy in front of PostgreSQL that a test can cut and restore.

The shared PostgreSQL server must never be stopped (other tests and helpers
use it, and ``pg_ctl`` refuses to run as root anyway), so a database outage is
staged here instead: the daemon's DSN points at the proxy, and the test

- :meth:`PgProxy.cut` — every open connection is aborted (a TCP reset, as when
  the server process dies) and new connections are refused (the listening
  socket is closed: ``connection refused``, as when PostgreSQL is down);
- :meth:`PgProxy.restore` — listen again on the same port;
- :meth:`PgProxy.abort_matching` — abort only the connections whose first
  bytes (the startup packet: user and database names) contain a marker, e.g.
  the ``application_name`` of one daemon's writer lease.

Bytes are copied unchanged both ways; nothing is parsed beyond that check.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    startup: bytes = b""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


class PgProxy:
    """``async with PgProxy(host, port) as proxy``; ``proxy.dsn_for(dsn)`` rewrites a DSN."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        #: connections accepted and forwarded since the start (for tests)
        self.accepted = 0
        self.cuts = 0

    async def __aenter__(self) -> PgProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` (postgresql://user@host:port/db?…) with host and port of the proxy."""
        scheme, rest = dsn.split("://", 1)
        userinfo, _, hostpart = rest.rpartition("@")
        _, _, path = hostpart.partition("/")
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/{path}"

    async def cut(self) -> None:
        """PostgreSQL is gone: abort every connection, refuse new ones."""
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for pair in list(self._pairs):
            pair.abort()

    async def restore(self) -> None:
        """PostgreSQL is back on the same address."""
        if self._server is None:
            await self.start()

    def abort_matching(self, marker: bytes) -> int:
        """Abort the connections whose startup packet contains ``marker``; how many."""
        hit = [p for p in self._pairs if marker in p.startup]
        for pair in hit:
            pair.abort()
        return len(hit)

    async def close(self) -> None:
        await self.cut()
        # The handlers end by themselves once their sockets are aborted;
        # cancelling them would trip asyncio's start_server callback (3.11).
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair, record=True),
                self._pipe(up_reader, writer, pair, record=False),
            )
        finally:
            self._pairs.discard(pair)
            pair.abort()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, record: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if record and len(pair.startup) < 1024:
                    pair.startup += data[: 1024 - len(pair.startup)]
                writer.write(data)
                await writer.drain()
        # one side ended: end the other (half-close is not needed by the protocol)
        pair.abort()
