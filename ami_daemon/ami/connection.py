"""The live link to Asterisk's manager interface (AMI), on panoramisk.

One :class:`AmiConnection` holds one manager session and keeps it up:

* **Login is checked.**  Asterisk answers a refused login with
  ``Response: Error`` / ``Message: Authentication failed`` and then closes
  the socket; panoramisk ignores the answer.  Here the first refusal raises
  :class:`AmiLoginError` from :meth:`AmiConnection.start` (a wrong
  ``manager.conf`` secret is a configuration error, retrying cannot fix it);
  a refusal after a reconnect is logged and retried with backoff (an admin
  may be changing the secret).
* **Reconnects with exponential backoff** (0.5 s doubling up to
  ``ami.reconnect_max_delay``) whenever the link drops: Asterisk restarted
  (it sends ``Event: Shutdown`` first), the network failed, or the keepalive
  found the link dead.
* **Keepalive.**  A TCP connection whose peer vanished (cable, NAT timeout,
  frozen Asterisk) stays "open" for a long time and panoramisk never checks
  that its Pings are answered.  Every ``ping_interval`` seconds a ``Ping``
  must be answered within ``ping_timeout``, else the link is aborted and
  re-established.
* **Every action has a timeout** (``asyncio.wait_for``), ``Originate`` always
  carries ``Async: true``.
* **Arrival order.**  The protocol hands each event to one synchronous
  hook that only appends it to an in-memory inbox; the owner reads it with
  :meth:`AmiConnection.stream`, from ONE task, in arrival order.  Link
  changes are put in the same inbox as :class:`LinkUp` / :class:`LinkDown`
  markers, exactly between the events of the old and of the new session, so
  the owner can reconcile (``CoreShowChannels``) at the right point of the
  stream.  ``LinkUp`` is enqueued synchronously when the login answer is
  parsed, before any event of the new session.
* **Channel snapshots** (``snapshot=True``): after every login the
  connection asks ``CoreShowChannels`` and puts the answer in the stream as a
  :class:`ChannelSnapshot` at the exact point where Asterisk wrote it, so the
  owner reconciles a reconnect (``Tracker.end_missing``) without racing the
  events that keep arriving.  If the link fails before the list is complete,
  the session has no snapshot (its ``LinkDown`` follows).
* **FullyBooted.**  Asterisk sends ``Event: FullyBooted`` right after a login
  when it has finished starting, or later when a login happened while it was
  still booting (the AMI port opens early).  The event is passed on in the
  stream and :meth:`AmiConnection.wait_fully_booted` waits for it: channel
  snapshots taken before it may be incomplete.

The raw bytes of every read can be observed (``on_bytes``) to record a
capture, and extra synchronous ``observers`` can see each event (metrics);
both are guarded: whatever they raise is logged, never reaches the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from panoramisk.message import Message

from ami_daemon.ami.protocol import (
    AmiActionTimeout,
    AmiConnectionLost,
    AmiError,
    AmiManager,
    AmiNotConnected,
    AmiProtocol,
)
from ami_daemon.ami.reader import AmiMessage, Malformed
from ami_daemon.config import AmiConfig

__all__ = [
    "AmiActionTimeout",
    "AmiConnection",
    "AmiConnectionLost",
    "AmiError",
    "AmiLoginError",
    "AmiNotConnected",
    "ChannelSnapshot",
    "Event",
    "LinkDown",
    "LinkUp",
    "OriginateResult",
    "StreamItem",
]

log = logging.getLogger(__name__)

#: First reconnect delay; doubled after every failed attempt up to the cap.
INITIAL_BACKOFF = 0.5
#: Events kept by any event filter: the connection itself needs them.
ALWAYS_WANTED = frozenset({"FullyBooted", "Shutdown"})
#: Inbox length above which a slow consumer is reported (events are never dropped).
INBOX_WARN = 100_000


class AmiLoginError(AmiError):
    """Asterisk refused the login (manager.conf user, secret or permit/deny)."""


#: One event as received: the message and the local clock (``time.time()``) of its TCP read.
Event = tuple[AmiMessage, float]


@dataclass(frozen=True)
class LinkUp:
    """A manager session is logged in; events that follow belong to it.

    ``session`` counts successful logins from 1: ``session > 1`` means a
    reconnect, and events may have been missed while the link was down.
    """

    session: int
    banner: str | None
    at: float

    @property
    def reconnect(self) -> bool:
        return self.session > 1


@dataclass(frozen=True)
class LinkDown:
    """The session ended; no event is received until the next :class:`LinkUp`."""

    session: int
    reason: str
    at: float


@dataclass(frozen=True)
class ChannelSnapshot:
    """The channels Asterisk had, placed in the stream exactly where Asterisk said so.

    With ``snapshot=True`` the connection asks ``CoreShowChannels`` after
    every login.  Asterisk writes the list between the events of the session:
    events before this marker happened before the list was taken, events
    after it happened after.  A consumer that applies it in order can
    reconcile a reconnect without races: a channel missing here and not
    created by an event after it ended while the link was down.
    ``channels`` are the ``CoreShowChannel`` events (``Uniqueid``,
    ``Linkedid``, ``Channel``, ``ChannelStateDesc``, ``BridgeId``,
    ``Duration``…).
    """

    session: int
    channels: tuple[Mapping[str, str], ...]
    at: float

    @property
    def uniqueids(self) -> frozenset[str]:
        return frozenset(c["Uniqueid"] for c in self.channels if "Uniqueid" in c)

    @property
    def reconnect(self) -> bool:
        return self.session > 1


StreamItem = Event | LinkUp | LinkDown | ChannelSnapshot


@dataclass(frozen=True)
class OriginateResult:
    """What Asterisk said about an ``Originate``.

    ``queued``: Asterisk accepted the request (``Response: Success``,
    ``Originate successfully queued``).  ``answered``: the ``OriginateResponse``
    event said ``Response: Success``, i.e. the first leg answered; ``reason``
    is Asterisk's code (4 answered, 5 busy, 8 congestion, 3 no answer, 0
    failed or no such extension).
    """

    queued: bool
    answered: bool
    reason: str
    uniqueid: str | None
    message: str
    responses: tuple[Mapping[str, Any], ...]


class _Inbox:
    """Single-consumer FIFO between the protocol callback and the owner's task."""

    def __init__(self) -> None:
        self.items: deque[StreamItem] = deque()
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._warned = False

    def put(self, item: StreamItem) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self.items) > INBOX_WARN and not self._warned:
            self._warned = True
            log.warning("%d AMI events wait for the consumer: it is too slow", len(self.items))

    def close(self) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self.items or self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if len(self.items) < INBOX_WARN // 2:
            self._warned = False


