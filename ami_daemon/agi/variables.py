"""The dialplan contract: every name shared by the AGI code and ``asterisk-conf/``.

Asterisk and this package meet only through channel variables and context
names, so they live here and nowhere else (DESIGN "contract: AGI").  The
dialplan sets ``__CRM_DID`` (the two underscores make it inherited by every
channel the call creates, so queue members' channels carry the DID too), runs
``crm_lookup`` and reads what the lookup set.  A test checks that the ``CRM_*``
variables and the context names used in ``asterisk-conf/extensions.conf`` are
exactly the ones declared here.
"""

from __future__ import annotations

import enum

#: FastAGI script name: ``AGI(agi://127.0.0.1:4573/crm_lookup)``.
SCRIPT_CRM_LOOKUP = "crm_lookup"
#: Asterisk's registered FastAGI port (the default of ``agi://HOST``).
FASTAGI_PORT = 4573

# --- input, set by the dialplan before the lookup --------------------------------
#: The number the caller dialled, as the trunk delivered it (``${EXTEN}``).
CRM_DID = "CRM_DID"

# --- output, set by the lookup ---------------------------------------------------
#: ``ok`` | ``error`` | ``timeout`` (:class:`LookupStatus`); always set, best effort.
CRM_LOOKUP = "CRM_LOOKUP"
#: ``1`` when a CRM contact, company or unconverted lead owns the caller's number.
CRM_KNOWN = "CRM_KNOWN"
#: ``1`` for employees' own numbers and the exception list: calls not saved to the CRM.
CRM_SKIP = "CRM_SKIP"
#: The matched item, ``contact:17`` / ``company:4`` / ``lead:9``.
CRM_ENTITY = "CRM_ENTITY"
#: The extension of the item's responsible employee (``202``).
CRM_RESPONSIBLE_EXT = "CRM_RESPONSIBLE_EXT"
#: The extension to dial first: routing on for this number and the responsible active.
CRM_ROUTE_TO = "CRM_ROUTE_TO"
#: Asterisk's caller-name function; the lookup writes the item's display name.
CALLERID_NAME = "CALLERID(name)"
#: Asterisk truncates nothing itself, but phones show ~20-40 characters.
CALLERID_NAME_MAX = 40

# --- dialplan-only ---------------------------------------------------------------
#: The queue of the dialled number, set per DID in the inbound context.
CRM_QUEUE = "CRM_QUEUE"

#: Every variable the lookup may set, in the order it sets them (CRM_LOOKUP last:
#: the dialplan acts on the others only when it reads ``ok``).
OUTPUT_VARIABLES: tuple[str, ...] = (
    CRM_KNOWN,
    CRM_SKIP,
    CRM_ENTITY,
    CRM_RESPONSIBLE_EXT,
    CALLERID_NAME,
    CRM_ROUTE_TO,
    CRM_LOOKUP,
)
#: Every ``CRM_*`` name of the contract, inputs, outputs and dialplan-only.
CRM_VARIABLES: frozenset[str] = frozenset(
    {
        CRM_DID,
        CRM_LOOKUP,
        CRM_KNOWN,
        CRM_SKIP,
        CRM_ENTITY,
        CRM_RESPONSIBLE_EXT,
        CRM_ROUTE_TO,
        CRM_QUEUE,
    }
)

# --- contexts of asterisk-conf/extensions.conf ----------------------------------
#: Calls from the provider trunk (``context=crm-inbound`` on the trunk endpoint).
CONTEXT_INBOUND = "crm-inbound"
#: The lookup and the routing of one inbound call, shared by every DID.
CONTEXT_ROUTE = "crm-route"
#: Employees' phones (``context=crm-internal`` on each phone endpoint).
CONTEXT_INTERNAL = "crm-internal"
#: Outside numbers dialled by employees, sent to the trunk.
CONTEXT_OUTBOUND = "crm-outbound"
CONTEXTS: frozenset[str] = frozenset(
    {CONTEXT_INBOUND, CONTEXT_ROUTE, CONTEXT_INTERNAL, CONTEXT_OUTBOUND}
)


class LookupStatus(str, enum.Enum):
    """The value of ``CRM_LOOKUP``: did the dialplan get a real answer?"""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
