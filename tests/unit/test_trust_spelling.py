"""Property: any spelling of a number that phonenumbers reads as the same E.164 names
the same trust entry, so a sender trusted as "(415) 555-0100" is matched however the
user or the carrier wrote it."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from optin.trust import parse_entry

REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU"]


@st.composite
def spelled_numbers(draw: st.DrawFn) -> tuple[str, str, str]:
    """(region, canonical E.164, one spelling of it a person or carrier might use)."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(
        region, draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE,
                                      phonenumbers.PhoneNumberType.FIXED_LINE]))
    )  # fmt: skip
    assert example is not None
    canonical = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    style = draw(st.sampled_from(["national", "international", "e164", "00", "rfc3966"]))
    if style == "national":
        text = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
    elif style == "international":
        text = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
    elif style == "00":
        text = "00" + canonical[1:]
    elif style == "rfc3966":
        text = phonenumbers.format_number(example, PhoneNumberFormat.RFC3966)
    else:
        text = canonical
    if style in ("national", "international"):
        text = text.replace(" ", draw(st.sampled_from([" ", "-", ".", ""])))
    padding = draw(st.sampled_from(["", " ", "  "]))
    return region, canonical, padding + text + padding


@settings(max_examples=300, deadline=None, derandomize=True)
@given(spelled_numbers())
def test_every_spelling_parses_to_the_same_entry(case: tuple[str, str, str]) -> None:
    region, canonical, text = case
    assert parse_entry(text, region) == canonical


@settings(max_examples=100, deadline=None, derandomize=True)
@given(spelled_numbers(), st.sampled_from(REGIONS))
def test_an_international_spelling_is_the_same_entry_from_any_region(
    case: tuple[str, str, str], user_region: str
) -> None:
    _, canonical, _ = case
    assert parse_entry(canonical, user_region) == canonical
    assert parse_entry("00" + canonical[1:], user_region) == canonical or user_region in ("US",)
