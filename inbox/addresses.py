"""Canonical address types and the only parsers that produce them.

An :data:`E164` or :data:`EmailAddress` value has been validated; a plain ``str``
has not. Everything that stores or compares addresses takes these types.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import NewType, TypeVar

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from inbox.errors import AddressError

E164 = NewType("E164", str)
EmailAddress = NewType("EmailAddress", str)
#: An SMS sender without a phone number: ``short:12345`` (short code) or ``alpha:MYBANK``.
SenderId = NewType("SenderId", str)
#: A whole email domain on a trust list, written ``@example.com`` (IDNA, lower case).
EmailDomain = NewType("EmailDomain", str)
Address = E164 | EmailAddress | SenderId

_MAX_INPUT = 254  # RFC 5321 path limit; nothing longer is an address of either kind
_LOCAL_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~.-"
)
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown or missing country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too few digits after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too few digits for a phone number",
    NumberParseException.TOO_LONG: "too many digits for a phone number",
}


def parse_phone(text: str, default_region: str = "US") -> E164:
    """Parse a phone number as a person types it into E.164.

    Accepts national formats for ``default_region`` ("(415) 555-0100"), ``+`` and
    ``00`` international prefixes, full-width digits and ``tel:`` URIs. Raises
    :class:`AddressError` saying why for anything else. Results are cached: the
    webhook hot path sees the same few numbers over and over.
    """
    return _parse_phone_cached(text, default_region.upper())


@functools.lru_cache(maxsize=65536)
def _parse_phone_cached(text: str, region: str) -> E164:
    if len(text) > _MAX_INPUT:
        raise AddressError(text, "too long to be a phone number")
    candidate = unicodedata.normalize("NFKC", text).strip()
    if candidate.lower().startswith("tel:"):
        # RFC 3966: tel:+1-415-555-0100;ext=1 - parameters follow ';'
        candidate = candidate[4:].split(";", 1)[0]
    if not candidate:
        raise AddressError(text, "empty phone number")
    if "@" in candidate:
        raise AddressError(text, "looks like an email address, not a phone number")
    digits_only = re.sub(r"[\s().\-/]", "", candidate)
    # "00" is the international call prefix almost everywhere except North America,
    # where people still paste "0044 ..." numbers from European correspondents.
    if digits_only.startswith("00") and not digits_only.startswith("000"):
        candidate = "+" + digits_only[2:]
    try:
        number = phonenumbers.parse(candidate, region)
    except NumberParseException as exc:
        raise AddressError(text, _PARSE_ERRORS.get(exc.error_type, "not a phone number")) from None
    if not phonenumbers.is_possible_number(number):
        reason = phonenumbers.is_possible_number_with_reason(number)
        raise AddressError(text, _possible_reason(reason))
    if not phonenumbers.is_valid_number(number):
        raise AddressError(text, "not a valid number for its country")
    return E164(phonenumbers.format_number(number, PhoneNumberFormat.E164))


def _possible_reason(code: int) -> str:
    reasons = {
        phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.ValidationResult.TOO_SHORT: "too few digits for a phone number",
        phonenumbers.ValidationResult.TOO_LONG: "too many digits for a phone number",
        phonenumbers.ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    }
    return reasons.get(code, "not a valid phone number")


def region_of(number: E164) -> str:
    """The ISO region a canonical number belongs to (a user's default region)."""
    region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    return region or "US"


T = TypeVar("T")


def parse_in_regions(parse: Callable[[str, str], T], text: str, regions: Iterable[str]) -> T:
    """``parse(text, region)`` for each region in turn (a user's own country, then the
    deployment's: a UK user of a US deployment types US numbers without +1 as often
    as UK ones without +44); the first region's AddressError when none reads it."""
    first: AddressError | None = None
    for region in dict.fromkeys(regions):
        try:
            return parse(text, region)
        except AddressError as exc:
            first = first or exc
    if first is None:
        raise AddressError(text, "no region to read the number with")
    raise first


def format_phone(number: E164, region: str) -> str:
    """How a person in ``region`` writes the number: national form for a number of
    that region, international form otherwise."""
    parsed = phonenumbers.parse(number, None)
    if phonenumbers.region_code_for_number(parsed) == region:
        return phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, PhoneNumberFormat.INTERNATIONAL)


