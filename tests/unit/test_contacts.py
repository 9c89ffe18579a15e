"""Address-book import: real-world shaped vCard, CSV and JSON files become contacts with
canonical addresses; a bad value is reported, a bad file is refused whole."""

from __future__ import annotations

import csv
import io
import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox.addresses import E164, EmailAddress
from optin.contacts import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CONTACTS,
    MAX_NAME_CHARS,
    REASON_NO_ADDRESS,
    Contact,
    ContactsTooLarge,
    ImportReport,
    MalformedContacts,
    RejectedEntry,
    parse_contacts,
)
from optin.errors import OptinError

# --- samples, shaped like the files the exporters write ----------------------------------

# Google Contacts "Google CSV" export (2024 layout): one row per contact, several values of
# one kind in one cell joined by " ::: ", per-value Label columns, phonetic name columns.
GOOGLE_CSV = (
    "First Name,Middle Name,Last Name,Phonetic First Name,Phonetic Middle Name,"
    "Phonetic Last Name,Name Prefix,Name Suffix,Nickname,File As,Organization Name,"
    "Organization Title,Organization Department,Birthday,Notes,Photo,Labels,"
    "E-mail 1 - Label,E-mail 1 - Value,E-mail 2 - Label,E-mail 2 - Value,"
    "Phone 1 - Label,Phone 1 - Value,Phone 2 - Label,Phone 2 - Value,"
    "Address 1 - Label,Address 1 - Formatted,Address 1 - Street,Address 1 - City,"
    "Address 1 - Postal Code,Address 1 - Country\r\n"
    "Ada,,Lovelace,,,,,,,,Analytical Engines Ltd,,,1815-12-10,,,* myContacts,"
    "* Home,ada@example.com ::: ada.lovelace@example.org,Work,ADA@Example.COM,"
    "Mobile,+1 415-555-0100 ::: (650) 253-0000,Work,+44 20 7946 0958,"
    "Home,\"12 St James's Square\nLondon\",12 St James's Square,London,SW1Y 4JH,UK\r\n"
    'Zoë,,Ångström,,,,,,,,,,,,"Met at the conference,\nStockholm 2023",,* myContacts,'
    ",,,,Mobile,+46 70 123 45 67,,,,,,,,\r\n"
    ",,,,,,,,,,Pizza Palace,,,,,,* myContacts,,,,,Work,(212) 555-0199,,,,,,,,\r\n"
)

# Outlook "Export to a file > Comma Separated Values": every field quoted, phone columns by
# kind, an "E-mail Display Name" that is not an address, an assistant's number.
OUTLOOK_CSV = (
    '"Title","First Name","Middle Name","Last Name","Suffix","Company","Department",'
    '"Job Title","Business Street","Business City","Business Postal Code",'
    '"Assistant\'s Phone","Business Fax","Business Phone","Business Phone 2","Callback",'
    '"Car Phone","Home Phone","Mobile Phone","Other Phone","Pager","Primary Phone",'
    '"E-mail Address","E-mail Type","E-mail Display Name","E-mail 2 Address","Notes"\r\n'
    '"Mr.","John","Q","Public","","Contoso Ltd","Sales","Account Manager",'
    '"1 Microsoft Way","Redmond","98052","(425) 555-0111","","(425) 555-0100","","",'
    '"","","(425) 555-0123","","","","john.public@contoso.com","SMTP",'
    '"John Public (john.public@contoso.com)","","Prefers texts"\r\n'
    '"","Marie","","Curie","","","","","","","","","","","","","","01 23 45 67 89",'
    '"","","","","marie@example.fr","SMTP","Marie Curie (marie@example.fr)","",""\r\n'
)

