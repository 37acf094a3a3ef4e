"""A FastAGI server on ``asyncio.start_server``, safe against clients that misbehave.

Asterisk's ``AGI(agi://host:4573/crm_lookup)`` opens a TCP connection, writes
the ``agi_*`` environment and a blank line, then waits for commands; the
session ends when the server closes the connection, and the dialplan goes on.

panoramisk's ``fast_agi`` spins forever, stalling the whole event loop, when a
client closes before the end of the environment (STACK.md): its read loop
never notices end of file.  Here every read has a deadline and end of file
ends the session: a port scan, a health check that connects and leaves, a
half-written environment, a client that sends nothing, an environment larger than
:data:`~.protocol.MAX_ENV_BYTES` — each costs one log line and one closed
socket; other sessions and the rest of the daemon never wait for it.

Peers outside ``allowed_peers`` are closed before anything is read.  Routes are
an explicit table ``{"crm_lookup": coroutine}`` (STYLE 7), chosen by the path of
``agi_network_script``; an unknown script is logged and closed.

Embedding (the daemon runs it in-process)::

    server = FastAgiServer({"crm_lookup": lookup.route}, bind="127.0.0.1", port=4573)
    await server.start()      # listening; server.port is the bound port
    ...
    await server.close()      # stop accepting, end open sessions
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from ami_daemon.agi.lookup import AgiHangup
from ami_daemon.agi.protocol import (
    MAX_ENV_BYTES,
    AgiEnvironment,
    AgiResponse,
    BadEnvironment,
    EnvironmentParser,
    get_variable_command,
    parse_response,
    set_variable_command,
)
from ami_daemon.agi.variables import FASTAGI_PORT

log = logging.getLogger("ami_daemon.agi.server")

#: Lines that are no answer (leftovers of a cut-short environment) skipped at most.
MAX_SKIPPED_LINES = 250

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class StreamChannel:
    """AGI commands over one FastAGI connection (implements ``lookup.AgiChannel``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def command(self, text: str) -> AgiResponse:
        """Send one command line and read Asterisk's answer (AgiHangup when gone).

        No timer per command (they cost more than the rest of the dialogue): the
        session's own deadline bounds a silent Asterisk.
        """
        try:
            self._writer.write(text.encode("utf-8") + b"\n")
            await self._writer.drain()
            return await self._read_response()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise AgiHangup(f"connection lost: {exc!r}") from None

    async def _read_response(self) -> AgiResponse:
        skipped = 0
        while True:
            line = await _readline(self._reader)
            if line is None:
                raise AgiHangup("Asterisk closed the connection")
            if line.strip() == "HANGUP":
                raise AgiHangup("the caller hung up")
            response = parse_response(line)
            if response is None:
                skipped += 1
                if skipped > MAX_SKIPPED_LINES:
                    raise AgiHangup("no AGI answer among the lines received")
                continue
            if response.text.startswith("-"):  # "520-Invalid command syntax…" block
                continue
            if response.code == 511:
                raise AgiHangup("dead channel (511)")
            return response

    async def get_variable(self, name: str) -> str | None:
        return (await self.command(get_variable_command(name))).variable()

    async def set_variable(self, name: str, value: str) -> None:
        response = await self.command(set_variable_command(name, value))
        if not response.ok:
            log.warning(
                "Asterisk refused SET VARIABLE %s: %s %s", name, response.code, response.text
            )


async def _readline(reader: asyncio.StreamReader) -> str | None:
    """One line without its newline; None at end of file (also after a partial line)."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise BadEnvironment(f"a line longer than {MAX_ENV_BYTES} bytes") from None
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


async def read_environment(reader: asyncio.StreamReader, timeout: float) -> AgiEnvironment | None:
    """The ``agi_*`` block, or None when the client left before its blank line.

    One read up to the first blank line (``\\n\\n``), bounded by the reader's
    limit (:data:`~.protocol.MAX_ENV_BYTES`), then parsed line by line.
    """
    async with asyncio.timeout(timeout):
        try:
            raw = await reader.readuntil(b"\n\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise BadEnvironment(f"no end of the environment in {MAX_ENV_BYTES} bytes") from None
    parser = EnvironmentParser()
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if parser.feed(line):
            break
    return parser.result()


@dataclass(frozen=True)
class AgiSession:
    """One FastAGI connection handed to a route."""

    env: AgiEnvironment
    channel: StreamChannel
    peer: str


Route = Callable[[AgiSession], Awaitable[object]]


def _networks(allowed: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(a, strict=False) for a in allowed)


class FastAgiServer:
    """Serve ``routes`` on ``bind:port``; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        bind: str = "127.0.0.1",
        port: int = FASTAGI_PORT,
        allowed_peers: Iterable[str] = ("127.0.0.1/32", "::1/128"),
        env_timeout: float = 5.0,
        session_timeout: float = 10.0,
        max_sessions: int = 256,
    ) -> None:
        self.routes = dict(routes)
        self.bind = bind
        self._port = port
        self._allowed = _networks(allowed_peers)
        self._env_timeout = env_timeout
        self._session_timeout = session_timeout
        self._max_sessions = max_sessions
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.served = 0

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.bind, self._port, limit=MAX_ENV_BYTES, reuse_address=True
        )
        log.info(
            "FastAGI listening on %s:%d (routes: %s)", self.bind, self.port, ", ".join(self.routes)
        )

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; give open sessions ``grace`` seconds, then cancel them."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=grace)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=1.0)
        if server is not None:
            await server.wait_closed()

    def allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        peer = f"{host}:{peername[1]}" if peername else "?"
        if not self.allowed(host):
            self.refused += 1
            log.warning("FastAGI: refused %s (not in agi.allowed_peers)", peer)
            writer.transport.abort()
            return
        if len(self._sessions) >= self._max_sessions:
            self.refused += 1
            log.warning("FastAGI: refused %s: %d sessions open", peer, len(self._sessions))
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None  # always inside start_server's task
        self._sessions.add(task)
        try:
            async with asyncio.timeout(self._session_timeout):
                await self._session(reader, writer, peer)
        except TimeoutError:
            log.warning(
                "FastAGI %s: session longer than %.0f s, closed", peer, self._session_timeout
            )
        except AgiHangup as exc:
            log.info("FastAGI %s: %s", peer, exc)
        except (ConnectionError, BadEnvironment) as exc:
            log.warning("FastAGI %s: %s", peer, exc)
        except asyncio.CancelledError:
            log.info("FastAGI %s: cancelled at shutdown", peer)
        except Exception:
            log.exception("FastAGI %s: session failed", peer)
        finally:
            self._sessions.discard(task)
            writer.close()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        try:
            env = await read_environment(reader, self._env_timeout)
        except TimeoutError:
            log.warning(
                "FastAGI %s: no complete AGI environment within %.1f s", peer, self._env_timeout
            )
            return
        if env is None:
            log.info("FastAGI %s: closed before the end of the AGI environment", peer)
            return
        route = self.routes.get(env.script or "")
        if route is None:
            log.warning(
                "FastAGI %s: unknown script %r (known: %s)",
                peer,
                env.script,
                ", ".join(self.routes),
            )
            return
        self.served += 1
        await route(AgiSession(env, StreamChannel(reader, writer), peer))
