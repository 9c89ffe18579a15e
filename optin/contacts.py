"""Address-book import: a vCard, CSV or JSON upload becomes contacts with canonical addresses.

Pure domain code: bytes in, an :class:`ImportReport` out, no database and no HTTP. Every
number goes through :func:`inbox.addresses.parse_phone` with the user's region, every email
address through :func:`inbox.addresses.parse_email`.

Two kinds of failure, kept apart:

* the file as a whole is unusable (too big, not text, broken vCard structure, JSON syntax
  error, a CSV without any phone or email column, empty): :class:`ContactsTooLarge` or
  :class:`MalformedContacts` is raised and nothing is returned, so nothing is half-imported;
* one value is unusable (an invalid number, a bad email address, a contact with neither):
  the file is imported and the value is listed in :attr:`ImportReport.rejected` with the
  reason from the address parser, in words a user can act on.

Decisions (the behaviour a user expects from an address book they exported themselves):

* **Extensions.** A number with an extension or a dial-string suffix ("+1 415 555 0100
  ext. 12", "x12", "#12", ";ext=12" in a ``tel:`` URI, the pauses ",12", ";12", "p12",
  "w12") is imported as its main number. Texts and calls arrive from the main number, never
  from an extension, so the main number is the one worth trusting.
* **Partial contacts.** A contact keeps the numbers and addresses that parse; each one that
  does not is listed in ``rejected`` (its own line, the raw value, the reason). A contact is
  dropped when nothing usable remains: its failed values are then the entries saying why,
  and a contact that had no number or address at all gets one entry with an empty value and
  :data:`REASON_NO_ADDRESS`. Repeated numbers or addresses within a contact collapse.
* **Positions.** ``RejectedEntry.line_or_index`` is the 1-based line in a vCard (the TEL or
  EMAIL line; the BEGIN:VCARD line for a whole card) or CSV file (the first line of the
  record; the header is line 1), and the 0-based index in the JSON list (``contacts[3]``).
* **Names.** FN, else N (given names first; family name first, unspaced, for Chinese,
  Japanese and Korean names), else ORG; CSV "Name", else first/middle/last, else company;
  a contact may have an empty name. Names are NFC-normalised, control characters, lone
  surrogates and bidirectional overrides removed, line breaks and runs of white space turned
  into one space, and trimmed to :data:`MAX_NAME_CHARS` characters.
* **Every number.** All TEL properties and every phone column are imported, whatever their
  type (cell, home, work, fax): the file is the user's own address book. Only an Outlook
  "Assistant's Phone" is skipped, being somebody else's number.
* **Too many contacts.** More than ``max_contacts`` entries raise :class:`ContactsTooLarge`
  (the HTTP layer's 413), like too many bytes: the file is well-formed, just too big.
* **An empty address book** (a header without rows, ``[]``, only blank lines) raises
  :class:`MalformedContacts`: an import of nothing is almost always the wrong file.
* **Text encoding.** UTF-8 (with or without a byte-order mark) or UTF-16/UTF-32 with a
  byte-order mark. Anything else (for instance an Outlook "CSV (Windows)" export in
  Windows-1252, or UTF-16 without a byte-order mark) is refused with the line and a hint
  to save the file as UTF-8, rather than guessed and imported with garbled names.
* **Format.** A file whose first line is ``BEGIN:VCARD`` is a vCard whatever it is called
  (browsers label uploads unreliably); otherwise the declared content type decides, then the
  file name's extension, then the first character (``[`` or ``{``: JSON, else CSV).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import quopri
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from inbox.addresses import E164, EmailAddress, parse_email, parse_phone
from inbox.errors import AddressError
from optin.errors import OptinError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CONTACTS",
    "MAX_NAME_CHARS",
    "MAX_VALUE_CHARS",
    "REASON_NO_ADDRESS",
    "Contact",
    "ContactsFormat",
    "ContactsTooLarge",
    "ImportReport",
    "MalformedContacts",
    "RejectedEntry",
    "parse_contacts",
]

ContactsFormat = Literal["vcard", "csv", "json"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_CONTACTS = 50_000
MAX_NAME_CHARS = 200
#: Raw values echoed back in a :class:`RejectedEntry` are cut to this many characters.
MAX_VALUE_CHARS = 200
REASON_NO_ADDRESS = "no phone number or email address"


class ContactsTooLarge(OptinError):
    """Raised when an upload exceeds ``max_bytes`` bytes or ``max_contacts`` entries.

    Nothing is parsed beyond the point where the limit is known to be exceeded; ``limit``
    is the limit that was hit (bytes or contacts, as the message says).
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class MalformedContacts(OptinError, ValueError):
    """Raised when the file as a whole cannot be read as an address book: empty, not
    UTF-8/UTF-16 text, a vCard whose BEGIN:VCARD has no END:VCARD, a JSON syntax error or
    a JSON value of the wrong shape, a CSV with no phone or email column, no contacts at all.

    ``line`` is the 1-based line of the problem when there is one (it is also at the start
    of the message); ``reason`` is the message without it.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason if line is None else f"line {line}: {reason}")
        self.reason = reason
        self.line = line


@dataclass(frozen=True, slots=True)
class Contact:
    """One imported contact; at least one of ``phones`` and ``emails`` is non-empty."""

    name: str
    phones: tuple[E164, ...]
    emails: tuple[EmailAddress, ...]


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """A value (or a whole contact, with ``value`` empty) that was not imported, and why."""

    line_or_index: int
    name: str | None
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """The outcome of one import: the contacts to add, what was left out and why, and the
    format the file was read as."""

    contacts: tuple[Contact, ...]
    rejected: tuple[RejectedEntry, ...]
    format: ContactsFormat


def parse_contacts(
    data: bytes,
    *,
    region: str,
    filename: str | None = None,
    content_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_contacts: int = DEFAULT_MAX_CONTACTS,
) -> ImportReport:
    """Parse an uploaded address book (vCard 2.1/3.0/4.0, CSV or JSON).

    ``region`` is the user's ISO region ("US", "GB"), used for numbers written without a
    country code. ``filename`` and ``content_type`` are what the upload declared; they only
    help choose the format (see the module docstring). Raises :class:`ContactsTooLarge`
    and :class:`MalformedContacts`; per-value problems are in the report instead.
    """
    if len(data) > max_bytes:
        raise ContactsTooLarge(
            f"the file is {len(data):,} bytes; the limit is {max_bytes:,} bytes", max_bytes
        )
    text = _decode(data)
    if not text.strip():
        raise MalformedContacts("the file is empty")
    fmt = _detect_format(text, filename, content_type)
    if fmt == "vcard":
        entries = _parse_vcard(text, max_contacts)
    elif fmt == "json":
        entries = _parse_json(text, max_contacts)
    else:
        entries = _parse_csv(text, max_contacts)
    if not entries:
        raise MalformedContacts("the file contains no contacts")
    contacts, rejected = _normalise(entries, region)
    return ImportReport(contacts=tuple(contacts), rejected=tuple(rejected), format=fmt)


# --- entries as read from the file, before normalisation ---------------------------------


@dataclass(slots=True)
class _Entry:
    position: int
    name: str
    phones: list[tuple[int, str]] = field(default_factory=list)
    emails: list[tuple[int, str]] = field(default_factory=list)


def _normalise(entries: Iterable[_Entry], region: str) -> tuple[list[Contact], list[RejectedEntry]]:
    contacts: list[Contact] = []
    rejected: list[RejectedEntry] = []
    for entry in entries:
        name = _clean_text(entry.name, MAX_NAME_CHARS)
        shown_name = name or None
        failures: list[RejectedEntry] = []
        phones: dict[E164, None] = {}
        for position, raw in entry.phones:
            try:
                phones[parse_phone(_main_number(raw), region)] = None
            except AddressError as exc:
                failures.append(_rejection(position, shown_name, raw, exc.reason))
        emails: dict[EmailAddress, None] = {}
        for position, raw in entry.emails:
            try:
                emails[parse_email(raw)] = None
            except AddressError as exc:
                failures.append(_rejection(position, shown_name, raw, exc.reason))
        if phones or emails:
            contacts.append(Contact(name=name, phones=tuple(phones), emails=tuple(emails)))
        elif not failures:
            failures.append(_rejection(entry.position, shown_name, "", REASON_NO_ADDRESS))
        rejected.extend(failures)
    return contacts, rejected


def _rejection(position: int, name: str | None, raw: str, reason: str) -> RejectedEntry:
    return RejectedEntry(position, name, _clean_text(raw, MAX_VALUE_CHARS), reason)


# A dial-string pause and what follows it ("4155550100p12", "4155550100w12"): the rest is
# dialled after the call connects, like an extension. parse_phone handles ext./x/#/,/; itself.
_PAUSE_SUFFIX = re.compile(r"(?<=\d)\s*[pPwW][0-9*#pPwW,;\s]*$")


def _main_number(raw: str) -> str:
    return _PAUSE_SUFFIX.sub("", raw)


def _add_values(target: list[tuple[int, str]], position: int, cell: str) -> None:
    """Add the non-empty values of one cell; Google joins several with ' ::: '."""
    for part in cell.split(":::"):
        value = part.strip()
        if value:
            target.append((position, value))


# Bidirectional embeddings, overrides and isolates: they can make a name display as another.
_BIDI_CONTROLS = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_LINE_LIKE = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _clean_text(text: str, limit: int) -> str:
    kept: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _LINE_LIKE:
            kept.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cs") or ord(ch) in _BIDI_CONTROLS:
            continue
        else:
            kept.append(ch)
    return " ".join("".join(kept).split())[:limit].rstrip()


# --- decoding and format detection -------------------------------------------------------

_BOMS = (
    # UTF-32 first: its little-endian mark starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _decode(data: bytes) -> str:
    encoding, label = "utf-8", "UTF-8"
    for bom, bom_encoding, bom_label in _BOMS:
        if data.startswith(bom):
            encoding, label = bom_encoding, bom_label
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise MalformedContacts(
            f"the file is not {label} text (invalid bytes at offset {exc.start}); "
            "save or export it as UTF-8",
            line,
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise MalformedContacts(
            "the file contains NUL characters (UTF-16 without a byte-order mark, or not a "
            "text file?); save or export it as UTF-8",
            text.count("\n", 0, nul) + 1,
        )
    return text


_CONTENT_TYPES: dict[str, ContactsFormat] = {
    "text/vcard": "vcard",
    "text/x-vcard": "vcard",
    "text/directory": "vcard",
    "application/vcard": "vcard",
    "application/x-vcard": "vcard",
    "text/csv": "csv",
    "text/x-csv": "csv",
    "application/csv": "csv",
    "application/x-csv": "csv",
    "text/comma-separated-values": "csv",
    "text/x-comma-separated-values": "csv",
    "text/tab-separated-values": "csv",
    # What browsers on Windows send for a .csv file when Excel is installed.
    "application/vnd.ms-excel": "csv",
    "application/json": "json",
    "text/json": "json",
    "application/x-json": "json",
}
_EXTENSIONS: dict[str, ContactsFormat] = {
    "vcf": "vcard",
    "vcard": "vcard",
    "csv": "csv",
    "tsv": "csv",
    "json": "json",
}
_VCARD_START = re.compile(r"\A\s*BEGIN\s*:\s*VCARD\s*$", re.IGNORECASE | re.MULTILINE)


def _detect_format(text: str, filename: str | None, content_type: str | None) -> ContactsFormat:
    if _VCARD_START.match(text):
        return "vcard"
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type in _CONTENT_TYPES:
            return _CONTENT_TYPES[media_type]
        if media_type.endswith("+json"):
            return "json"
    if filename:
        base = re.split(r"[/\\]", filename)[-1]
        if "." in base:
            extension = base.rsplit(".", 1)[1].strip().lower()
            if extension in _EXTENSIONS:
                return _EXTENSIONS[extension]
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


def _count(found: int, max_contacts: int) -> None:
    if found > max_contacts:
        raise ContactsTooLarge(
            f"the file has more than {max_contacts:,} contacts; split it into smaller files",
            max_contacts,
        )


# --- vCard --------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class _Property:
    line: int
    name: str  # upper case, group ("item1.") removed
    params: dict[str, list[str]]  # upper-case keys; vCard 2.1 bare params under "TYPE"
    value: str  # still escaped and, where the params say so, still quoted-printable


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Unfold (RFC 6350 3.2: a line break followed by a space or tab continues the line)
    and join vCard 2.1 quoted-printable soft line breaks ('=' at the end of the line)."""
    parts: list[str] = []
    start = 0
    quoted_printable = soft_break = False
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        if parts and soft_break:
            parts.append(line)
        elif parts and line[:1] in (" ", "\t"):
            parts.append(line[1:])
        else:
            if parts:
                yield start, "".join(parts)
            parts, start = [line], number
            head = line.split(":", 1)[0].upper()
            quoted_printable = ":" in line and "QUOTED-PRINTABLE" in head
        soft_break = quoted_printable and parts[-1].endswith("=")
        if soft_break:
            parts[-1] = parts[-1][:-1]
    if parts:
        yield start, "".join(parts)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    if '"' not in text:
        return text.split(separator)
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