# Apple Contacts (macOS/iOS) vCard 3.0: CRLF, "itemN." groups tying a value to its label,
# lines folded at 75 octets with a leading space, escaped commas and semicolons, a photo.
APPLE_VCARD = (
    """BEGIN:VCARD
VERSION:3.0
PRODID:-//Apple Inc.//macOS 14.4//EN
N:Ångström;Zoë;;;
FN:Zoë Ångström
ORG:Ångström Konsult AB;
item1.TEL;type=pref:+46 70 123 45 67
item1.X-ABLabel:_$!<Mobile>!$_
TEL;type=CELL;type=VOICE:+1 (415) 555-0100
TEL;type=HOME;type=VOICE:(415) 555-0100
item2.EMAIL;type=INTERNET;type=pref:zoe.angstrom@exa
 mple.se
item2.X-ABLabel:_$!<Other>!$_
item3.ADR;type=HOME;type=pref:;;Storgatan 1;Stockholm;;111 22;Sweden
NOTE:Met at the conference\\, Stockholm\\; ask about the\\nboat
PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgICAgMCAgIDAw
 MDBAYEBAQEBAgGBgUGBwkHBwYICAYHCQkHBwsKCQoKCQsLCAsLDAwMDAwMDQ0NDQ0NDQ0NDQ0=
END:VCARD
BEGIN:VCARD
VERSION:3.0
N:O'Brien;Seán;;;
FN:O'Brien\\, Seán \\; Family
TEL;type=WORK;type="voice,pref":+353 1 234 5678
item1.EMAIL;type=INTERNET:sean@example.ie
END:VCARD
"""
).replace("\n", "\r\n")

# vCard 4.0 (RFC 6350): TEL as a tel: URI with VALUE=uri, quoted TYPE lists, an extension.
VCARD4 = """BEGIN:VCARD
VERSION:4.0
FN:山田太郎
N:山田;太郎;;;
TEL;VALUE=uri;TYPE="voice,cell";PREF=1:tel:+81-90-1234-5678
TEL;VALUE=uri;TYPE=work:tel:+81-3-1234-5678;ext=102
EMAIL;TYPE=work:taro.yamada@example.co.jp
END:VCARD
BEGIN:VCARD
VERSION:4.0
N:Doe;John;Quincy,Adams;Dr.;Jr.
TEL;VALUE=uri;TYPE=home:tel:+1-212-555-0199
END:VCARD
"""

# vCard 2.1 from an old phone: quoted-printable UTF-8 names, bare TYPE parameters.
VCARD21 = (
    """BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=E5=B1=B1=E7=94=B0;=E8=8A=B1=E5=AD=90;;;
FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=E5=B1=B1=E7=94=B0=E8=8A=B1=E5=AD=90
TEL;CELL;PREF:090-1234-5678
END:VCARD
"""
).replace("\n", "\r\n")

JSON_LIST = json.dumps(
    [
        {"name": "Grace Hopper", "phones": ["+1 (415) 555-0100", "415.555.0100"]},
        {"name": "Zoë Ångström", "phone": "+46 70 123 45 67", "email": "zoe@example.se"},
        {"name": "山田太郎", "emails": ["taro@example.jp"], "phones": []},
    ],
    ensure_ascii=False,
)


def parse(
    text: str | bytes,
    region: str = "US",
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_contacts: int = DEFAULT_MAX_CONTACTS,
) -> ImportReport:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_contacts(
        data,
        region=region,
        filename=filename,
        content_type=content_type,
        max_bytes=max_bytes,
        max_contacts=max_contacts,
    )


def contact(name: str, phones: tuple[str, ...] = (), emails: tuple[str, ...] = ()) -> Contact:
    """The expected contact, its addresses typed as the parsers' output."""
    return Contact(name, tuple(E164(p) for p in phones), tuple(EmailAddress(e) for e in emails))


def by_name(report: ImportReport) -> dict[str, Contact]:
    return {contact.name: contact for contact in report.contacts}


# --- Google, Outlook and generic CSV -------------------------------------------------------


def test_google_csv_splits_multi_value_cells_and_collapses_duplicates() -> None:
    ada = by_name(parse(GOOGLE_CSV))["Ada Lovelace"]
    assert ada.phones == ("+14155550100", "+16502530000", "+442079460958")
    assert ada.emails == ("ada@example.com", "ada.lovelace@example.org", "ADA@example.com")


def test_google_csv_labels_and_phonetic_columns_are_not_values() -> None:
    report = parse(GOOGLE_CSV)
    assert report.format == "csv"
    assert report.rejected == ()
    assert len(report.contacts) == 3


def test_google_csv_contact_without_a_name_is_named_after_its_organisation() -> None:
    assert by_name(parse(GOOGLE_CSV))["Pizza Palace"].phones == ("+12125550199",)


