"""Phone normalisation: one number in any spelling is one E.164 key (B5)."""

from __future__ import annotations

import pytest

from ami_daemon import phones
from ami_daemon.phones import NotANumberReason

SPELLINGS = [
    # (raw, region, E.164)
    ("600111222", "ES", "+34600111222"),
    ("0034600111222", "ES", "+34600111222"),
    ("+34 600-111-222", "ES", "+34600111222"),
    ("+34600111222", "DE", "+34600111222"),
    ("(91) 123 45 67", "ES", "+34911234567"),
    ("0034911000111", "ES", "+34911000111"),
    ("+1 650 253 0000", "ES", "+16502530000"),
    ("(650) 253-0000", "US", "+16502530000"),
    ("011 34 600 111 222", "US", "+34600111222"),
    ("030 123456789", "DE", "+4930123456789"),
    ("+49 (0)30 1234567", "ES", "+49301234567"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("8 (495) 123-45-67", "RU", "+74951234567"),
    ('"600111222"', "ES", "+34600111222"),
    ("600.111.222", "ES", "+34600111222"),
]


@pytest.mark.parametrize(("raw", "region", "e164"), SPELLINGS)
def test_spellings_normalise_to_e164(raw: str, region: str, e164: str) -> None:
    assert phones.normalize(raw, region) == e164


NOT_NUMBERS = [
    ("", NotANumberReason.EMPTY),
    ("   ", NotANumberReason.EMPTY),
    (None, NotANumberReason.EMPTY),
    ("anonymous", NotANumberReason.ANONYMOUS),
    ("Anonymous", NotANumberReason.ANONYMOUS),
    ("restricted", NotANumberReason.ANONYMOUS),
    ("unknown", NotANumberReason.UNKNOWN),
    ("<unknown>", NotANumberReason.UNKNOWN),
    ("201", NotANumberReason.EXTENSION),
    ("101", NotANumberReason.EXTENSION),
    ("150010001", None),  # 9 digits: a number, not an extension
    ("6001xxxxx", NotANumberReason.MASKED),
    ("****", NotANumberReason.MASKED),
    ("hello", NotANumberReason.GARBAGE),
    ("600111222; DROP TABLE", NotANumberReason.GARBAGE),
    ("+", NotANumberReason.GARBAGE),
    ("60011122", NotANumberReason.IMPOSSIBLE),
    ("+3460011122233344", NotANumberReason.IMPOSSIBLE),
]


@pytest.mark.parametrize(("raw", "reason"), NOT_NUMBERS)
def test_values_that_are_not_numbers_say_why(
    raw: str | None, reason: NotANumberReason | None
) -> None:
    if reason is None:
        assert phones.try_normalize(raw, "ES") is not None
        return
    with pytest.raises(phones.NotANumber) as caught:
        phones.normalize(raw, "ES")
    assert caught.value.reason is reason
    assert reason.value in str(caught.value)
    assert phones.try_normalize(raw, "ES") is None


def test_extension_is_filtered_before_phonenumbers_in_any_region() -> None:
    # phonenumbers alone would accept 101 as a German number.
    assert phones.try_normalize("101", "DE") is None


def test_country_of_numbers() -> None:
    assert phones.country_of("+34600111222") == "ES"
    assert phones.country_of("+16502530000") == "US"
    assert phones.country_of("+442079460958") == "GB"
    assert phones.country_of("nonsense") is None