def _find_outside_quotes(text: str, target: str) -> int:
    """The index of the first ``target`` not inside double quotes (parameter values)."""
    index = text.find(target)
    if index < 0 or '"' not in text[:index]:
        return index
    quoted = False
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == target and not quoted:
            return index
    return -1


def _content_line(number: int, line: str) -> _Property | None:
    colon = _find_outside_quotes(line, ":")
    if colon < 0:
        return None
    head, value = line[:colon], line[colon + 1 :]
    name, *raw_params = _split_outside_quotes(head, ";")
    params: dict[str, list[str]] = {}
    for raw in raw_params:
        key, has_value, param_value = raw.partition("=")
        if not has_value:  # vCard 2.1: TEL;CELL;VOICE:..., EMAIL;INTERNET:..., ;QUOTED-PRINTABLE
            key, param_value = ("ENCODING" if _is_encoding(key) else "TYPE"), key
        values = params.setdefault(key.strip().upper(), [])
        values.extend(v.strip().strip('"') for v in _split_outside_quotes(param_value, ","))
    return _Property(number, name.rsplit(".", 1)[-1].strip().upper(), params, value)


def _is_encoding(bare_param: str) -> bool:
    return bare_param.strip().upper() in ("QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT", "B")


def _parse_vcard(text: str, max_contacts: int) -> list[_Entry]:
    entries: list[_Entry] = []
    card: list[_Property] | None = None
    begin_line = 0
    for number, line in _logical_lines(text):
        if not line.strip():
            continue
        prop = _content_line(number, line)
        begins = prop is not None and prop.name == "BEGIN" and _is_vcard(prop.value)
        if card is None:
            if not begins:
                raise MalformedContacts(f"expected BEGIN:VCARD, found {_excerpt(line)}", number)
            card, begin_line = [], number
        elif begins:
            raise MalformedContacts(
                f"BEGIN:VCARD before the END:VCARD of the card begun on line {begin_line}",
                number,
            )
        elif prop is not None and prop.name == "END" and _is_vcard(prop.value):
            entries.append(_card_entry(begin_line, card))
            _count(len(entries), max_contacts)
            card = None
        elif prop is not None:
            card.append(prop)
        # A line without ':' inside a card is a stray continuation of something we do not
        # read (PHOTO data from some exporters); it cannot be a name, number or address.
    if card is not None:
        raise MalformedContacts("BEGIN:VCARD has no matching END:VCARD", begin_line)
    return entries