class AmiConnection:
    """A manager session to Asterisk that reconnects by itself.

    Create it inside the running loop, ``await start()``, consume
    :meth:`stream` from one task, ``await close()`` at the end.  ``events``
    is the Login ``Events`` value (``on``, ``off`` or a list of classes such
    as ``call,agent``); ``event_filter`` optionally restricts the session to
    these event names with an Asterisk ``Filter`` action (less traffic; the
    tracker's ``handled_events()`` is the list to give); ``snapshot`` puts a
    :class:`ChannelSnapshot` in the stream after every login.
    """

    def __init__(
        self,
        config: AmiConfig,
        secret: str | None = None,
        *,
        events: str = "on",
        event_filter: Iterable[str] | None = None,
        md5: bool = False,
        snapshot: bool = False,
        on_bytes: Callable[[bytes], None] | None = None,
        observers: Sequence[Callable[[AmiMessage], None]] = (),
        name: str = "ami",
        initial_backoff: float = INITIAL_BACKOFF,
    ) -> None:
        self.config = config
        self._secret = config.secret if secret is None else secret
        self._events = events
        self._filter = (
            sorted(set(event_filter) | ALWAYS_WANTED) if event_filter is not None else None
        )
        self._md5 = md5
        self._snapshot = snapshot
        self._on_bytes = on_bytes
        self._observers = tuple(observers)
        self.name = name
        self._initial_backoff = initial_backoff
        #: the last reconnect delays (before a random cut of up to 20%), newest last
        self.backoff_delays: deque[float] = deque(maxlen=20)
        self._inbox = _Inbox()
        self._manager: AmiManager | None = None
        self._protocol: AmiProtocol | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._closing = False
        self._session_up = False
        self._fully_booted = asyncio.Event()
        #: successful logins so far (1 = first session, more = reconnects)
        self.sessions = 0
        #: connection attempts that failed (refused, unreachable, timed out)
        self.failed_attempts = 0
        #: events received over all sessions
        self.events_received = 0
        #: problems in the byte stream (malformed messages), with offsets
        self.malformed = 0
        self.banner: str | None = None

    # ----------------------------------------------------------------- life cycle

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    @property
    def fully_booted(self) -> bool:
        return self._fully_booted.is_set()

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def start(self) -> None:
        """Connect and log in; return once the first session is up.

        Raises :class:`AmiLoginError` when Asterisk refuses the credentials.
        An unreachable Asterisk is retried with backoff until it answers (the
        daemon may start before the PBX); wrap in ``wait_for`` to bound it.
        """
        if self._supervisor is not None:
            raise RuntimeError("AmiConnection.start() called twice")
        loop = asyncio.get_running_loop()
        self._manager = AmiManager(
            host=self.config.host, port=self.config.port, events=self._events
        )
        self._started = loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")
        try:
            await asyncio.shield(self._started)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Log off (bounded by the action timeout), stop reconnecting, end the stream."""
        self._closing = True
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            with contextlib.suppress(AmiError, OSError):
                await self.send_action({"Action": "Logoff"}, timeout=min(1.0, self._timeout()))
            protocol.close()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("closed")
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._started is not None and not self._started.done():
            self._started.set_exception(
                AmiNotConnected(f"closed before Asterisk at {self.where} answered")
            )
            self._started.exception()  # retrieved here if start() is no longer waiting
        self._inbox.close()

    async def stream(self) -> AsyncIterator[StreamItem]:
        """Every event and link change in arrival order; ends after :meth:`close`.

        Read it from exactly one task.  Events are ``(AmiMessage, received_at)``
        tuples; :class:`LinkUp` / :class:`LinkDown` mark session boundaries.
        """
        inbox = self._inbox
        items = inbox.items
        while True:
            while items:
                yield items.popleft()
            if inbox.closed:
                return
            await inbox.wait()

    async def events(self) -> AsyncIterator[Event]:
        """Only the events of :meth:`stream` (link markers are logged, not yielded)."""
        async for item in self.stream():
            if type(item) is tuple:
                yield item
            else:
                log.info("%s: %s", self.name, item)

    async def wait_fully_booted(self, timeout: float | None = None) -> None:
        """Wait until the current session has seen ``Event: FullyBooted``."""
        await asyncio.wait_for(self._fully_booted.wait(), timeout)

    # ----------------------------------------------------------------- actions

    def _timeout(self) -> float:
        return self.config.action_timeout

    async def send_action(
        self,
        action: Mapping[str, Any],
        *,
        timeout: float | None = None,
        as_list: bool | None = None,
    ) -> Any:
        """Send one action; return panoramisk's answer (a Message, or a list for lists).

        Raises :class:`AmiNotConnected`, :class:`AmiActionTimeout` (after
        ``timeout`` seconds, default ``ami.action_timeout``) or
        :class:`AmiConnectionLost` (the link fell before the answer).
        """
        manager = self._manager
        if manager is None or not self.connected:
            raise AmiNotConnected(f"not connected to Asterisk at {self.where}")
        future = manager.send_action(action, as_list=as_list)
        limit = self._timeout() if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            protocol = self._protocol
            if protocol is not None:
                for key in [k for k, v in protocol.responses.items() if v.future is future]:
                    protocol.responses.pop(key, None)
            name = action.get("Action") or action.get("action")
            raise AmiActionTimeout(
                f"Asterisk at {self.where} did not answer {name} within {limit:g} s"
            ) from None

    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of one ``Ping`` in seconds."""
        t0 = time.monotonic()
        await self.send_action(
            {"Action": "Ping"}, timeout=self.config.ping_timeout if timeout is None else timeout
        )
        return time.monotonic() - t0

    async def core_show_channels(self, timeout: float | None = None) -> list[Mapping[str, Any]]:
        """The channels Asterisk has now: one ``CoreShowChannel`` event each.

        Asterisk answers ``Response: Success`` / ``EventList: start``, then one
        ``CoreShowChannel`` per channel and ``CoreShowChannelsComplete`` with
        ``ListItems``; all carry the action's ActionID.
        """
        answer = await self.send_action(
            {"Action": "CoreShowChannels"}, timeout=timeout, as_list=True
        )
        replies = answer if isinstance(answer, list) else [answer]
        first = replies[0]
        if "Response" in first and not first.success:
            raise AmiError(f"CoreShowChannels refused: {first.get('Message', '')}")
        return [dict(m) for m in replies if m.get("Event") == "CoreShowChannel"]

    async def originate(
        self,
        channel: str,
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: str | int = 1,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        ring_timeout: float = 30.0,
        account: str | None = None,
    ) -> OriginateResult:
        """Originate a call (click-to-dial), always with ``Async: true``.

        Asterisk first rings ``channel``; when it answers, the channel goes to
        ``context``/``exten``/``priority`` (or runs ``application``).  The
        answer is awaited until the ``OriginateResponse`` event, i.e. up to
        ``ring_timeout`` plus the action timeout.
        """
        action: dict[str, Any] = {
            "Action": "Originate",
            "Channel": channel,
            "Async": "true",
            "Timeout": str(int(ring_timeout * 1000)),
        }
        if application is not None:
            action["Application"] = application
            if data is not None:
                action["Data"] = data
        else:
            if context is None or exten is None:
                raise ValueError("originate needs context and exten, or an application")
            action.update(Context=context, Exten=exten, Priority=str(priority))
        if caller_id is not None:
            action["CallerID"] = caller_id
        if account is not None:
            action["Account"] = account
        if variables:
            action["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        answer = await self.send_action(action, timeout=ring_timeout + self._timeout())
        replies: list[Message] = answer if isinstance(answer, list) else [answer]
        first = replies[0]
        final = next((m for m in replies if m.get("Event") == "OriginateResponse"), None)
        return OriginateResult(
            queued=bool(first.success),
            answered=final is not None and final.get("Response") == "Success",
            reason=str(final.get("Reason", "")) if final is not None else "",
            uniqueid=final.get("Uniqueid") if final is not None else None,
            message=str(first.get("Message", "")),
            responses=tuple(dict(m) for m in replies),
        )

    # ----------------------------------------------------------------- supervision

    async def _supervise(self) -> None:
        delay = self._initial_backoff
        started = self._started
        assert started is not None
        while not self._closing:
            try:
                await self._run_session()
                delay = self._initial_backoff
            except AmiLoginError as exc:
                self.failed_attempts += 1
                if not started.done():
                    started.set_exception(exc)
                    return
                log.error("%s: %s; retrying in %.1f s", self.name, exc, delay)
            except asyncio.CancelledError:
                raise
            except (OSError, AmiError, TimeoutError, EOFError) as exc:
                self.failed_attempts += 1
                reason = str(exc) or type(exc).__name__
                log.warning(
                    "%s: cannot connect to Asterisk at %s: %s; retrying in %.1f s",
                    self.name,
                    self.where,
                    reason,
                    delay,
                )
            except Exception:  # never let the supervisor die silently
                self.failed_attempts += 1
                log.exception("%s: unexpected error on the AMI link; reconnecting", self.name)
            if self._closing:
                break
            self.backoff_delays.append(delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.config.reconnect_max_delay)

    async def _run_session(self) -> None:
        """One TCP connection: connect, log in, keep alive, return when it is lost."""
        loop = asyncio.get_running_loop()
        manager = self._manager
        assert manager is not None
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: AmiProtocol(owner=self), self.config.host, self.config.port
            ),
            self.config.connect_timeout,
        )
        assert isinstance(protocol, AmiProtocol)
        self._lost = loop.create_future()
        manager.attach(protocol)
        self._protocol = protocol
        keepalive: asyncio.Task[None] | None = None
        try:
            await self._login(protocol)
            if self._filter:
                await self._install_filter()
            if self._snapshot:
                await self._take_snapshot(protocol)
            keepalive = asyncio.create_task(self._keepalive(protocol), name=f"{self.name}-ping")
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            reason = await self._lost
            log.warning("%s: link to Asterisk at %s lost: %s", self.name, self.where, reason)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            if not protocol.closed:
                protocol.close()
            protocol.owner = None
            self._protocol = None
            self._fully_booted.clear()

    async def _login(self, protocol: AmiProtocol) -> None:
        username = self.config.username
        action: dict[str, Any] = {"Action": "Login", "Username": username, "Events": self._events}
        if self._md5:
            challenge = await self.send_action({"Action": "Challenge", "AuthType": "MD5"})
            if not challenge.success or not challenge.get("Challenge"):
                raise AmiLoginError(
                    f"Asterisk at {self.where} refused the MD5 challenge: "
                    f"{challenge.get('Message', '')}"
                )
            key = hashlib.md5((challenge["Challenge"] + self._secret).encode()).hexdigest()
            action.update(AuthType="MD5", Key=key)
        else:
            action["Secret"] = self._secret
        action_id = f"{self.name}-login-{self.sessions + self.failed_attempts + 1}"
        action["ActionID"] = action_id
        protocol.login_action_id = action_id
        try:
            answer = await self.send_action(action)
        except AmiConnectionLost:
            raise AmiConnectionLost(
                f"Asterisk at {self.where} closed the connection during the login of "
                f"user {username!r} (manager.conf permit/deny? Asterisk restarting?)"
            ) from None
        if not answer.success:
            raise AmiLoginError(
                f"Asterisk at {self.where} refused the login of user {username!r}: "
                f"{answer.get('Message', 'no reason given')} "
                "(check ami.username and the secret against manager.conf)"
            )

    async def _install_filter(self) -> None:
        """Ask Asterisk to send only the named events (one whitelist regex).

        The filter is installed right after the login, so the few events sent
        in between pass unfiltered; the tracker ignores what it does not
        handle.  (Logging in with ``Events: off`` and switching them on after
        the filter would close that gap, but Asterisk then never sends
        ``FullyBooted``.)  The regex is matched against the event text, so
        ``Event: (Hangup|…)`` also lets ``HangupRequest`` through: harmless.
        """
        assert self._filter is not None
        pattern = "Event: (" + "|".join(self._filter) + ")"
        answer = await self.send_action({"Action": "Filter", "Operation": "Add", "Filter": pattern})
        if not answer.success:
            log.warning(
                "%s: Asterisk refused the event filter (%s); receiving every event",
                self.name,
                answer.get("Message", ""),
            )

    async def _take_snapshot(self, protocol: AmiProtocol) -> None:
        """``CoreShowChannels``; the protocol puts the list in the stream when complete."""
        action_id = f"{self.name}-snapshot-{self.sessions}"
        protocol.snapshot_ids[action_id] = []
        try:
            await self.send_action(
                {"Action": "CoreShowChannels", "ActionID": action_id}, as_list=True
            )
        except AmiActionTimeout:
            protocol.snapshot_ids.pop(action_id, None)
            log.warning("%s: no channel list after the login; no snapshot this time", self.name)

    async def _keepalive(self, protocol: AmiProtocol) -> None:
        interval = self.config.ping_interval
        while not protocol.closed:
            await asyncio.sleep(interval)
            try:
                await self.ping()
            except AmiActionTimeout:
                log.warning(
                    "%s: no answer to Ping within %g s: the link to %s is dead; reconnecting",
                    self.name,
                    self.config.ping_timeout,
                    self.where,
                )
                transport = protocol.transport
                protocol.close()
                if transport is not None:
                    transport.abort()
                self.on_lost(protocol, TimeoutError("keepalive Ping not answered"))
                return
            except AmiError:
                return

    # ----------------------------------------------------------------- protocol hooks

    def on_bytes(self, data: bytes) -> None:
        hook = self._on_bytes
        if hook is not None:
            try:
                hook(data)
            except Exception:
                log.exception("%s: the raw-bytes observer failed", self.name)

    def on_event(self, message: AmiMessage, received_at: float) -> None:
        """The one synchronous event callback: enqueue, never raise."""
        try:
            self._inbox.put((message, received_at))
            self.events_received += 1
            if message.get("Event") == "FullyBooted":
                self._fully_booted.set()
        except Exception:  # pragma: no cover - appending to a deque does not fail
            log.exception("%s: cannot enqueue an AMI event", self.name)
        for observer in self._observers:
            try:
                observer(message)
            except Exception:
                log.exception("%s: an event observer failed on %s", self.name, message.get("Event"))

    def on_login_reply(self, message: AmiMessage) -> None:
        if message.get("Response") != "Success":
            return
        self.sessions += 1
        self._session_up = True
        protocol = self._protocol
        self.banner = protocol.banner if protocol is not None else None
        self._inbox.put(LinkUp(self.sessions, self.banner, time.time()))
        log.info(
            "%s: logged in to %s (%s)%s",
            self.name,
            self.where,
            self.banner or "no banner",
            f", reconnect #{self.sessions - 1}" if self.sessions > 1 else "",
        )

    def on_snapshot(self, channels: list[AmiMessage]) -> None:
        self._inbox.put(ChannelSnapshot(self.sessions, tuple(channels), time.time()))

    def on_malformed(self, problem: Malformed) -> None:
        self.malformed += 1
        log.warning("%s: malformed AMI data from %s at %s", self.name, self.where, problem)

    def on_lost(self, protocol: AmiProtocol, exc: BaseException | None) -> None:
        if protocol is not self._protocol:
            return
        reason = str(exc) if exc else "closed by Asterisk"
        if self._closing:
            reason = "closed"
        if self._session_up:
            self._session_up = False
            self._inbox.put(LinkDown(self.sessions, reason, time.time()))
        self._fully_booted.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
