"""The tracker's memory: one record per live channel, one per conversation.

Plain mutable records with ``__slots__`` (a busy PBX keeps thousands alive at
once; 10,000 calls in progress must stay well under 150 MB).  Only
``tracker.py`` mutates them; ``summarize.py`` reads a finished one.
"""

from __future__ import annotations

from ami_daemon.calls.channels import Kind
from ami_daemon.calls.summary import Transfer


class Chan:
    """One Asterisk channel, keyed by its ``Uniqueid``.

    ``dialled_in`` is set by a ``DialBegin`` naming it as destination;
    ``dialer`` is the channel that dialled it (None for an AMI ``Originate``,
    whose ``DialBegin`` has no ``Channel``).  ``dial_exten`` is the dialler's
    ``Exten`` at that moment: what the employee dialled for an outbound trunk
    leg (asterisk20 ``06_outbound_201_to_external_answered``: ``0034911000111``).
    """

    __slots__ = (
        "bridge",
        "call",
        "cid",
        "created_at",
        "dial_exten",
        "dial_string",
        "dialer",
        "dialled",
        "dialled_in",
        "exten",
        "kind",
        "label",
        "name",
        "partner",
        "rang",
        "uid",
        "up",
        "withheld",
    )

    def __init__(self, uid: str, name: str, kind: Kind, label: str | None, call: Call) -> None:
        self.uid = uid
        self.name = name
        self.kind = kind
        self.label = label  # extension of a phone, trunk name of a trunk
        self.call = call
        self.created_at: float | None = None
        self.cid: str | None = None  # first caller ID number seen
        self.exten: str | None = None  # first real extension seen (the DID on a trunk)
        self.withheld = False
        self.dialled_in = False
        self.dialer: Chan | None = None
        self.dial_exten: str | None = None
        self.dial_string: str | None = None
        self.dialled: list[Chan] = []
        self.partner: Chan | None = None  # the other half of a Local pair
        self.bridge: str | None = None
        self.rang = False
        self.up = False

    @property
    def is_party(self) -> bool:
        return self.kind is not Kind.HELPER

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Chan({self.name!r}, {self.uid!r})"


class Call:
    """One conversation: every channel that carried (or once carried) one of its Linkedids.

    ``origin`` is the first party (Asterisk's Linkedid *is* the Uniqueid of
    the call's first channel); ``anchor`` is the caller side whose connections
    define "answered" — it starts as the origin and moves to the transferee
    when the caller side itself transfers the call away.
    """

    __slots__ = (
        "anchor",
        "answered",
        "answered_at",
        "answered_by",
        "channels",
        "ended_at",
        "helper_status",
        "ids",
        "last_agent",
        "leaf_status",
        "linkedid",
        "live",
        "origin",
        "origin_cause",
        "partial",
        "queue",
        "rung",
        "seq",
        "started_at",
        "transfers",
    )

    def __init__(self, linkedid: str, seq: int) -> None:
        self.linkedid = linkedid
        self.seq = seq  # creation order: the older call absorbs the newer on a merge
        self.ids = [linkedid]
        self.channels: list[Chan] = []
        self.live: set[str] = set()
        self.origin: Chan | None = None
        self.anchor: Chan | None = None
        self.origin_cause: str | None = None
        self.started_at: float | None = None
        self.answered = False
        self.answered_at: float | None = None
        self.answered_by: str | None = None
        self.last_agent: str | None = None
        self.ended_at: float | None = None
        self.rung: list[tuple[int, str]] = []  # (event sequence, extension)
        self.queue: str | None = None
        self.transfers: list[tuple[int, Transfer]] = []
        self.leaf_status: list[str] = []  # DialStatus of dials to parties
        self.helper_status: list[str] = []  # DialStatus of dials to Local helpers
        self.partial = False  # its first channel was not seen being created