def _is_vcard(value: str) -> bool:
    return value.strip().upper() == "VCARD"


def _excerpt(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _card_entry(begin_line: int, props: list[_Property]) -> _Entry:
    entry = _Entry(begin_line, "")
    names: dict[str, list[_Property]] = {"FN": [], "N": [], "ORG": []}
    for prop in props:
        if prop.name in names:
            names[prop.name].append(prop)
        elif prop.name == "TEL":
            _add_values(entry.phones, prop.line, _unescape(_decoded(prop)))
        elif prop.name == "EMAIL":
            _add_values(entry.emails, prop.line, _unescape(_decoded(prop)))
    entry.name = next(filter(str.strip, _card_names(names)), "")
    return entry


def _card_names(names: dict[str, list[_Property]]) -> Iterator[str]:
    """Candidate names, best first, decoded only as far as needed: FN, N, ORG."""
    for prop in names["FN"]:
        yield _unescape(_decoded(prop))
    for prop in names["N"]:
        yield _name_from_n(_split_escaped(_decoded(prop), ";"))
    for prop in names["ORG"]:
        yield _unescape(_split_escaped(_decoded(prop), ";")[0])


def _decoded(prop: _Property) -> str:
    """The value with quoted-printable encoding (vCard 2.1, old phones) undone."""
    encodings = {value.upper() for value in prop.params.get("ENCODING", [])}
    if "QUOTED-PRINTABLE" not in encodings:
        return prop.value
    charset = (prop.params.get("CHARSET") or ["utf-8"])[0]
    raw = quopri.decodestring(prop.value.encode("utf-8"))
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # an unknown CHARSET: UTF-8 is what such phones almost always wrote
        return raw.decode("utf-8", errors="replace")


def _split_escaped(value: str, separator: str) -> list[str]:
    """Split on separators not escaped with a backslash; the pieces stay escaped."""
    pieces: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(value: str) -> str:
    r"""RFC 6350 3.4: \n and \N are line breaks, \\ \, \; (and \: from some exporters) are
    the character itself."""
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _name_from_n(components: list[str]) -> str:
    """N is family;given;additional;prefixes;suffixes, each possibly a comma list."""
    family, given, additional, prefixes, suffixes = [
        " ".join(_unescape(part).strip() for part in _split_escaped(component, ","))
        for component in (components + [""] * 5)[:5]
    ]
    if family and given and _east_asian(family + given):
        return " ".join(filter(None, (prefixes, family + given, suffixes)))
    return " ".join(filter(None, (prefixes, given, additional, family, suffixes)))


def _east_asian(text: str) -> bool:
    """Han, kana or Hangul only: names written family name first, without a space."""
    return all(
        "\u3040" <= ch <= "\u30ff"  # hiragana, katakana
        or "\u3400" <= ch <= "\u9fff"  # CJK ideographs
        or "\uac00" <= ch <= "\ud7af"  # Hangul syllables
        or "\uf900" <= ch <= "\ufaff"  # CJK compatibility ideographs
        for ch in text
    )


# --- CSV ----------------------------------------------------------------------------------


def _header_key(header: str) -> str:
    """'E-mail 1 - Value' -> 'email1value', 'Prénom' -> 'prenom'."""
    decomposed = unicodedata.normalize("NFKD", header.casefold())
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum())