def test_google_csv_keeps_non_ascii_names() -> None:
    assert by_name(parse(GOOGLE_CSV))["Zoë Ångström"].phones == ("+46701234567",)


def test_outlook_csv_reads_every_phone_column_of_the_contact_but_not_the_assistants() -> None:
    john = by_name(parse(OUTLOOK_CSV))["John Q Public"]
    assert john.phones == ("+14255550100", "+14255550123")


def test_outlook_csv_email_display_name_is_not_an_address() -> None:
    report = parse(OUTLOOK_CSV, region="US")
    assert by_name(report)["John Q Public"].emails == ("john.public@contoso.com",)
    assert [entry.value for entry in report.rejected] == ["01 23 45 67 89"]  # French, read as US


def test_national_number_without_country_code_uses_the_users_region() -> None:
    marie = by_name(parse(OUTLOOK_CSV, region="FR"))["Marie Curie"]
    assert marie.phones == ("+33123456789",)


def test_generic_lower_case_csv() -> None:
    report = parse("name,phone,email\nGrace Hopper,(415) 555-0100,grace@example.com\n")
    assert report.contacts == (contact("Grace Hopper", ("+14155550100",), ("grace@example.com",)),)


def test_uk_mobile_in_national_format_with_region_gb() -> None:
    report = parse("Name,Mobile\nAlan Turing,07911 123456\n", region="gb")
    assert report.contacts[0].phones == ("+447911123456",)


def test_uk_drama_range_number_is_rejected_as_invalid() -> None:
    # Ofcom reserves 07700 900000-900999 for fiction; the number metadata calls it invalid.
    report = parse("Name,Mobile\nSherlock Holmes,07700 900123\n", region="GB")
    assert report.contacts == ()
    assert report.rejected == (
        RejectedEntry(2, "Sherlock Holmes", "07700 900123", "not a valid number for its country"),
    )


def test_semicolon_delimited_csv_from_a_european_excel() -> None:
    text = (
        "Vorname;Nachname;Mobiltelefon;E-Mail-Adresse\nJürgen;Müller;0151 23456789;j@example.de\n"
    )
    report = parse(text, region="DE")
    assert report.contacts == (contact("Jürgen Müller", ("+4915123456789",), ("j@example.de",)),)


def test_tab_delimited_csv() -> None:
    report = parse("Name\tPhone\nAda\t+44 20 7946 0958\n")
    assert report.contacts[0].phones == ("+442079460958",)


def test_utf16_csv_with_byte_order_mark() -> None:
    data = OUTLOOK_CSV.encode("utf-16")  # Outlook's "Unicode" CSV: UTF-16LE with a BOM
    assert data[:2] == b"\xff\xfe"
    assert by_name(parse(data))["John Q Public"].emails == ("john.public@contoso.com",)


def test_utf8_byte_order_mark_does_not_hide_the_first_header() -> None:
    report = parse("\ufeffName,Phone\nAda,+44 20 7946 0958\n".encode())
    assert report.contacts[0].name == "Ada"


def test_csv_rejection_names_the_first_line_of_a_multiline_record() -> None:
    text = 'Name,Notes,Phone\nAda,"line one\nline two",+44 20 7946 0958\nBob,,12\n'
    assert parse(text).rejected == (
        RejectedEntry(4, "Bob", "12", "too few digits for a phone number"),
    )


def test_csv_without_any_phone_or_email_column_is_malformed() -> None:
    with pytest.raises(MalformedContacts) as info:
        parse("Name,Company,Birthday\nAda,Engines,1815-12-10\n")
    assert info.value.line == 1
    assert "no phone or email column" in str(info.value)


def test_csv_with_an_unterminated_quote_is_malformed() -> None:
    with pytest.raises(MalformedContacts) as info:
        parse('Name,Phone\nAda,"+44 20 7946 0958\nBob,(415) 555-0100\n')
    assert "not valid CSV" in str(info.value)


def test_csv_with_a_header_and_no_rows_is_malformed() -> None:
    with pytest.raises(MalformedContacts, match="no contacts"):
        parse("Name,Phone,Email\r\n")


# --- vCard ---------------------------------------------------------------------------------


