"""The pure half of ``crm_lookup``: from what Asterisk said and what the CRM knows to variables.

Two steps, both free of I/O so that the classic script and the FastAGI server
behave identically and tests need no Asterisk:

1. :func:`build_request` reads the caller and the dialled number.  The caller
   number is ``agi_callerid`` (Asterisk writes ``unknown`` when the trunk sent
   none, chan_sip/pjsip ``anonymous`` for a withheld one); a presentation of
   "restricted" (``agi_callingpres`` bits 0x60 = 0x20) is withheld too, even when
   the carrier delivered the digits.  The DID is the channel variable
   ``CRM_DID`` the dialplan set from ``${EXTEN}``, else ``agi_dnid``, else
   ``agi_extension``.  The trunk is the channel name without technology and
   sequence (``SIP/trunk-0000001e`` → ``trunk``) when the channel matches one
   of ``pbx.trunk_channels``: per-trunk settings apply to numbers without
   their own.
2. :func:`decide` turns the CRM's answer and the routing flags of the number
   into the contract's variables (DESIGN "contract: AGI").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ami_daemon import phones
from ami_daemon.agi import variables as v
from ami_daemon.agi.protocol import AgiEnvironment, sanitize
from ami_daemon.agi.variables import LookupStatus
from ami_daemon.crm.lookup import PhoneOwner

#: What may be dialled as ``PJSIP/${CRM_ROUTE_TO}``: no ``&``, ``,``, ``/``, ``@``,
#: ``$``, brackets or spaces, which would add targets or options to ``Dial``.
_SAFE_EXTENSION = re.compile(r"[0-9A-Za-z_.*#+-]{1,32}\Z")
_TRUNK_NAME = re.compile(r"[^/]+/(?P<name>.+)-[0-9a-fA-F]+\Z")
_PRES_RESTRICTED = 0x20
_PRES_MASK = 0x60


def safe_extension(extension: str | None) -> str | None:
    """``extension`` when it can go into a Dial string unchanged, else None."""
    if extension is None:
        return None
    extension = extension.strip()
    return extension if _SAFE_EXTENSION.match(extension) else None


def trunk_name(channel: str | None, trunk_channels: Sequence[re.Pattern[str]]) -> str | None:
    """``SIP/trunk-00000003`` → ``trunk`` when the channel is one of the trunks."""
    if not channel or not any(p.search(channel) for p in trunk_channels):
        return None
    match = _TRUNK_NAME.match(channel)
    return match.group("name") if match else None


@dataclass(frozen=True)
class LookupRequest:
    """One call to look up; ``caller_e164`` None means no usable number (and why)."""

    uniqueid: str
    caller_raw: str | None
    caller_e164: str | None
    no_number_reason: str | None
    did_raw: str | None
    did_e164: str | None
    trunk: str | None


def build_request(
    env: AgiEnvironment,
    crm_did: str | None,
    region: str,
    trunk_channels: Sequence[re.Pattern[str]] = (),
) -> LookupRequest:
    """Read caller, DID and trunk as the module docstring explains."""
    caller_raw = env.get("agi_callerid")
    caller, reason = caller_number(env, region)
    did_raw = next(
        (d for d in (crm_did, env.get("agi_dnid"), env.get("agi_extension")) if _present(d)),
        None,
    )
    return LookupRequest(
        uniqueid=env.uniqueid,
        caller_raw=caller_raw,
        caller_e164=caller,
        no_number_reason=reason,
        did_raw=did_raw,
        did_e164=phones.try_normalize(did_raw, region),
        trunk=trunk_name(env.get("agi_channel"), trunk_channels),
    )


def caller_number(env: AgiEnvironment, region: str) -> tuple[str | None, str | None]:
    """``(E.164, None)`` or ``(None, why there is no usable number)``."""
    if _withheld(env.get("agi_callingpres")):
        return None, "presentation restricted (caller ID withheld)"
    try:
        return phones.normalize(env.get("agi_callerid"), region), None
    except phones.NotANumber as exc:
        return None, exc.reason.value


def _present(value: str | None) -> bool:
    return bool(value) and value.strip().lower() not in {"unknown", "s"}  # type: ignore[union-attr]


def _withheld(pres: str | None) -> bool:
    try:
        return (int(pres or "0") & _PRES_MASK) == _PRES_RESTRICTED
    except ValueError:
        return False


@dataclass(frozen=True)
class RoutingFlags:
    """What the rules say about this call: route known clients? an excepted number?"""

    route_to_responsible: bool = False
    is_exception: bool = False


@dataclass(frozen=True)
class Decision:
    """The variables one lookup sets, and why (``reason`` goes to the log)."""

    status: LookupStatus
    known: bool = False
    skip: bool = False
    entity: str | None = None
    responsible_ext: str | None = None
    route_to: str | None = None
    caller_name: str | None = None
    reason: str = ""

    def variables(self) -> tuple[tuple[str, str], ...]:
        """``(name, value)`` pairs in :data:`variables.OUTPUT_VARIABLES` order.

        On ``error``/``timeout`` only ``CRM_LOOKUP``; on ``ok`` always
        ``CRM_KNOWN`` and ``CRM_SKIP``, the rest when there is a value.
        """
        if self.status is not LookupStatus.OK:
            return ((v.CRM_LOOKUP, self.status.value),)
        values = {
            v.CRM_KNOWN: "1" if self.known else "0",
            v.CRM_SKIP: "1" if self.skip else "0",
            v.CRM_ENTITY: self.entity,
            v.CRM_RESPONSIBLE_EXT: self.responsible_ext,
            v.CALLERID_NAME: self.caller_name,
            v.CRM_ROUTE_TO: self.route_to,
            v.CRM_LOOKUP: self.status.value,
        }
        return tuple((name, values[name]) for name in v.OUTPUT_VARIABLES if values[name])


def failed(status: LookupStatus, reason: str) -> Decision:
    """Fail open: only ``CRM_LOOKUP`` (error or timeout); the dialplan's default route."""
    return Decision(status=status, reason=reason)