_FULL_NAME = {"name", "fullname", "displayname", "formattedname", "contactname", "contact"}
_GIVEN_NAME = {"firstname", "givenname", "first", "vorname", "prenom", "nombre"}
_MIDDLE_NAME = {"middlename", "additionalname", "middle", "weiterevornamen"}
_FAMILY_NAME = {"lastname", "familyname", "surname", "last", "nachname", "nom", "apellidos"}
_ORGANISATION = {
    "company",
    "organization",
    "organisation",
    "organizationname",
    "organization1name",
    "firma",
    "societe",
    "empresa",
}
_EMAIL_WORDS = ("email", "courriel", "correo")
_PHONE_WORDS = ("phone", "mobil", "cell", "tel", "handy", "fax", "pager")
# Google's per-value "Phone 1 - Type"/"- Label" columns, Outlook's "E-mail Display Name",
# Google's "Phonetic First Name", Outlook's "Assistant's Phone" (not the contact's number).
_NOT_A_VALUE = ("type", "label", "displayname", "phonetic", "assistant", "telex")


@dataclass(slots=True)
class _Columns:
    full: list[int] = field(default_factory=list)
    given: list[int] = field(default_factory=list)
    middle: list[int] = field(default_factory=list)
    family: list[int] = field(default_factory=list)
    organisation: list[int] = field(default_factory=list)
    phones: list[int] = field(default_factory=list)
    emails: list[int] = field(default_factory=list)