def test_apple_vcard_reads_grouped_and_folded_values() -> None:
    zoe = by_name(parse(APPLE_VCARD))["Zoë Ångström"]
    assert zoe == contact(
        "Zoë Ångström", ("+46701234567", "+14155550100"), ("zoe.angstrom@example.se",)
    )


def test_apple_vcard_unescapes_commas_and_semicolons() -> None:
    report = parse(APPLE_VCARD)
    assert "O'Brien, Seán ; Family" in by_name(report)
    assert report.format == "vcard"


def test_vcard_with_quoted_type_list_parameter() -> None:
    assert by_name(parse(APPLE_VCARD))["O'Brien, Seán ; Family"].phones == ("+35312345678",)


def test_vcard4_tel_uri_with_extension_keeps_the_main_number() -> None:
    taro = by_name(parse(VCARD4))["山田太郎"]
    assert taro.phones == ("+819012345678", "+81312345678")
    assert taro.emails == ("taro.yamada@example.co.jp",)


def test_vcard_without_fn_is_named_from_n() -> None:
    assert "Dr. John Quincy Adams Doe Jr." in by_name(parse(VCARD4))


def test_vcard_n_of_a_japanese_name_puts_the_family_name_first() -> None:
    text = "BEGIN:VCARD\nVERSION:3.0\nN:山田;太郎;;;\nTEL:090-1234-5678\nEND:VCARD\n"
    assert parse(text, region="JP").contacts[0].name == "山田太郎"


def test_vcard21_quoted_printable_name_is_decoded() -> None:
    report = parse(VCARD21, region="JP")
    assert report.contacts == (contact("山田花子", ("+819012345678",), ()),)


def test_vcard21_quoted_printable_soft_line_break_is_joined() -> None:
    text = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\n"
        "FN;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:Zo=C3=AB =C3=85ngstr=\r\n"
        "=C3=B6m\r\nTEL;CELL:+46 70 123 45 67\r\nEND:VCARD\r\n"
    )
    assert parse(text).contacts[0].name == "Zoë Ångström"


def test_vcard_rejections_name_the_line_of_the_bad_value() -> None:
    text = "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL:+44 20 7946 0958\nTEL:555\nEND:VCARD\n"
    report = parse(text)
    assert report.contacts[0].phones == ("+442079460958",)
    assert report.rejected == (RejectedEntry(5, "Ada", "555", "too few digits for a phone number"),)


def test_vcard_begin_without_end_is_malformed_at_the_begin_line() -> None:
    text = APPLE_VCARD + "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut Off\r\nTEL:+1 415 555 0100\r\n"
    with pytest.raises(MalformedContacts) as info:
        parse(text)
    assert info.value.line == APPLE_VCARD.count("\r\n") + 1
    assert "no matching END:VCARD" in str(info.value)


def test_vcard_begin_inside_a_card_is_malformed() -> None:
    text = "BEGIN:VCARD\nFN:A\nBEGIN:VCARD\nFN:B\nEND:VCARD\n"
    with pytest.raises(MalformedContacts, match="line 3: BEGIN:VCARD before the END:VCARD"):
        parse(text)


def test_text_outside_a_vcard_is_malformed() -> None:
    with pytest.raises(MalformedContacts, match="line 5: expected BEGIN:VCARD"):
        parse("BEGIN:VCARD\nFN:A\nTEL:+1 415 555 0100\nEND:VCARD\ngarbage\n")


def test_vcard_content_wins_over_a_misleading_file_name() -> None:
    report = parse(VCARD4, filename="contacts.csv", content_type="text/csv")
    assert report.format == "vcard"


# --- JSON ----------------------------------------------------------------------------------


def test_json_list_of_contacts() -> None:
    report = parse(JSON_LIST)
    assert report.format == "json"
    assert report.contacts == (
        contact("Grace Hopper", ("+14155550100",), ()),
        contact("Zoë Ångström", ("+46701234567",), ("zoe@example.se",)),
        contact("山田太郎", (), ("taro@example.jp",)),
    )


def test_json_object_with_a_contacts_list() -> None:
    report = parse('{"contacts": [{"name": "Ada", "phone": "+44 20 7946 0958"}]}')
    assert report.contacts == (contact("Ada", ("+442079460958",), ()),)


