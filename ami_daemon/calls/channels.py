"""Telling channels apart: the outside world, employee phones, and helpers to follow.

Asterisk names every channel ``<technology>/<resource>-<sequence>``.  Which
names are trunks and which are phones depends on the PBX, so both come from the
``pbx`` config section (DESIGN "contract: config file"): ``trunk_channels`` are
tried first (``SIP/trunk-00000003``, ``SIP/voipgrid-siproute-docker-00000017``),
then ``employee_channels`` whose ``peer`` group names the device
(``SIP/201-00000001`` → peer ``201``; cacofonisk's ``SIP/150010001-0000000d`` →
peer ``150010001``, extension ``201`` through ``peer_extensions``).  Anything
else — ``Local/…;1``/``;2`` pairs above all — is a helper: followed, never a
party of the call.

The extension is taken from the channel name, never from ``CallerIDNum``: a
called phone shows the number that was dialled (the DID, a ring-group number
such as ``401``) and a calling phone shows its account code until the dialplan
sets the caller ID (cacofonisk ``simple/ab_callgroup``).
"""

from __future__ import annotations

import enum
import re

from ami_daemon.config import PbxConfig


class Kind(enum.Enum):
    """The role a channel can play in a call."""

    TRUNK = "trunk"  # the outside world
    PHONE = "phone"  # an employee's device
    HELPER = "helper"  # Local channels and anything else: followed, never a party


#: Suffixes Asterisk appends while it masquerades one channel into another.
_MASQUERADE_SUFFIX = re.compile(r"<(?:ZOMBIE|MASQ)>$")


class Classifier:
    """Classifies channel names with one PBX's ``trunk_channels``/``employee_channels``."""

    __slots__ = ("_employees", "_peer_extensions", "_trunks")

    def __init__(self, pbx: PbxConfig) -> None:
        self._trunks = pbx.trunk_channels
        self._employees = pbx.employee_channels
        self._peer_extensions = dict(pbx.peer_extensions)

    def classify(self, name: str) -> tuple[Kind, str | None]:
        """``(kind, label)``: label is the extension of a phone, the trunk name of a trunk."""
        for pattern in self._trunks:
            if pattern.search(name):
                return Kind.TRUNK, trunk_name(name)
        match = self._employees.search(name)
        if match is not None:
            peer = match.group("peer")
            if peer:
                return Kind.PHONE, self._peer_extensions.get(peer, peer)
        return Kind.HELPER, None


def trunk_name(name: str) -> str:
    """``SIP/trunk-00000003`` → ``trunk``; ``SIP/voipgrid-siproute-docker-00000017`` →
    ``voipgrid-siproute-docker`` (technology and ``-sequence`` removed)."""
    name = _MASQUERADE_SUFFIX.sub("", name)
    resource = name.split("/", 1)[1] if "/" in name else name
    head, sep, _sequence = resource.rpartition("-")
    return head if sep and head else resource


def is_masquerade_name(name: str) -> bool:
    """True for the ``<ZOMBIE>``/``<MASQ>`` names a channel takes while being replaced."""
    return _MASQUERADE_SUFFIX.search(name) is not None


def local_pair_key(name: str) -> tuple[str, str] | None:
    """``Local/201@ctx-00000007;1`` → ``("Local/201@ctx-00000007", "1")``; None if not Local.

    Asterisk creates the two halves of a Local channel together; ``;1`` faces
    whoever requested it, ``;2`` runs the dialplan at ``exten@context``.
    """
    if not name.startswith("Local/") or len(name) < 3 or name[-2] != ";":
        return None
    return name[:-2], name[-1]


def local_exten(name: str) -> str | None:
    """The ``exten`` a Local channel was created for (``Local/202@internal-0001;1`` → ``202``)."""
    if not name.startswith("Local/"):
        return None
    exten = name[6:].split("@", 1)[0]
    return exten or None