def _classify(header: list[str]) -> _Columns:
    columns = _Columns()
    for index, title in enumerate(header):
        key = _header_key(title)
        if any(word in key for word in _NOT_A_VALUE):
            continue
        if any(word in key for word in _EMAIL_WORDS) or key == "mail":
            columns.emails.append(index)
        elif key in _FULL_NAME:
            columns.full.append(index)
        elif key in _GIVEN_NAME:
            columns.given.append(index)
        elif key in _MIDDLE_NAME:
            columns.middle.append(index)
        elif key in _FAMILY_NAME:
            columns.family.append(index)
        elif key in _ORGANISATION:
            columns.organisation.append(index)
        elif any(word in key for word in _PHONE_WORDS):
            columns.phones.append(index)
    return columns


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: len(_split_outside_quotes(header_line, d)) - 1 for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _parse_csv(text: str, max_contacts: int) -> list[_Entry]:
    header_line = next(line for line in _LINE_BREAK.split(text) if line.strip())
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=_sniff_delimiter(header_line), strict=True
    )
    entries: list[_Entry] = []
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise MalformedContacts("the file has no header line")
        header_number = reader.line_num
        columns = _classify(header)
        if not columns.phones and not columns.emails:
            raise MalformedContacts(
                "no phone or email column in the header (expected columns such as 'Name', "
                "'Phone 1 - Value', 'Mobile Phone', 'phone', 'E-mail Address' or 'email'; "
                f"found {', '.join(repr(h) for h in header[:8])}"
                f"{', ...' if len(header) > 8 else ''})",
                header_number,
            )
        previous = reader.line_num
        for row in reader:
            start, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            entries.append(_row_entry(start, row, columns))
            _count(len(entries), max_contacts)
    except csv.Error as exc:
        raise MalformedContacts(f"not valid CSV: {exc}", reader.line_num) from None
    return entries


