"""panoramisk's AMI protocol, with the faults measured in STACK.md defended.

We keep panoramisk for what it does well — building actions with ActionIDs,
matching responses (and the events of list actions such as
``CoreShowChannels``) to the action that asked for them, and its ``Message``
objects for responses — and replace the parts that lose data:

* **Decoding.**  ``AMIProtocol.data_received`` decodes every TCP read on its
  own, so a UTF-8 character split between two reads is corrupted (``Иван``
  arrived as ``ван``).  Here the raw bytes go to our incremental
  :class:`~ami_daemon.ami.reader.StreamDecoder`, which splits messages on
  bytes and decodes whole messages only.
* **Dispatch.**  ``Manager.dispatch`` calls every callback inline and an
  exception escaping one tears the connection down (losing the rest of that
  read).  Here each event goes to one owner hook, guarded so that nothing it
  raises can reach the transport.
* **Reconnects and pending actions.**  panoramisk re-queues unanswered actions
  and re-sends them after the next ``FullyBooted`` — a lost ``Originate``
  would dial twice.  Here a lost link fails every pending action with
  :class:`AmiConnectionLost`; the caller decides.
* **Originate without Async** makes panoramisk read ``action['async']`` and
  raise ``KeyError`` inside the protocol (upstream issue #90): every
  ``Originate`` sent through :meth:`AmiManager.send_action` carries
  ``Async: true``.

Events reach the owner as :class:`~ami_daemon.ami.reader.AmiMessage` (a plain
``dict`` with the ordered header list), not as panoramisk ``Message``: they
are what the tracker reads from capture files too, and building panoramisk's
case-insensitive dict for every event is most of its parsing cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ami_daemon.ami.reader import AmiMessage, Malformed, StreamDecoder

log = logging.getLogger(__name__)

#: Bytes handed to the decoder at a time (see ``AmiProtocol.data_received``).
FEED_SLICE = 16 * 1024


class AmiError(Exception):
    """Something went wrong talking to Asterisk's manager interface."""


class AmiConnectionLost(AmiError):
    """The link to Asterisk went down before the action was answered."""


class AmiNotConnected(AmiError):
    """An action was sent while no link to Asterisk is up."""


class AmiActionTimeout(AmiError):
    """Asterisk did not answer an action in time."""


class ProtocolOwner(Protocol):
    """What the protocol reports to (the connection)."""

    def on_bytes(self, data: bytes) -> None: ...

    def on_event(self, message: AmiMessage, received_at: float) -> None: ...

    def on_login_reply(self, message: AmiMessage) -> None: ...

    def on_malformed(self, problem: Malformed) -> None: ...

    def on_snapshot(self, channels: list[AmiMessage]) -> None: ...

    def on_lost(self, protocol: AmiProtocol, exc: BaseException | None) -> None: ...


def to_panoramisk(message: AmiMessage) -> Message:
    """A panoramisk ``Message`` with the same headers (repeats become a list)."""
    headers: dict[str, Any] = {}
    for key, value in message.headers:
        if key.lower() in Message.quoted_keys:
            value = unquote(value).strip()
        if key in headers:
            previous = headers[key]
            if isinstance(previous, list):
                previous.append(value)
            else:
                headers[key] = [previous, value]
        else:
            headers[key] = value
    return Message(headers, "")


class AmiProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with incremental decoding and guarded dispatch."""

    owner: ProtocolOwner | None = None
    login_action_id: str | None = None
    closed: bool = False
    transport: Any = None
    responses: dict[str, Any]

    def __init__(self, owner: ProtocolOwner | None = None) -> None:
        super().__init__()
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self.owner
        super().connection_made(transport)
        self.owner = owner
        self.decoder = StreamDecoder(on_malformed=self._malformed)
        self.banner: str | None = None
        #: CoreShowChannels actions whose list goes in the stream: ActionID → items so far
        self.snapshot_ids: dict[str, list[AmiMessage]] = {}

    def _malformed(self, problem: Malformed) -> None:
        if self.owner is not None:
            self.owner.on_malformed(problem)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:  # pragma: no cover - set right after the connection is made
            return
        owner.on_bytes(data)
        received_at = time.time()
        decoder = self.decoder
        if len(data) <= FEED_SLICE:
            self._dispatch(decoder.feed(data), owner, received_at)
            return
        # A busy consumer lets asyncio read up to 256 KiB at once; the decoder
        # is about twice as fast on small slices (fewer live objects per call).
        for start in range(0, len(data), FEED_SLICE):
            self._dispatch(decoder.feed(data[start : start + FEED_SLICE]), owner, received_at)

    def _dispatch(
        self, messages: list[AmiMessage], owner: ProtocolOwner, received_at: float
    ) -> None:
        if self.banner is None and self.decoder.banner is not None:
            self.banner = self.decoder.banner
            self.version = self.banner.partition("/")[2].strip()
        responses = self.responses
        for message in messages:
            action_id = message.get("ActionID")
            if action_id is not None and action_id in responses:
                if action_id in self.snapshot_ids:
                    self._collect(message, action_id, owner)
                self._answer(message, action_id)
            elif "Event" in message:
                owner.on_event(message, received_at)
                if message["Event"] == "Shutdown":
                    # Asterisk is stopping or restarting; it will close the
                    # socket itself, but do not wait for it.
                    log.warning("Asterisk announced a shutdown (%s)", message.get("Shutdown"))
                    if self.transport is not None:
                        self.transport.close()
            else:
                log.debug("AMI response nobody waits for: %r", dict(message))

    def _collect(self, message: AmiMessage, action_id: str, owner: ProtocolOwner) -> None:
        """Gather a snapshot's channels; hand them over, in place, when the list ends."""
        event = message.get("Event")
        if event == "CoreShowChannel":
            self.snapshot_ids[action_id].append(message)
        elif event == "CoreShowChannelsComplete":
            owner.on_snapshot(self.snapshot_ids.pop(action_id))
        elif message.get("Response") not in (None, "Success"):
            self.snapshot_ids.pop(action_id, None)
            log.warning("Asterisk refused CoreShowChannels: %s", message.get("Message"))

    def _answer(self, message: AmiMessage, action_id: str) -> None:
        try:
            self.handle_message(to_panoramisk(message))
        except Exception:
            # A response panoramisk cannot classify must not kill the link.
            log.exception("cannot handle the answer to action %s: %r", action_id, dict(message))
            action = self.responses.pop(action_id, None)
            if action is not None and not action.future.done():
                action.future.set_exception(AmiError(f"unreadable answer {dict(message)!r}"))
        if action_id == self.login_action_id and "Response" in message and self.owner:
            self.login_action_id = None
            self.owner.on_login_reply(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close()
        if self.owner is not None:
            owner, self.owner = self.owner, None
            owner.on_lost(self, exc)

    def close(self) -> None:
        """Close the transport and fail every action still waiting for an answer."""
        pending = list(self.responses.values())
        self.responses.clear()
        for action in pending:
            if not action.future.done():
                action.future.set_exception(
                    AmiConnectionLost(f"link to Asterisk lost before {action['Action']} answered")
                )
        if not self.closed:
            self.closed = True
            self.transport.close()


class AmiManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager reduced to sending actions on our protocol.

    Connecting, logging in, keepalive and reconnecting are done by
    :class:`~ami_daemon.ami.connection.AmiConnection`; panoramisk's own
    reconnect (fixed delay, login failures ignored, actions re-sent) is off.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__(loop=asyncio.get_running_loop(), **config)

    def attach(self, protocol: AmiProtocol) -> None:
        self.protocol = protocol
        protocol.factory = self
        protocol.log = log
        protocol.config = self.config
        protocol.encoding = self.encoding = "utf-8"
        self.responses = protocol.responses

    def send_action(
        self, action: Mapping[str, Any], as_list: bool | None = None, **kwargs: Any
    ) -> asyncio.Future[Any]:
        protocol = self.protocol
        if protocol is None or getattr(protocol, "closed", True):
            raise AmiNotConnected("not connected to Asterisk")
        built = action if isinstance(action, Action) else Action(dict(action), as_list=as_list)
        built.update(kwargs)
        if str(built.get("Action", "")).lower() == "originate":
            enforce_async(built)
        return protocol.send(built, as_list=as_list)  # type: ignore[no-any-return]

    def dispatch(self, event: Any) -> list[str]:  # pragma: no cover - events bypass it
        return []

    def connection_lost(self, exc: Any) -> None:  # pragma: no cover - protocol reports to owner
        pass

    def close(self) -> None:
        if self.protocol is not None:
            self.protocol.close()


def enforce_async(action: Action) -> None:
    """Give an Originate ``Async: true``.

    Without it Asterisk answers only once the call is answered or failed
    (blocking this manager session meanwhile), and panoramisk crashes reading
    the reply (``KeyError('async')``, issue #90) and drops the connection.
    """
    value = str(action.get("Async", "")).lower()
    if value != "true":
        if value:
            log.warning("Originate with Async: %s sent as Async: true", value)
        action["Async"] = "true"


ActionCallable = Callable[[Mapping[str, Any]], "asyncio.Future[Any]"]
