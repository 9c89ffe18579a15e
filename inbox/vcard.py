"""A small vCard 4.0 writer (RFC 6350), for the address book in a data export.

Only what an export needs: a formatted name, phone numbers as ``tel:`` URIs and
email addresses. Text values are escaped (3.4) and lines folded at 75 octets
(3.2) without splitting a UTF-8 sequence, so any vCard 4 reader gets back exactly
the names and addresses that were stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

MAX_LINE_OCTETS = 75
_CRLF = "\r\n"


@dataclass(frozen=True, slots=True)
class Card:
    name: str
    phones: Sequence[str] = ()  # E.164
    emails: Sequence[str] = ()


def escape_text(value: str) -> str:
    r"""A TEXT value: backslash, comma and semicolon escaped, every line break as \n
    (a bare CR or CRLF too, so that no raw line break can end the content line)."""
    out: list[str] = []
    previous_cr = False
    for ch in value:
        if ch == "\n" and previous_cr:
            previous_cr = False
            continue  # the LF of a CRLF already written as \n
        previous_cr = ch == "\r"
        if ch in "\r\n":
            out.append("\\n")
        elif ch in "\\,;":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def fold(line: str) -> str:
    """The content line folded into lines of at most 75 octets, CRLF-terminated; a
    continuation starts with one space (which counts toward its 75)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    limit = MAX_LINE_OCTETS
    for ch in line:
        width = len(ch.encode("utf-8"))
        if size + width > limit:
            pieces.append("".join(current))
            current, size, limit = [], 0, MAX_LINE_OCTETS - 1
        current.append(ch)
        size += width
    pieces.append("".join(current))
    return (_CRLF + " ").join(pieces) + _CRLF


def _card_lines(card: Card) -> Iterator[str]:
    yield "BEGIN:VCARD"
    yield "VERSION:4.0"
    # FN is the one property vCard 4 requires; a contact stored without a name gets
    # its first address, as address books show it.
    shown = card.name or next(iter([*card.phones, *card.emails]), "")
    yield "FN:" + escape_text(shown)
    for phone in card.phones:
        # A URI value is not TEXT-escaped; E.164 has nothing to escape anyway.
        yield "TEL;VALUE=uri;TYPE=cell:tel:" + phone
    for email in card.emails:
        yield "EMAIL:" + escape_text(email)
    yield "END:VCARD"


def write_card(card: Card) -> str:
    return "".join(fold(line) for line in _card_lines(card))


def write_cards(cards: Iterable[Card]) -> Iterator[bytes]:
    """Each card as UTF-8 bytes (vCard 4 is always UTF-8), for streaming out."""
    for card in cards:
        yield write_card(card).encode("utf-8")