def test_json_rejections_give_the_index_in_the_list() -> None:
    report = parse('[{"name": "A", "phone": "+44 20 7946 0958"}, {"name": "B", "email": "b@"}]')
    assert report.rejected == (RejectedEntry(1, "B", "b@", "the domain is not a valid host name"),)


def test_truncated_json_is_malformed_with_its_line() -> None:
    with pytest.raises(MalformedContacts) as info:
        parse(JSON_LIST.replace("}, {", "},\n{")[:-20])
    assert info.value.line == 3
    assert "not valid JSON" in str(info.value)


def test_json_entry_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedContacts, match=r"contacts\[1\] is a string"):
        parse('[{"name": "A", "phone": "+44 20 7946 0958"}, "+1 415 555 0100"]')


def test_json_phone_written_as_a_number_is_malformed() -> None:
    with pytest.raises(MalformedContacts, match=r"contacts\[0\]\.phones\[0\] is a number"):
        parse('[{"name": "A", "phones": [14155550100]}]')


def test_absurdly_nested_json_is_malformed() -> None:
    with pytest.raises(MalformedContacts):
        parse("[" * 200_000, filename="contacts.json")


# --- values: numbers, extensions, rejection ----------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "+1 415 555 0100 ext. 12",
        "+1 415 555 0100 x12",
        "(415) 555-0100 #12",
        "415-555-0100,,12",
        "4155550100p12",
        "4155550100w12",
        "tel:+1-415-555-0100;ext=12",
    ],
)
def test_number_with_an_extension_is_imported_as_the_main_number(spelling: str) -> None:
    report = parse(json.dumps([{"name": "Desk", "phone": spelling}]))
    assert report.contacts[0].phones == ("+14155550100",)


def test_contact_keeps_its_good_number_and_reports_the_bad_one() -> None:
    report = parse("name,phone 1,phone 2\nAda,+44 20 7946 0958,+999 1234 5678\n")
    assert report.contacts == (contact("Ada", ("+442079460958",), ()),)
    assert report.rejected == (
        RejectedEntry(2, "Ada", "+999 1234 5678", "unknown or missing country code"),
    )


def test_contact_whose_only_number_is_invalid_is_dropped_with_the_reason() -> None:
    report = parse("name,phone\nBob,hello\n")
    assert report.contacts == ()
    assert report.rejected == (RejectedEntry(2, "Bob", "hello", "not a phone number"),)


def test_contact_with_no_number_or_address_is_rejected_as_a_whole() -> None:
    report = parse("name,phone\nNobody,\nAda,+44 20 7946 0958\n")
    assert report.rejected == (RejectedEntry(2, "Nobody", "", REASON_NO_ADDRESS),)


def test_nameless_rejection_has_no_name() -> None:
    report = parse("name,phone\n,12\nAda,+44 20 7946 0958\n")
    assert report.rejected[0].name is None


# --- names ---------------------------------------------------------------------------------


def test_decomposed_unicode_name_is_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë Ångström")
    report = parse(json.dumps([{"name": decomposed, "phone": "+46 70 123 45 67"}]))
    assert report.contacts[0].name == "Zoë Ångström"


def test_control_and_bidi_override_characters_are_removed_from_names() -> None:
    name = "Ada\x00\x1b[31m\u202eLovelace\nCountess\tof Lovelace"
    report = parse(json.dumps([{"name": name, "phone": "+44 20 7946 0958"}]))
    assert report.contacts[0].name == "Ada[31mLovelace Countess of Lovelace"


def test_long_names_are_trimmed() -> None:
    report = parse(json.dumps([{"name": "A" * 5000, "phone": "+44 20 7946 0958"}]))
    assert len(report.contacts[0].name) == MAX_NAME_CHARS


# --- whole-file failures and limits --------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \r\n\r\n", b"\xef\xbb\xbf", b"\xff\xfe"])
def test_empty_file_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedContacts, match="empty"):
        parse(data)


def test_file_over_ten_megabytes_is_too_large() -> None:
    with pytest.raises(ContactsTooLarge) as info:
        parse(b"a" * (10 * 1024 * 1024 + 1))
    assert info.value.limit == 10 * 1024 * 1024
    assert "10,485,760 bytes" in str(info.value)


def test_file_of_exactly_the_byte_limit_is_accepted() -> None:
    data = b"name,phone\nAda,+44 20 7946 0958\n"
    assert parse(data, max_bytes=len(data)).contacts


