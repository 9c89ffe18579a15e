"""The vCard 4.0 writer of exports, read back by the project's own address-book parser,
and the file names an export gives attachments."""

from __future__ import annotations

import pytest

from inbox.export import safe_member_name
from inbox.vcard import Card, escape_text, fold, write_card, write_cards
from optin.contacts import parse_contacts


def parse_back(*cards: Card) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    data = b"".join(write_cards(cards))
    report = parse_contacts(data, region="US", filename="contacts.vcf")
    assert report.rejected == ()
    return [(c.name, c.phones, c.emails) for c in report.contacts]


def test_a_card_is_vcard_4_with_crlf_lines() -> None:
    text = write_card(Card("Ada", ("+14155550100",), ("ada@example.com",)))
    assert text.startswith("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ada\r\n")
    assert "TEL;VALUE=uri;TYPE=cell:tel:+14155550100\r\n" in text
    assert text.endswith("END:VCARD\r\n")
    assert "\n" not in text.replace("\r\n", "")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a,b", "a\\,b"),
        ("a;b", "a\\;b"),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\nb"),
        ("a\rb", "a\\nb"),
        ("a\n\nb", "a\\n\\nb"),
    ],
)
def test_text_is_escaped(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_names_with_separators_read_back_unchanged() -> None:
    name = "Hopper, Grace; RADM \\ USN"
    assert parse_back(Card(name, ("+14155550100",))) == [(name, ("+14155550100",), ())]


def test_a_line_break_in_a_name_cannot_inject_a_property() -> None:
    hostile = "Mallory\r\nTEL:+14155550999\r\nEND:VCARD\r\nBEGIN:VCARD"
    contacts = parse_back(Card(hostile, ("+14155550100",)))
    assert len(contacts) == 1
    assert contacts[0][1] == ("+14155550100",)


def test_long_lines_are_folded_at_75_octets_without_splitting_characters() -> None:
    name = "\u00e9\u6f22\U0001f600" * 40
    text = write_card(Card(name, ("+14155550100",)))
    lines = text.split("\r\n")
    assert all(len(line.encode("utf-8")) <= 75 for line in lines)
    assert len(lines) > 6
    assert parse_back(Card(name, ("+14155550100",)))[0][0] == name


def test_fold_keeps_short_lines_whole() -> None:
    assert fold("FN:Ada") == "FN:Ada\r\n"


def test_several_numbers_and_addresses_read_back() -> None:
    card = Card("Ada", ("+14155550100", "+442079460958"), ("a@example.com", "b@example.org"))
    assert parse_back(card) == [
        ("Ada", ("+14155550100", "+442079460958"), ("a@example.com", "b@example.org"))
    ]


def test_a_contact_without_a_name_is_shown_by_its_first_address() -> None:
    assert "FN:a@example.com\r\n" in write_card(Card("", (), ("a@example.com",)))


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("cat.png", "image/png", "cat.png"),
        ("../../etc/passwd", "text/plain", "passwd"),
        ("..\\..\\win.ini", "text/plain", "win.ini"),
        (None, "image/jpeg", "file.jpg"),
        ("", "application/x-unknown-thing", "file.bin"),
        ("...", "image/png", "file.png"),
        (".hidden", "text/plain", "hidden"),
        ("a b;c|d$(e).txt", "text/plain", "a_b_c_d_e_.txt"),
        ("r\u00e9sum\u00e9.pdf", "application/pdf", "r\u00e9sum\u00e9.pdf"),
        ("x\x00y\n.txt", "text/plain", "x_y_.txt"),
    ],
)
def test_attachment_names_in_the_archive_are_safe(
    filename: str | None, content_type: str, expected: str
) -> None:
    assert safe_member_name(filename, content_type) == expected


def test_a_long_attachment_name_keeps_its_extension() -> None:
    name = safe_member_name("x" * 300 + ".jpeg", "image/jpeg")
    assert len(name) <= 100 and name.endswith(".jpeg")
