"""Address parsing: what a person types becomes one canonical form, or a clear error."""

from __future__ import annotations

import pytest

from inbox.addresses import parse_email, parse_phone, parse_sender_id, parse_sms_sender
from inbox.errors import AddressError


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("415-555-0100", "US", "+14155550100"),
        ("415.555.0100", "US", "+14155550100"),
        ("+1 415 555 0100", "US", "+14155550100"),
        ("+1 415 555 0100", "GB", "+14155550100"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10", "US", "+14155550100"),
        ("tel:+1-415-555-0100", "US", "+14155550100"),
        ("TEL:+1-415-555-0100;ext=22", "US", "+14155550100"),
        ("  (415) 555-0100  ", "US", "+14155550100"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
    ],
)
def test_phone_spellings_parse_to_e164(text: str, region: str, expected: str) -> None:
    assert parse_phone(text, region) == expected


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("", "empty"),
        ("hello", "not a phone number"),
        ("12", "too few digits"),
        ("+1 415 555 0100 1234 5678 99", "too many digits"),
        ("ada@example.com", "email"),
        ("+999 1234 5678", "country code"),
        ("x" * 300, "too long"),
        ("tel:", "empty"),
    ],
)
def test_unparseable_phone_is_refused_saying_why(text: str, reason_part: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_phone(text, "US")
    assert reason_part in info.value.reason


def test_sms_sender_accepts_short_codes_and_alphanumeric_ids() -> None:
    assert parse_sms_sender("72975", "US") == "short:72975"
    assert parse_sms_sender("MyBank", "GB") == "alpha:MYBANK"
    assert parse_sms_sender("+14155550100", "US") == "+14155550100"


def test_sms_sender_refuses_garbage() -> None:
    with pytest.raises(AddressError):
        parse_sms_sender("<script>", "US")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ada@Example.COM", "Ada@example.com"),
        ("ada@example.com.", "ada@example.com"),
        ("mailto:ada@example.com", "ada@example.com"),
        ("ada+tag@mail.example.co.uk", "ada+tag@mail.example.co.uk"),
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("josé@example.com", "josé@example.com"),
    ],
)
def test_email_addresses_are_canonical(text: str, expected: str) -> None:
    assert parse_email(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '"a@trusted.com" <evil@x.com>',
        "victim@bank.com(<attacker@evil.com>",
        "a@b@c.com",
        "no-at-sign",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada..b@example.com",
        ".ada@example.com",
        "ada b@example.com",
        "ada@exa_mple.com",
        "ada@-example.com",
    ],
)
def test_ambiguous_or_invalid_email_is_refused(text: str) -> None:
    with pytest.raises(AddressError):
        parse_email(text)


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("short:12345", "short:12345"),
        ("SHORT: 12345", "short:12345"),
        ("alpha:MyBank", "alpha:MYBANK"),
    ],
)
def test_sender_ids_parse_to_their_canonical_form(typed: str, canonical: str) -> None:
    assert parse_sender_id(typed) == canonical


@pytest.mark.parametrize(
    "typed", ["short:4155550100", "alpha:1-800-FLOWERS", "alpha:12345", "short:"]
)
def test_a_sender_id_prefix_is_binding(typed: str) -> None:
    with pytest.raises(AddressError):
        parse_sender_id(typed)