def test_more_contacts_than_the_limit_is_too_large() -> None:
    rows = "".join(f"Person {i},+1 415 555 {100 + i:04d}\n" for i in range(4))
    with pytest.raises(ContactsTooLarge, match="more than 3 contacts"):
        parse("name,phone\n" + rows, max_contacts=3)


def test_windows_1252_file_is_refused_with_the_line() -> None:
    data = "Name,Phone\nAda,+44 20 7946 0958\nZoë,+46 70 123 45 67\n".encode("cp1252")
    with pytest.raises(MalformedContacts) as info:
        parse(data)
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_utf16_without_byte_order_mark_is_refused() -> None:
    with pytest.raises(MalformedContacts, match="NUL"):
        parse("Name,Phone\nAda,+44 20 7946 0958\n".encode("utf-16-le"))


def test_file_errors_belong_to_the_optin_tree() -> None:
    assert issubclass(ContactsTooLarge, OptinError)
    assert issubclass(MalformedContacts, OptinError)


@pytest.mark.parametrize(
    ("content_type", "filename", "body", "expected"),
    [
        ("text/vcard; charset=utf-8", None, VCARD4, "vcard"),
        ("application/json", None, JSON_LIST, "json"),
        ("application/vnd.ms-excel", "contacts.csv", "name,phone\nA,+44 20 7946 0958\n", "csv"),
        ("application/octet-stream", "C:\\fakepath\\Contacts.JSON", JSON_LIST, "json"),
        (None, "export.vcf", VCARD4, "vcard"),
        (None, None, JSON_LIST, "json"),
        (None, None, "name,phone\nA,+44 20 7946 0958\n", "csv"),
    ],
)
def test_format_is_detected(
    content_type: str | None, filename: str | None, body: str, expected: str
) -> None:
    assert parse(body, content_type=content_type, filename=filename).format == expected


# --- property: every way of writing a number gives the same E.164 --------------------------

# (region, country code, trunk prefix, national number in groups as people write them)
NUMBERS = [
    ("US", "1", "", ("415", "555", "0100")),
    ("GB", "44", "0", ("20", "7946", "0958")),
    ("GB", "44", "0", ("7911", "123456")),
    ("FR", "33", "0", ("6", "12", "34", "56", "78")),
    ("DE", "49", "0", ("1512", "3456789")),
    ("JP", "81", "0", ("90", "1234", "5678")),
    ("AU", "61", "0", ("412", "345", "678")),
    ("SE", "46", "0", ("70", "123", "45", "67")),
]


@st.composite
def spelled_numbers(draw: st.DrawFn) -> tuple[str, str, str]:
    """(spelling, region to parse it with, expected E.164)."""
    region, country, trunk, groups = draw(st.sampled_from(NUMBERS))
    separators = st.sampled_from([" ", "-", ".", "", " - "])
    parts = list(groups)
    if draw(st.booleans()):
        parts[0] = f"({parts[0]})" if draw(st.booleans()) or not trunk else parts[0]
    body = parts[0] + "".join(draw(separators) + part for part in parts[1:])
    style = draw(st.sampled_from(["national", "plus", "double-zero", "plus-trunk"]))
    if style == "national":
        spelling, parse_region = trunk + body, region
    else:
        prefix = "00" if style == "double-zero" else "+"
        trunk_note = f" ({trunk})" if style == "plus-trunk" and trunk else ""
        spelling = f"{prefix}{country}{trunk_note}{draw(separators)}{body}"
        parse_region = draw(st.sampled_from([r for r, *_ in NUMBERS]))
    padding = draw(st.sampled_from(["", " ", "  "]))
    return padding + spelling + padding, parse_region, "+" + country + "".join(groups)


@settings(deadline=None)
@given(spelled_numbers(), st.sampled_from([",", ";", "\t"]))
def test_any_spelling_of_a_number_in_a_csv_gives_the_same_e164(
    case: tuple[str, str, str], delimiter: str
) -> None:
    spelling, region, expected = case
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerows([["Name", "Phone"], ["Someone", spelling]])
    report = parse(buffer.getvalue(), region=region)
    assert report.rejected == ()
    assert report.contacts == (contact("Someone", (expected,), ()),)