def _row_entry(line: int, row: list[str], columns: _Columns) -> _Entry:
    def cells(indexes: list[int]) -> list[str]:
        return [row[i].strip() for i in indexes if i < len(row) and row[i].strip()]

    parts = cells(columns.given) + cells(columns.middle) + cells(columns.family)
    name = next(
        (n for n in (*cells(columns.full), " ".join(parts), *cells(columns.organisation)) if n),
        "",
    )
    entry = _Entry(line, name)
    for cell in cells(columns.phones):
        _add_values(entry.phones, line, cell)
    for cell in cells(columns.emails):
        _add_values(entry.emails, line, cell)
    return entry


# --- JSON ---------------------------------------------------------------------------------


def _parse_json(text: str, max_contacts: int) -> list[_Entry]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedContacts(
            f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno
        ) from None
    except (ValueError, RecursionError) as exc:  # digit-limit overflow, absurd nesting
        raise MalformedContacts(f"not valid JSON: {exc}") from None
    if isinstance(document, dict) and "contacts" in document:
        document = document["contacts"]
    if not isinstance(document, list):
        raise MalformedContacts(
            'expected a list of contacts, or an object with a "contacts" list, '
            f"found {_json_type(document)}"
        )
    _count(len(document), max_contacts)
    return [_json_entry(index, item) for index, item in enumerate(document)]


def _json_entry(index: int, item: Any) -> _Entry:
    where = f"contacts[{index}]"
    if not isinstance(item, dict):
        raise MalformedContacts(
            f'{where} is {_json_type(item)}; expected an object like {{"name": ..., '
            '"phones": [...], "emails": [...]}'
        )
    fields = {str(key).lower(): value for key, value in item.items()}
    name = fields.get("name")
    if name is not None and not isinstance(name, str):
        raise MalformedContacts(f"{where}.name is {_json_type(name)}; expected a string")
    entry = _Entry(index, name or "")
    for key in ("phones", "phone"):
        for value in _json_strings(fields.get(key), f"{where}.{key}"):
            _add_values(entry.phones, index, value)
    for key in ("emails", "email"):
        for value in _json_strings(fields.get(key), f"{where}.{key}"):
            _add_values(entry.emails, index, value)
    return entry


def _json_strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        strings: list[str] = []
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise MalformedContacts(
                    f"{where}[{position}] is {_json_type(item)}; expected a string "
                    "(write numbers in quotes: a JSON number loses the '+' and leading zeros)"
                )
            strings.append(item)
        return strings
    raise MalformedContacts(f"{where} is {_json_type(value)}; expected a string or a list")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