def decide(request: LookupRequest, owner: PhoneOwner | None, flags: RoutingFlags) -> Decision:
    """The contract's answer for one call (``owner`` None: no number to look up).

    - no usable caller number (anonymous, withheld, an extension): ``ok``, not known;
    - an employee's own number: ``ok``, not known, skip — even when a client shares it;
    - the exception list: skip, and otherwise as usual (skip changes no routing);
    - a known item: entity, name, responsible's extension; ``CRM_ROUTE_TO`` only when
      this number routes known clients and the responsible is active.
    """
    if request.caller_e164 is None or owner is None:
        return Decision(LookupStatus.OK, reason=f"no caller number: {request.no_number_reason}")
    if owner.employee is not None:
        return Decision(
            LookupStatus.OK,
            skip=True,
            reason=f"employee's own number (extension {owner.employee.extension})",
        )
    item = owner.item
    skip_reason = "; on the exception list" if flags.is_exception else ""
    if item is None:
        return Decision(
            LookupStatus.OK, skip=flags.is_exception, reason="unknown caller" + skip_reason
        )
    responsible = item.responsible
    extension = safe_extension(responsible.extension) if responsible else None
    route_to = None
    if not flags.route_to_responsible:
        why = "routing off for this number"
    elif responsible is None:
        why = "no responsible employee"
    elif not responsible.active:
        why = f"responsible {responsible.extension} inactive"
    elif extension is None:
        why = f"responsible's extension {responsible.extension!r} is not dialable"
    else:
        route_to = extension
        why = f"routing to responsible {extension}"
    name = sanitize(item.name, v.CALLERID_NAME_MAX) or None
    return Decision(
        LookupStatus.OK,
        known=True,
        skip=flags.is_exception,
        entity=item.ref,
        responsible_ext=extension,
        route_to=route_to,
        caller_name=name,
        reason=f"known {item.ref}, {why}{skip_reason}",
    )