def format_international(number: E164) -> str:
    """The number with its country code, spaced as in its country ("+1 415-555-0100"):
    the form that shows a person which country a number they typed was read in."""
    return phonenumbers.format_number(
        phonenumbers.parse(number, None), PhoneNumberFormat.INTERNATIONAL
    )


def _ascii_domain(text: str, domain: str) -> str:
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AddressError(text, "the domain is not a valid host name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise AddressError(text, "the domain is not a valid host name")
    return ascii_domain


def parse_email_domain(text: str) -> EmailDomain:
    """Parse a domain entry written ``@example.com`` (the leading '@' says it is a
    whole domain rather than one address)."""
    if len(text) > _MAX_INPUT:
        raise AddressError(text, "too long to be a domain")
    candidate = text.strip()
    if not candidate.startswith("@") or candidate.count("@") != 1:
        raise AddressError(text, "a domain entry is written @example.com")
    return EmailDomain("@" + _ascii_domain(text, candidate[1:]))


def domain_of(address: EmailAddress) -> EmailDomain:
    """The domain entry that covers ``address``."""
    return EmailDomain("@" + address.rpartition("@")[2])


def parse_email(text: str) -> EmailAddress:
    """Parse a bare ``local@domain`` address; lower-case and IDNA-encode the domain.

    Refuses display names, comments, routes and anything with more or fewer than
    one ``@``: an address that could be read two ways must never match a trusted
    entry. The local part keeps its case (RFC 5321 says it is case-sensitive).
    """
    if len(text) > _MAX_INPUT:
        raise AddressError(text, "too long to be an email address")
    candidate = text.strip()
    if candidate.lower().startswith("mailto:"):
        candidate = candidate[7:]
    if candidate.count("@") != 1:
        raise AddressError(text, "an email address has exactly one '@'")
    local, domain = candidate.split("@")
    if not local:
        raise AddressError(text, "nothing before the '@'")
    if not _local_part_ok(local):
        raise AddressError(text, "the part before '@' has characters not allowed there")
    return EmailAddress(f"{local}@{_ascii_domain(text, domain)}")


def _local_part_ok(local: str) -> bool:
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    # Dot-atom only (no quoted strings); non-ASCII letters are allowed for SMTPUTF8 (RFC 6531).
    return all(
        ch in _LOCAL_ATEXT or (ord(ch) > 127 and ch.isprintable() and not ch.isspace())
        for ch in local
    )


def parse_address(text: str, default_region: str = "US") -> Address:
    """An email address if the text has an '@', else a phone number."""
    if "@" in text:
        return parse_email(text)
    return parse_phone(text, default_region)


def is_email(address: str) -> bool:
    return "@" in address and not address.startswith("@")


_SHORT_CODE = re.compile(r"^[0-9]{3,8}$")
_ALPHA_SENDER = re.compile(r"^[A-Za-z0-9 &+\-._]{1,11}$")


def parse_sender_id(text: str) -> SenderId:
    """A sender id written in its canonical form, ``short:12345`` or ``alpha:MYBANK``
    (as the trust list shows it); the prefix is binding."""
    prefix, sep, rest = text.strip().partition(":")
    candidate = unicodedata.normalize("NFKC", rest).strip()
    kind = prefix.lower()
    if sep and kind == "short" and _SHORT_CODE.match(candidate):
        return SenderId(f"short:{candidate}")
    if (
        sep
        and kind == "alpha"
        and _ALPHA_SENDER.match(candidate)
        and any(c.isalpha() for c in candidate)
    ):
        return SenderId(f"alpha:{candidate.upper()}")
    if kind == "short":
        raise AddressError(text, "a short code is 3 to 8 digits")
    raise AddressError(
        text, "an alphanumeric sender id is 1 to 11 letters, digits or spaces, with a letter"
    )


def parse_sms_sender(text: str, default_region: str = "US") -> Address:
    """The sender of an SMS: an E.164 number, else a short code (``short:12345``) or an
    alphanumeric sender id (``alpha:MYBANK``), which carriers deliver without a number.
    Such senders are canonical too, so that a user can trust or block them."""
    try:
        return parse_phone(text, default_region)
    except AddressError:
        candidate = unicodedata.normalize("NFKC", text).strip()
        if _SHORT_CODE.match(candidate):
            return SenderId(f"short:{candidate}")
        if _ALPHA_SENDER.match(candidate) and any(c.isalpha() for c in candidate):
            return SenderId(f"alpha:{candidate.upper()}")
        raise
