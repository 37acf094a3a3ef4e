"""Phone numbers: whatever Asterisk or an import gives, turned into E.164.

Asterisk hands us caller IDs exactly as the carrier sent them: national
(``600111222``), with the international prefix (``0034600111222``), with a
plus, with spaces, dashes and brackets from a CSV, or not a number at all
(``anonymous`` when the caller withheld it, ``<unknown>`` when the trunk sent
nothing, an internal extension such as ``201`` on an internal call).

Everything that stores or compares numbers goes through :func:`normalize`, so
one number in any spelling is one key (FEATURES B5).  Extensions are filtered
out *before* phonenumbers sees them: for region DE it would happily read
``101`` as a German number.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache

import phonenumbers

#: Longest run of digits still read as an internal extension, not a number.
MAX_EXTENSION_DIGITS = 6

#: Caller IDs Asterisk and carriers use for "no number": chan_sip/pjsip write
#: ``anonymous`` for a withheld number, ``<unknown>``/``unknown`` when none came.
_ANONYMOUS_WORDS = frozenset(
    {
        "anonymous",
        "restricted",
        "private",
        "withheld",
        "unavailable",
        "blocked",
        "presentation restricted",
    }
)
_UNKNOWN_WORDS = frozenset({"", "unknown", "<unknown>", "none", "null", "s"})
_SEPARATORS = re.compile(r"[\s\-\.\(\)/]+")
_MASKED = re.compile(r"^\+?[0-9]*[xX*#]+[0-9xX*#]*$")


class NotANumberReason(enum.Enum):
    """Why a value is not an outside phone number."""

    EMPTY = "empty"
    ANONYMOUS = "anonymous (caller ID withheld)"
    UNKNOWN = "unknown (no caller ID sent)"
    MASKED = "masked digits"
    EXTENSION = "an internal extension, not an outside number"
    GARBAGE = "not a phone number"
    IMPOSSIBLE = "not a possible number for its country"


class NotANumber(ValueError):
    """Raised by :func:`normalize`; ``reason`` says why, ``value`` what was given."""

    def __init__(self, value: str, reason: NotANumberReason, detail: str = "") -> None:
        self.value = value
        self.reason = reason
        text = f"{value!r} is {reason.value}"
        super().__init__(f"{text}: {detail}" if detail else text)


def is_extension(raw: str) -> bool:
    """True for short all-digit values such as ``201``: employees' extensions."""
    digits = raw.strip()
    return digits.isdigit() and len(digits) <= MAX_EXTENSION_DIGITS


def normalize(raw: str | None, region: str) -> str:
    """Return ``raw`` in E.164 (``+34600111222``) or raise :class:`NotANumber`.

    ``region`` (ISO 3166 alpha-2, e.g. ``ES``) reads numbers without a country
    code and decides the international prefix (``00`` in Europe, ``011`` in
    North America).
    """
    return _normalize_cached(raw or "", region.upper())


def try_normalize(raw: str | None, region: str) -> str | None:
    """Like :func:`normalize`, but ``None`` for anything that is not a number."""
    try:
        return normalize(raw, region)
    except NotANumber:
        return None


@lru_cache(maxsize=65536)
def _normalize_cached(raw: str, region: str) -> str:
    value = raw.strip().strip('"').strip()
    lowered = value.lower()
    if not value:
        raise NotANumber(raw, NotANumberReason.EMPTY)
    if lowered in _ANONYMOUS_WORDS:
        raise NotANumber(raw, NotANumberReason.ANONYMOUS)
    if lowered in _UNKNOWN_WORDS:
        raise NotANumber(raw, NotANumberReason.UNKNOWN)
    compact = _SEPARATORS.sub("", value)
    if _MASKED.match(compact):
        raise NotANumber(raw, NotANumberReason.MASKED)
    if is_extension(compact):
        raise NotANumber(raw, NotANumberReason.EXTENSION)
    if not re.fullmatch(r"\+?[0-9]+", compact):
        raise NotANumber(raw, NotANumberReason.GARBAGE)
    try:
        parsed = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        raise NotANumber(raw, NotANumberReason.GARBAGE, str(exc)) from None
    if not phonenumbers.is_possible_number(parsed):
        raise NotANumber(raw, NotANumberReason.IMPOSSIBLE)
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def country_of(e164: str) -> str | None:
    """ISO region of an E.164 number (``+34600111222`` → ``ES``), None if unknown."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed)
    return str(region) if region and region != "ZZ" else None


def is_valid_region(region: str) -> bool:
    """True when phonenumbers knows ``region`` (``ES``, ``DE``, ``US``...)."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS
