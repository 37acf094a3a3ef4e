"""A stand-in for Asterisk: an AMI server that replays captures, and FastAGI calls.

No Asterisk runs on the machines of this project; tests, benchmarks and the
demo talk to this simulator instead, over real TCP.  It behaves like
Asterisk 20's ``manager.c`` where the daemon can tell:

* the banner ``Asterisk Call Manager/9.0.0`` on connect;
* ``Login`` with ``Secret`` or with an MD5 ``Key`` after ``Challenge``
  (``AuthType: MD5``; key = md5(challenge + secret)).  Success answers
  ``Authentication accepted`` then, when the session wants events,
  ``Event: FullyBooted``; failure answers ``Response: Error`` /
  ``Message: Authentication failed`` and closes the socket, as Asterisk does;
* before login every other action gets ``Permission denied``; an unknown
  action ``Invalid/unknown command``; a message without ``Action``
  ``Missing action in request``; every answer echoes the ``ActionID``;
* ``Ping`` (``Ping: Pong`` + ``Timestamp``), ``Logoff`` (``Response:
  Goodbye``, then close), ``Events`` (``EventMask: on|off``), ``Filter``
  (whitelist regex, ``!`` for a blacklist, applied to the event text);
* ``CoreShowChannels`` answered from the channels alive in the replay:
  ``Response: Success`` / ``EventList: start`` / ``Channels will follow``,
  one ``CoreShowChannel`` per channel (the snapshot fields of its last event,
  ``BridgeId``, ``Application``, ``ApplicationData``, ``Duration``), then
  ``CoreShowChannelsComplete`` with ``EventList: Complete`` and ``ListItems``;
* ``Originate``: with ``Async: true``, ``Originate successfully queued`` at
  once and an ``OriginateResponse`` event (``Response: Success``,
  ``Reason: 4``) shortly after; without it, the answer only comes after the
  "call" (as Asterisk blocks the session).

Events are global like Asterisk's: every logged-in session that wants events
gets them; events played while no session listens are lost (that is what a
daemon misses during an AMI outage).  The replay starts when the first
session is ready, is paced by the ``Timestamp`` headers divided by ``speed``
(or as fast as the socket takes them).  A replayed ``Event: Shutdown`` (an
Asterisk restart) closes every session and the replay goes on after the next
login.  The link can also be broken at a chosen
event: ``drop_after`` closes the sockets, ``stall_after`` leaves them open
but silent (a half-open link that only a keepalive notices); then
``lost_events`` events are played to nobody and the replay waits for the
next login to go on (and for :meth:`Simulator.resume` with
``hold_after_break``, so that a test can look at the PBX state at the break).

When ``agi`` is set, each AGI invocation of the captures' ``agi.log`` is
played against that FastAGI server at the event where Asterisk started it;
the outcomes (variables the server set) are in :attr:`Simulator.agi_outcomes`.
The replayed events do not change with the AGI answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass, field

from ami_daemon.ami.fastagi_client import AgiOutcome, AgiScript, play_agi
from ami_daemon.ami.reader import AmiMessage, StreamDecoder
from ami_daemon.ami.timeline import ReplayEvent, Timeline, encode

log = logging.getLogger(__name__)

BANNER = "Asterisk Call Manager/9.0.0"
#: Channel snapshot fields Asterisk 12+ puts in every channel event.
SNAPSHOT_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
#: Events written per socket write when replaying as fast as possible.
FAST_BATCH = 512


@dataclass
class SimulatorOptions:
    """How the simulated Asterisk behaves (see the module docstring)."""

    username: str = "ami-daemon"
    secret: str = "secret"
    #: replay speed factor on the Timestamp clock; None = as fast as possible
    speed: float | None = 1.0
    #: close every session after this many events were sent, then wait for a login
    drop_after: int | None = None
    #: like drop_after but sockets stay open and silent (half-open link)
    stall_after: int | None = None
    #: events played to nobody right after a drop or stall
    lost_events: int = 0
    #: after the break, go on only when :meth:`Simulator.resume` is called (not at the login)
    hold_after_break: bool = False
    #: FastAGI server (host, port) to play the captures' AGI invocations against
    agi: tuple[str, int] | None = None
    agi_timeout: float = 10.0
    #: seconds before "Authentication failed" (Asterisk waits 1 s)
    login_failure_delay: float = 0.1
    #: seconds between "Originate successfully queued" and OriginateResponse
    originate_delay: float = 0.05
    banner: str = BANNER
    #: seconds after start() before Asterisk is "fully booted": a login before
    #: that gets no FullyBooted until then (the AMI port opens early in a boot)
    booting: float | None = None


@dataclass(eq=False)
class _Session:
    number: int
    writer: asyncio.StreamWriter
    peer: str
    authenticated: bool = False
    events: bool = True
    stalled: bool = False
    closed: bool = False
    challenge: str | None = None
    whitelist: list[re.Pattern[str]] = field(default_factory=list)
    blacklist: list[re.Pattern[str]] = field(default_factory=list)
    #: replayed events not yet written (one socket write per batch)
    pending: list[bytes] = field(default_factory=list)

    @property
    def listening(self) -> bool:
        return self.authenticated and self.events and not self.stalled and not self.closed

    def send(self, data: bytes) -> None:
        """Write an answer, after the events played before it (Asterisk's order)."""
        if not self.closed and not self.stalled:
            self.write_pending()
            self.writer.write(data)

    def write_pending(self) -> None:
        if self.pending:
            if not self.closed and not self.stalled:
                self.writer.write(b"".join(self.pending))
            self.pending.clear()

    def wants(self, event: ReplayEvent) -> bool:
        if not self.whitelist and not self.blacklist:
            return True
        text = event.data.decode("utf-8", "replace")
        if self.whitelist and not any(p.search(text) for p in self.whitelist):
            return False
        return not any(p.search(text) for p in self.blacklist)


def _answer(action: AmiMessage, response: str, *headers: tuple[str, str]) -> bytes:
    parts = [("Response", response)]
    if "ActionID" in action:
        parts.append(("ActionID", action["ActionID"]))
    parts.extend(headers)
    return encode(parts)


def _event(action: AmiMessage | None, name: str, *headers: tuple[str, str]) -> bytes:
    parts = [("Event", name)]
    if action is not None and "ActionID" in action:
        parts.append(("ActionID", action["ActionID"]))
    parts.extend(headers)
    return encode(parts)


class Simulator:
    """The AMI server; ``await start()``, then ``await wait_done()``, ``await close()``."""

    def __init__(self, timeline: Timeline, options: SimulatorOptions | None = None) -> None:
        self.timeline = timeline
        self.options = options or SimulatorOptions()
        self.host = "127.0.0.1"
        self.port = 0
        #: every action received, in order (for tests)
        self.actions: list[AmiMessage] = []
        #: outcome of every FastAGI call played
        self.agi_outcomes: list[AgiOutcome] = []
        #: events of the timeline played so far (sent or lost)
        self.played = 0
        #: events written to at least one session
        self.sent = 0
        #: successful logins
        self.logins = 0
        self.channels: dict[str, dict[str, str]] = {}
        self._created: dict[str, float] = {}
        self._sessions: set[_Session] = set()
        self._session_count = 0
        self._ready = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._agi_tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()
        self._started_at = time.time()
        self._originates = 0
        self._broken = False
        self._booted = True
        self._resume = asyncio.Event()

    # ----------------------------------------------------------------- life cycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen (port 0 = any free port, see :attr:`port`) and start the replay."""
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._replay_task = asyncio.create_task(self._replay(), name="simulator-replay")
        if self.options.booting:
            self._booted = False
            self._spawn(self._boot(self.options.booting), "simulator-boot")
        log.info("simulated Asterisk listening on %s:%d", self.host, self.port)

    async def wait_done(self, timeout: float | None = None) -> None:
        """Wait until every event was played and every FastAGI call finished."""

        async def done() -> None:
            await self._done.wait()
            while self._agi_tasks:
                await asyncio.gather(*list(self._agi_tasks), return_exceptions=True)

        await asyncio.wait_for(done(), timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set() and not self._agi_tasks

    async def close(self) -> None:
        """Stop the replay, close every session and the listening socket."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        for task in list(self._agi_tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            self._close_session(session, abort=True)
        # Session handlers end by themselves once their socket is aborted;
        # cancelling them would trip asyncio's start_server callback (3.11).
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._agi_tasks, return_exceptions=True)

    def drop(self) -> None:
        """Close every session now (Asterisk restarted, cable pulled with a RST)."""
        for session in list(self._sessions):
            session.write_pending()
            self._close_session(session, abort=False)
        self._update_ready()

    def resume(self) -> None:
        """Let a replay held after its break (``hold_after_break``) go on."""
        self._resume.set()

    def stall(self) -> None:
        """Make every current session silent while its socket stays open."""
        for session in self._sessions:
            session.write_pending()
            session.stalled = True
        self._update_ready()

    # ----------------------------------------------------------------- sessions

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_session(self, session: _Session, abort: bool) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.discard(session)
        transport = session.writer.transport
        if abort:
            transport.abort()
        else:
            transport.close()

    def _update_ready(self) -> None:
        if any(s.listening for s in self._sessions):
            self._ready.set()
        else:
            self._ready.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._session_count += 1
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        peer = writer.get_extra_info("peername")
        session = _Session(self._session_count, writer, f"{peer[0]}:{peer[1]}" if peer else "?")
        self._sessions.add(session)
        decoder = StreamDecoder()
        try:
            writer.write(f"{self.options.banner}\r\n".encode())
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                if session.stalled:
                    continue  # a dead peer: bytes vanish, nothing is answered
                for action in decoder.feed(data):
                    self.actions.append(action)
                    await self._handle(session, action)
                    if session.closed or session.stalled:
                        break
        except (ConnectionError, OSError):
            pass
        finally:
            self._close_session(session, abort=False)
            self._update_ready()

    async def _handle(self, session: _Session, action: AmiMessage) -> None:
        name = action.get("Action", "").lower()
        if not name:
            session.send(_answer(action, "Error", ("Message", "Missing action in request")))
            return
        if name == "login":
            await self._login(session, action)
        elif name == "challenge":
            if action.get("AuthType", "").lower() != "md5":
                session.send(_answer(action, "Error", ("Message", "Must specify AuthType")))
                return
            session.challenge = str(random.randint(100_000_000, 999_999_999))
            session.send(_answer(action, "Success", ("Challenge", session.challenge)))
        elif name == "logoff":
            session.send(_answer(action, "Goodbye", ("Message", "Thanks for all the fish.")))
            self._close_session(session, abort=False)
        elif not session.authenticated:
            session.send(_answer(action, "Error", ("Message", "Permission denied")))
        elif name == "ping":
            session.send(
                _answer(action, "Success", ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}"))
            )
        elif name == "events":
            session.events = _events_wanted(action.get("EventMask", "on"))
            session.send(_answer(action, "Success", ("Events", "On" if session.events else "Off")))
            self._update_ready()
        elif name == "filter":
            self._filter(session, action)
        elif name == "coreshowchannels":
            self._core_show_channels(session, action)
        elif name == "originate":
            await self._originate(session, action)
        else:
            session.send(_answer(action, "Error", ("Message", "Invalid/unknown command")))

    async def _login(self, session: _Session, action: AmiMessage) -> None:
        options = self.options
        username_ok = action.get("Username") == options.username
        if action.get("AuthType", "").lower() == "md5":
            expected = hashlib.md5(
                ((session.challenge or "") + options.secret).encode()
            ).hexdigest()
            secret_ok = session.challenge is not None and action.get("Key") == expected
        else:
            secret_ok = action.get("Secret") == options.secret
        if not (username_ok and secret_ok):
            await asyncio.sleep(options.login_failure_delay)
            session.send(_answer(action, "Error", ("Message", "Authentication failed")))
            self._close_session(session, abort=False)
            return
        session.authenticated = True
        session.events = _events_wanted(action.get("Events", "on"))
        self.logins += 1
        session.send(_answer(action, "Success", ("Message", "Authentication accepted")))
        if session.events and self._booted:
            session.send(self._fully_booted())
        self._update_ready()

    def _fully_booted(self) -> bytes:
        uptime = str(int(time.time() - self._started_at))
        return _event(
            None,
            "FullyBooted",
            ("Privilege", "system,all"),
            ("Uptime", uptime),
            ("LastReload", uptime),
            ("Status", "Fully Booted"),
        )

    async def _boot(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._booted = True
        for session in self._sessions:
            if session.listening:
                session.send(self._fully_booted())

    def _filter(self, session: _Session, action: AmiMessage) -> None:
        if action.get("Operation", "").lower() != "add":
            session.send(_answer(action, "Error", ("Message", "Unknown operation")))
            return
        pattern = action.get("Filter", "")
        negate = pattern.startswith("!")
        try:
            compiled = re.compile(pattern[1:] if negate else pattern)
        except re.error:
            session.send(_answer(action, "Error", ("Message", "Filter Failed")))
            return
        (session.blacklist if negate else session.whitelist).append(compiled)
        session.send(_answer(action, "Success", ("Message", "Filter Added Successfully")))

    def _core_show_channels(self, session: _Session, action: AmiMessage) -> None:
        session.send(
            _answer(action, "Success", ("EventList", "start"), ("Message", "Channels will follow"))
        )
        now = time.time()
        for uniqueid, channel in self.channels.items():
            seconds = int(now - self._created.get(uniqueid, now))
            duration = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
            fields = [(k, channel.get(k, "")) for k in SNAPSHOT_FIELDS]
            fields += [
                ("BridgeId", channel.get("BridgeId", "")),
                ("Application", channel.get("Application", "")),
                ("ApplicationData", channel.get("ApplicationData", "")),
                ("Duration", duration),
            ]
            session.send(_event(action, "CoreShowChannel", *fields))
        session.send(
            _event(
                action,
                "CoreShowChannelsComplete",
                ("EventList", "Complete"),
                ("ListItems", str(len(self.channels))),
            )
        )

    async def _originate(self, session: _Session, action: AmiMessage) -> None:
        self._originates += 1
        uniqueid = f"{int(self._started_at)}.{9000 + self._originates}"
        final = _event(
            action,
            "OriginateResponse",
            ("Privilege", "call,all"),
            ("Response", "Success"),
            ("Channel", action.get("Channel", "")),
            ("Context", action.get("Context", "")),
            ("Exten", action.get("Exten", "")),
            ("Application", action.get("Application", "")),
            ("Data", action.get("Data", "")),
            ("Reason", "4"),
            ("Uniqueid", uniqueid),
            ("CallerIDNum", "<unknown>"),
            ("CallerIDName", "<unknown>"),
        )
        queued = _answer(action, "Success", ("Message", "Originate successfully queued"))
        if action.get("Async", "").lower() in ("true", "yes", "1"):
            session.send(queued)

            async def later() -> None:
                await asyncio.sleep(self.options.originate_delay)
                session.send(final)
                for other in self._sessions:
                    if other is not session and other.listening:
                        other.send(final)

            self._spawn(later(), "simulator-originate")
        else:
            # Asterisk blocks this session until the first leg answered.
            await asyncio.sleep(self.options.originate_delay)
            session.send(queued)

    # ----------------------------------------------------------------- replay

    async def _replay(self) -> None:
        events = self.timeline.events
        options = self.options
        loop = asyncio.get_running_loop()
        await self._ready.wait()
        target = loop.time()
        previous_at: float | None = None
        pending = 0
        index = 0
        while index < len(events):
            event = events[index]
            if options.speed is not None and event.at is not None:
                if previous_at is not None and event.at > previous_at:
                    target += (event.at - previous_at) / options.speed
                previous_at = event.at
                delay = target - loop.time()
                if delay > 0.0005:
                    await self._flush()
                    pending = 0
                    await asyncio.sleep(delay)
            self._play(index, event)
            if self._deliver(event):
                self.sent += 1
            index += 1
            pending += 1
            if pending >= FAST_BATCH:
                await self._flush()
                pending = 0
            limit = options.drop_after if options.drop_after is not None else options.stall_after
            if not self._broken and limit is not None and self.sent >= limit:
                self._broken = True
                await self._flush()
                pending = 0
                if options.drop_after is not None:
                    log.info("simulator: dropping the AMI connections after %d events", self.sent)
                    self.drop()
                else:
                    log.info("simulator: stalling the AMI connections after %d events", self.sent)
                    self.stall()
                lost_until = min(len(events), index + options.lost_events)
                while index < lost_until:
                    self._play(index, events[index])
                    index += 1
                await self._ready.wait()
                if options.hold_after_break:
                    await self._resume.wait()
                target = loop.time()
                previous_at = None
            elif event.message.get("Event") == "Shutdown" and index < len(events):
                # Asterisk stopping or restarting closes every manager session
                # after this event; the replay goes on with the next login.
                await self._flush()
                pending = 0
                log.info("simulator: Shutdown replayed, closing the AMI connections")
                self.drop()
                await self._ready.wait()
                target = loop.time()
                previous_at = None
        await self._flush()
        self._done.set()
        log.info("simulator: replay finished, %d events played, %d sent", self.played, self.sent)

    def _deliver(self, event: ReplayEvent) -> bool:
        delivered = False
        for session in self._sessions:
            if session.listening and session.wants(event):
                session.pending.append(event.data)
                delivered = True
        return delivered

    async def _flush(self) -> None:
        for session in list(self._sessions):
            session.write_pending()
            if session.closed:
                continue
            try:
                await session.writer.drain()
            except (ConnectionError, OSError):
                self._close_session(session, abort=True)
        self._update_ready()

    def _play(self, index: int, event: ReplayEvent) -> None:
        """Apply one event to the PBX state (alive channels) and start its AGI calls."""
        self.played += 1
        message = event.message
        name = message.get("Event")
        uniqueid = message.get("Uniqueid")
        if uniqueid is not None:
            if name == "Newchannel":
                self.channels[uniqueid] = {k: message.get(k, "") for k in SNAPSHOT_FIELDS}
                self._created[uniqueid] = time.time()
            elif name == "Hangup":
                self.channels.pop(uniqueid, None)
                self._created.pop(uniqueid, None)
            elif uniqueid in self.channels:
                _update_channel(self.channels[uniqueid], name, message)
        scripts = self.timeline.agi.get(index)
        if scripts and self.options.agi is not None:
            for script in scripts:
                self._start_agi(script)

    def _start_agi(self, script: AgiScript) -> None:
        assert self.options.agi is not None
        host, port = self.options.agi

        async def run() -> None:
            outcome = await play_agi(host, port, script, timeout=self.options.agi_timeout)
            if outcome.error:
                log.warning("simulator: FastAGI for %s: %s", outcome.channel, outcome.error)
            self.agi_outcomes.append(outcome)

        task: asyncio.Task[None] = asyncio.create_task(run(), name="simulator-agi")
        self._agi_tasks.add(task)
        task.add_done_callback(self._agi_tasks.discard)


def _update_channel(channel: dict[str, str], name: str | None, message: AmiMessage) -> None:
    for key in SNAPSHOT_FIELDS:
        value = message.get(key)
        if value is not None:
            channel[key] = value
    if name == "Newexten":
        channel["Application"] = message.get("Application", "")
        channel["ApplicationData"] = message.get("AppData", "")
    elif name == "BridgeEnter":
        channel["BridgeId"] = message.get("BridgeUniqueid", "")
    elif name == "BridgeLeave":
        channel["BridgeId"] = ""
    elif name == "Rename" and "Newname" in message:
        channel["Channel"] = message["Newname"]


def _events_wanted(value: str) -> bool:
    """Asterisk's Events/EventMask: ``off``/``no``/``none`` mean none, anything else some."""
    return value.strip().lower() not in ("off", "no", "none", "false", "0")
