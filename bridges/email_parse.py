"""Raw RFC 5322 / MIME bytes, as our SMTP server received them, into :class:`ParsedEmail`.

Parsing runs after the raw bytes are durably stored, so it must never lose a
message: bytes that are not a message at all (empty, no header field, a header
block over ``MimeLimits.max_header_bytes``) raise :class:`UnparseableEmail`, and
the caller quarantines the raw as "unparseable". A message that parses but is
hostile comes back with ``quarantine_reason`` set and whatever could be
extracted safely: "MIME nesting deeper than N levels", "more than N MIME
parts", "MIME part header block over N bytes", "HTML body with more than N
tags", "MIME structure too costly to parse". Nothing else is raised.

Choices, and why:

- The stdlib ``email`` package with the ``compat32`` policy, not
  ``policy.default``, which builds a header object per header: for the 9.8 KB
  multipart/alternative benchmark message ``BytesParser`` takes ~3.2 ms with
  ``policy.default`` and ~0.5 ms with ``compat32`` on the dev box (DESIGN: ~2 ms
  and ~0.3 ms). ``email.message.Message`` parses the Content-Type and
  Content-Disposition parameters (RFC 2231 included) and
  ``email.utils.parsedate_to_datetime`` the Date; everything else we decode
  explicitly below.
- Our own walk over the MIME tree instead of ``BytesParser``: the stdlib
  feed parser descends into nested multiparts by recursion (a 3,000-deep
  message raises RecursionError) and splits every body into lines. Here
  each entity is a (start, end) slice of the one raw ``bytes``; a header block
  is split into fields by hand (``email.parser.HeaderParser`` cost ~100 us for
  a 0.8 KB block); part boundaries are found with ``bytes.find``; the tree is
  walked with an explicit stack and depth counter, and a body is copied only
  when a leaf is decoded. Nested ``message/rfc822`` parts are kept whole as
  attachments, not descended into.
- Header bytes are read as UTF-8 (RFC 6532), invalid sequences replaced.
  Encoded words (RFC 2047) are decoded by :func:`decode_words` rather than
  ``str(make_header(decode_header(v)))``, which raises LookupError on an
  unknown or non-text charset and UnicodeDecodeError when an encoded word sits
  next to raw UTF-8 text; decoding its raw-unicode-escape output by hand
  instead would turn a literal ``\\u202e`` into the character itself.
- Address headers are read by a small RFC 5322 scanner, not
  ``email.utils.getaddresses``, which on this Python reads
  ``victim@bank.com(<attacker@evil>`` as the address ``victim@bank.com``. A From
  that could be read two ways yields no address at all.
- An unknown, invalid or non-text charset (``zlib``, ``punycode``,
  ``unicode_escape``...) is read as UTF-8 with replacement characters.
  ``us-ascii`` is read as UTF-8 and ``iso-8859-1`` as windows-1252 (their
  supersets, as web browsers do), so mislabelled 8-bit text survives.
- Body: the first inline text/plain part (no file name, not
  ``Content-Disposition: attachment``) in document order is ``text``, the first
  such text/html part is ``html``; every other leaf, later inline text parts
  included, is an attachment. Line ends in ``text`` become ``\\n``; NUL is
  removed (PostgreSQL text refuses it).
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from bridges.errors import UnparseableEmail
from bridges.sanitize import html_to_text, remove_control_chars, safe_filename, sanitize_html
from inbox.addresses import EmailAddress, parse_email
from inbox.errors import AddressError
from inbox.message import InboundAttachment


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """Bounds on the work one message may cause. Beyond ``max_depth`` nested
    multiparts or ``max_parts`` body parts the message is flagged for quarantine;
    a header block over ``max_header_bytes`` makes it unparseable."""

    max_depth: int = 100
    max_parts: int = 1000
    max_header_bytes: int = 100 * 1024
    #: An HTML body with more '<' than this is not sanitised (html5ever's work grows
    #: with the square of the nesting depth: 10,000 nested divs take ~0.4 s, 100,000
    #: over a minute); the message is flagged and the HTML kept as an attachment.
    max_html_tags: int = 10_000


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    """What the email bridge needs from one message. Addresses are canonical
    (``inbox.addresses.parse_email``); text is decoded; ``html`` is sanitised.

    ``content_ids`` runs parallel to ``attachments``: the Content-ID of
    ``attachments[i]`` (angle brackets stripped), or None, so that ``cid:``
    references in ``html`` can be resolved to the inline parts.
    """

    message_id: str | None
    from_address: EmailAddress | None
    from_display: str | None
    sender: EmailAddress | None
    reply_to: tuple[EmailAddress, ...]
    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...]
    subject: str | None
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    attachments: tuple[InboundAttachment, ...]
    quarantine_reason: str | None
    content_ids: tuple[str | None, ...] = field(default=())


_MAX_ID = 255  # Message-ID, In-Reply-To, References entries, Content-ID
_MAX_SUBJECT = 998  # RFC 5322 line length limit
_MAX_DISPLAY = 255
_MAX_REFERENCES = 100  # the first (thread root) and the 99 most recent are kept
_MAX_CONTENT_TYPE = 255

# ---------------------------------------------------------------------------
# Charsets and transfer encodings

# Python codecs that are not character sets, or whose decoders are slow on
# crafted input (punycode is quadratic) or turn escapes into characters.
_NOT_CHARSETS = frozenset(
    {
        "base64", "bz2", "hex", "quopri", "rot-13", "uu", "zlib",
        "idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined",
    }
)  # fmt: skip
_SUPERSETS = {"ascii": "utf-8", "iso8859-1": "cp1252"}
_MAX_CHARSET_LABEL = 64


@functools.lru_cache(maxsize=512)
def _codec(label: str | None) -> str:
    """The Python codec to read text labelled ``label`` with; never fails."""
    if not label or len(label) > _MAX_CHARSET_LABEL:
        return "utf-8"
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return "utf-8"
    if name in _NOT_CHARSETS:
        return "utf-8"
    return _SUPERSETS.get(name, name)


# UTF-7 is the one text codec whose decoder lets lone surrogates through ("+2AA-"
# is U+D800), and the stdlib's RFC 2231 parameter decoding uses any codec; a lone
# surrogate cannot be encoded as UTF-8 (nh3 and the database refuse it), so it
# becomes U+FFFD like any other undecodable input.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _decode(data: bytes, codec: str) -> str:
    text = data.decode(codec, "replace")
    return _without_surrogates(text) if codec == "utf-7" else text


def _decode_text(data: bytes, label: str | None) -> str:
    return _decode(data, _codec(label))


_NOT_BASE64 = bytes(
    set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
)


def _decode_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return _decode_damaged_base64(data)


def _decode_damaged_base64(data: bytes) -> bytes:
    # Bad padding or stray characters: keep the alphabet, re-pad, drop a dangling
    # sixth of a byte. Mail clients show what they can rather than nothing.
    clean = data.translate(None, _NOT_BASE64)
    extra = len(clean) % 4
    if extra == 1:
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    return binascii.a2b_base64(clean)


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    # 7bit, 8bit, binary, and anything unknown (uuencode included): as sent.
    return data


_ENCODED_WORD = re.compile(r"=\?([^?\s*]{1,64})(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")


def decode_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded words decoded. Whitespace between two
    encoded words is dropped (RFC 2047 section 6.2) and the bytes of adjacent words
    in one charset are decoded together, so a character split across two words
    survives. Unknown charsets read as UTF-8; nothing raises."""
    if "=?" not in value:
        return value
    pieces: list[str] = []
    pending: list[bytes] = []
    pending_codec = ""
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        if not pending or gap.strip():
            if pending:
                pieces.append(_decode(b"".join(pending), pending_codec))
                pending = []
            pieces.append(gap)
        payload = match.group(3).encode("utf-8")
        if match.group(2) in "bB":
            data = _decode_base64(payload)
        else:
            data = binascii.a2b_qp(payload, header=True)
        codec = _codec(match.group(1))
        if pending and codec != pending_codec:
            pieces.append(_decode(b"".join(pending), pending_codec))
            pending = []
        pending.append(data)
        pending_codec = codec
        position = match.end()
    if pending:
        pieces.append(_decode(b"".join(pending), pending_codec))
    pieces.append(value[position:])
    return "".join(pieces)


# ---------------------------------------------------------------------------
# Header blocks

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def _decode_header_bytes(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def _header_extent(raw: bytes, start: int, end: int, limit: int) -> tuple[int, int] | None:
    """(end of the header block, start of the body) of the entity ``raw[start:end]``,
    or None when its header block is longer than ``limit`` bytes."""
    if raw.startswith(b"\n", start, end):
        return start, start + 1
    if raw.startswith(b"\r\n", start, end):
        return start, start + 2
    found = _HEADER_END.search(raw, start, min(end, start + limit + 4))
    if found is not None:
        if found.start() - start > limit:
            return None
        return found.start(), found.end()
    if end - start > limit:
        return None
    return end, end  # headers only, no body


# The fields the stdlib's MIME parameter parsing needs; the rest stay in the dict
# (``Message.get`` lower-cases every stored name on every lookup).
_MIME_FIELDS = frozenset({"content-type", "content-disposition"})


@dataclass(slots=True)
class _Headers:
    """The header fields of one entity: every field by lower-case name, values
    unfolded, in order; and the Content-Type/-Disposition fields as a compat32
    ``Message`` for the stdlib's parameter parsing (RFC 2231 included)."""

    fields: dict[str, list[str]]
    mime: Message

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


def _read_headers(raw: bytes, start: int, header_end: int, body_start: int) -> tuple[_Headers, int]:
    """The header fields of ``raw[start:header_end]``, and where the body really
    starts: as in the stdlib parser, a line that is neither a field nor a
    continuation ends the header block early and begins the body."""
    block = raw[start:header_end]
    lines = _decode_header_bytes(block).split("\n")
    fields: dict[str, list[str]] = {}
    name: str | None = None
    value: list[str] = []
    for index, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if line[:1] in (" ", "\t"):
            if name is not None:
                value.append(line)  # unfolding: only the line break goes
            continue
        if index == 0 and line.startswith("From "):
            continue  # an mbox "From " separator line
        colon = line.find(":")
        field_name = line[:colon].rstrip(" \t") if colon > 0 else ""
        if name is not None:
            fields.setdefault(name, []).append("".join(value))
            name = None
        if not _FIELD_NAME.fullmatch(field_name):
            # Line counts agree between block and its UTF-8 reading: "\n" is never
            # part of a multi-byte sequence or swallowed by a replacement.
            body_start = start + sum(len(part) + 1 for part in block.split(b"\n")[:index])
            break
        name = field_name.lower()
        value = [line[colon + 1 :].lstrip(" \t")]
    if name is not None:
        fields.setdefault(name, []).append("".join(value))
    mime = Message()
    for mime_field in _MIME_FIELDS.intersection(fields):
        for mime_value in fields[mime_field]:
            mime[mime_field] = mime_value
    return _Headers(fields, mime), body_start


_PARAM_ERRORS = (LookupError, UnicodeError, ValueError, TypeError, IndexError)


def _boundary(headers: _Headers) -> bytes | None:
    try:
        boundary = headers.mime.get_boundary()
    except _PARAM_ERRORS:  # the stdlib's RFC 2231 handling has edge cases that raise
        return None
    if not boundary:
        return None
    return _without_surrogates(boundary).encode("utf-8")


def _charset(headers: _Headers) -> str | None:
    try:
        return headers.mime.get_content_charset()
    except _PARAM_ERRORS:
        return None


def _filename(headers: _Headers) -> str | None:
    try:
        name = headers.mime.get_filename()
    except _PARAM_ERRORS:
        return None
    if name is None:
        return None
    return safe_filename(decode_words(_without_surrogates(name)))


# ---------------------------------------------------------------------------
# Identifiers and dates

_MSG_ID = re.compile(r"<([^<>]*)>")


def _clean_id(value: str) -> str | None:
    cleaned = "".join(remove_control_chars(value).split()).strip("<>")
    return cleaned[:_MAX_ID] or None


def _message_id(value: str | None) -> str | None:
    """The first msg-id in ``value``, without angle brackets or whitespace."""
    if value is None:
        return None
    found = _MSG_ID.search(value)
    return _clean_id(found.group(1) if found else value)


def _references(values: list[str]) -> tuple[str, ...]:
    ids: list[str] = []
    for value in values:
        found = _MSG_ID.findall(value) or value.replace(",", " ").split()
        ids.extend(clean for clean in map(_clean_id, found) if clean)
    if len(ids) > _MAX_REFERENCES:
        ids = ids[:1] + ids[-(_MAX_REFERENCES - 1) :]
    return tuple(ids)


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # "-0000": UTC, source zone unknown (RFC 5322)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _one_line(value: str, limit: int) -> str:
    return " ".join(remove_control_chars(value).split())[:limit]


# ---------------------------------------------------------------------------
# Addresses

# A token is (kind, text): kind "w" for a run of atoms and spaces, "q" for the
# content of a quoted-string, "c" for a comment, "!" for an unterminated quote or
# comment, or the special character itself.
_Token = tuple[str, str]
_ORDINARY = re.compile(r'[^"()<>\[\],;:\\@]+')
_IN_QUOTES = re.compile(r'[^"\\]+')
_IN_COMMENT = re.compile(r"[^()\\]+")


def _quoted(value: str, index: int) -> tuple[str | None, int]:
    """The content of the quoted-string whose opening quote is before ``index``."""
    out: list[str] = []
    while index < len(value):
        run = _IN_QUOTES.match(value, index)
        if run:
            out.append(run.group())
            index = run.end()
        elif value[index] == '"':
            return "".join(out), index + 1
        elif index + 1 < len(value):  # a quoted-pair
            out.append(value[index + 1])
            index += 2
        else:
            break
    return None, len(value)


def _comment(value: str, index: int) -> tuple[str | None, int]:
    """The content of the (possibly nested) comment opened before ``index``."""
    out: list[str] = []
    depth = 1
    while index < len(value):
        run = _IN_COMMENT.match(value, index)
        if run:
            out.append(run.group())
            index = run.end()
            continue
        char = value[index]
        if char == "\\":
            if index + 1 >= len(value):
                break
            out.append(value[index + 1])
            index += 2
            continue
        depth += 1 if char == "(" else -1
        index += 1
        if depth == 0:
            return "".join(out), index
        out.append(char)
    return None, len(value)


def _tokens(value: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(value):
        run = _ORDINARY.match(value, index)
        if run:
            tokens.append(("w", run.group()))
            index = run.end()
            continue
        char = value[index]
        if char in '"(':
            reader = _quoted if char == '"' else _comment
            content, index = reader(value, index + 1)
            if content is None:
                # Everything after an unterminated quote or comment could be read
                # as inside or outside it: the entry it belongs to is unreadable.
                tokens.append(("!", ""))
                return tokens
            tokens.append(("q" if char == '"' else "c", content))
        else:
            tokens.append((char, char))
            index += 1
    return tokens


class _Empty:
    """An empty list element (``a@x.example, , b@y.example``)."""


_EMPTY = _Empty()
_Mailbox = tuple[str | None, str]  # (display phrase, addr-spec text)


def _source(tokens: list[_Token]) -> str:
    # Comments dropped; quoted strings keep their quotes, so that parse_email
    # refuses them instead of reading an address out of them.
    return "".join(f'"{text}"' if kind == "q" else text for kind, text in tokens if kind != "c")


def _mailbox(tokens: list[_Token]) -> _Mailbox | _Empty | None:
    """One mailbox from its tokens; None when it can be read more than one way."""
    if all(kind == "c" or (kind == "w" and not text.strip()) for kind, text in tokens):
        return _EMPTY
    kinds = [kind for kind, _ in tokens]
    if any(kind in ("!", "[", "]", "\\", ":") for kind in kinds):
        return None
    if "<" not in kinds:
        if ">" in kinds:
            return None
        # The obsolete "addr (Name)" comment is not taken as a display name.
        return None, _source(tokens).strip()
    opening = kinds.index("<")
    if kinds.count("<") != 1 or kinds.count(">") != 1 or kinds.index(">") < opening:
        return None
    closing = kinds.index(">")
    phrase, inner, trailing = tokens[:opening], tokens[opening + 1 : closing], tokens[closing + 1 :]
    # An unquoted '@' before '<' ("victim@bank.com <x@evil>") is not a display name.
    if "@" in kinds[:opening]:
        return None
    if any(kind != "c" and (kind != "w" or text.strip()) for kind, text in trailing):
        return None
    display = "".join(text for kind, text in phrase if kind in ("w", "q"))
    return display or None, _source(inner).strip()


def _mailboxes(value: str) -> tuple[list[_Mailbox | None], bool]:
    """The mailboxes of an address header, each (display, addr-spec text) or None
    when unreadable, and whether group syntax (``name: a, b;``) was used."""
    entries: list[_Mailbox | None] = []
    grouped = False
    current: list[_Token] = []
    in_angle = False
    for token in _tokens(value):
        kind = token[0]
        if kind == "<":
            in_angle = True
        elif kind == ">":
            in_angle = False
        elif not in_angle and kind == ":" and not grouped:
            grouped = True
            current = []  # the group's name
            continue
        elif not in_angle and kind in (",", ";"):
            # ';' ends a group; some clients also use it between addresses.
            entry = _mailbox(current)
            if not isinstance(entry, _Empty):
                entries.append(entry)
            current = []
            continue
        current.append(token)
    entry = _mailbox(current)
    if not isinstance(entry, _Empty):
        entries.append(entry)
    return entries, grouped


def _canonical(addr: str) -> EmailAddress | None:
    try:
        return parse_email(addr)
    except AddressError:
        return None


def _display(phrase: str | None) -> str | None:
    if phrase is None:
        return None
    return _one_line(decode_words(phrase), _MAX_DISPLAY) or None


def _single_mailbox(values: list[str]) -> tuple[EmailAddress | None, str | None]:
    """The address and display name of a header that must hold exactly one mailbox
    (From, Sender); (None, None) when it holds none, several, or an ambiguous one."""
    if len(values) != 1:
        return None, None
    entries, grouped = _mailboxes(values[0])
    if grouped or len(entries) != 1 or entries[0] is None:
        return None, None
    phrase, addr = entries[0]
    address = _canonical(addr)
    if address is None:
        return None, None
    return address, _display(phrase)


def _address_list(values: list[str]) -> tuple[EmailAddress, ...]:
    found: list[EmailAddress] = []
    for value in values:
        for entry in _mailboxes(value)[0]:
            address = _canonical(entry[1]) if entry is not None else None
            if address is not None:
                found.append(address)
    return tuple(dict.fromkeys(found))


# ---------------------------------------------------------------------------
# The MIME tree


# Work bounds beyond MimeLimits, for structures that are cheap to send and costly
# to read; real mail comes nowhere near either. Each multipart's body is searched
# for its boundary, so a deep nesting around a big part costs depth x size: at most
# 16 times the message plus 256 MiB (~0.25 s here) is searched. The slack lets a
# small nesting bomb reach max_depth and be reported as such.
_SCAN_FACTOR = 16
_SCAN_SLACK = 256 << 20
# Every "--boundary" that is not a delimiter (mid-line, or "--boundaryX") costs a
# Python step, and a boundary that prefixes the others makes one line count at
# every level.
_MAX_STRAY_DELIMITERS = 100_000
_TOO_COSTLY = "MIME structure too costly to parse"


@dataclass(slots=True)
class _Budget:
    scan_bytes: int
    stray_delimiters: int = _MAX_STRAY_DELIMITERS


def _body_parts(
    raw: bytes, start: int, end: int, boundary: bytes, budget: _Budget
) -> Iterator[tuple[int, int]]:
    """(start, end) of each body part of the multipart body ``raw[start:end]``.

    A delimiter is ``--boundary`` at the start of a line, followed only by
    optional spaces (``--boundary--`` closes); the line break before it belongs to
    it (RFC 2046 section 5.1.1). A missing close delimiter ends the last part at
    the end of the body. Stops early when ``budget`` runs out of stray delimiters.
    """
    delimiter = b"--" + boundary
    part_start: int | None = None
    position = start
    while True:
        hit = raw.find(delimiter, position, end)
        if hit < 0:
            break
        after = hit + len(delimiter)
        position = after
        closing = raw.startswith(b"--", after, end)
        newline = raw.find(b"\n", after, end)
        line_end = end if newline < 0 else newline
        at_line_start = hit == start or raw[hit - 1] == 0x0A
        if not at_line_start or raw[after + (2 if closing else 0) : line_end].strip(b" \t\r"):
            # Mid-line, or "--boundaryX": a longer boundary, or text.
            budget.stray_delimiters -= 1
            if budget.stray_delimiters < 0:
                return
            continue
        if part_start is not None:
            part_end = hit - 1 if hit > start else hit
            if part_end > part_start and raw[part_end - 1] == 0x0D:
                part_end -= 1
            yield part_start, max(part_start, part_end)
        if closing:
            return
        part_start = end if newline < 0 else newline + 1
        position = part_start
    if part_start is not None:
        yield part_start, end


@dataclass(slots=True)
class _Entity:
    headers: _Headers
    body_start: int
    end: int
    depth: int


@dataclass(slots=True)
class _Collected:
    text: str | None = None
    html: str | None = None
    attachments: list[InboundAttachment] = field(default_factory=list)
    content_ids: list[str | None] = field(default_factory=list)
    quarantine_reason: str | None = None

    def flag(self, reason: str) -> None:
        if self.quarantine_reason is None:
            self.quarantine_reason = reason


def _leaf(
    raw: bytes, entity: _Entity, content_type: str, found: _Collected, limits: MimeLimits
) -> None:
    headers = entity.headers
    encoding = (headers.first("content-transfer-encoding") or "").strip().lower()
    data = _decode_transfer(raw[entity.body_start : entity.end], encoding)
    filename = _filename(headers)
    disposition = headers.mime.get_content_disposition()
    if filename is None and disposition != "attachment":
        if content_type == "text/plain" and found.text is None:
            found.text = _decode_text(data, _charset(headers))
            return
        if content_type == "text/html" and found.html is None:
            if data.count(b"<") <= limits.max_html_tags:
                found.html = _decode_text(data, _charset(headers))
                return
            found.flag(f"HTML body with more than {limits.max_html_tags} tags")
    content_id = headers.first("content-id")
    found.attachments.append(
        InboundAttachment(
            # NUL and other controls: PostgreSQL text refuses NUL ("text/plain\x00").
            content_type=remove_control_chars(content_type)[:_MAX_CONTENT_TYPE],
            filename=filename,
            content=data,
        )
    )
    found.content_ids.append(_message_id(content_id))


def _walk(raw: bytes, top: _Entity, limits: MimeLimits) -> _Collected:
    """Visit the MIME tree depth first, in document order, with an explicit stack:
    the first inline text/plain and text/html parts are the body, every other leaf
    is an attachment."""
    found = _Collected()
    budget = _Budget(scan_bytes=_SCAN_FACTOR * len(raw) + _SCAN_SLACK)
    parts = 0
    stack = [top]
    while stack:
        entity = stack.pop()
        content_type = entity.headers.mime.get_content_type()
        if not content_type.startswith("multipart/"):
            _leaf(raw, entity, content_type, found, limits)
            continue
        boundary = _boundary(entity.headers)
        if boundary is None:
            _leaf(raw, entity, "text/plain", found, limits)  # RFC 2045: read as text
            continue
        if entity.depth >= limits.max_depth:
            found.flag(f"MIME nesting deeper than {limits.max_depth} levels")
            continue
        budget.scan_bytes -= entity.end - entity.body_start
        if parts > limits.max_parts or budget.scan_bytes < 0 or budget.stray_delimiters < 0:
            found.flag(_TOO_COSTLY)  # no-op when the part count was flagged already
            continue
        children: list[_Entity] = []
        cut = False
        for part_start, part_end in _body_parts(
            raw, entity.body_start, entity.end, boundary, budget
        ):
            parts += 1
            if parts > limits.max_parts:
                found.flag(f"more than {limits.max_parts} MIME parts")
                cut = True
                break
            extent = _header_extent(raw, part_start, part_end, limits.max_header_bytes)
            if extent is None:
                found.flag(f"MIME part header block over {limits.max_header_bytes} bytes")
                cut = True
                continue
            headers, body_start = _read_headers(raw, part_start, *extent)
            if content_type == "multipart/digest":
                headers.mime.set_default_type("message/rfc822")
            children.append(_Entity(headers, body_start, part_end, entity.depth + 1))
        if budget.stray_delimiters < 0:
            found.flag(_TOO_COSTLY)
            cut = True
        if not children and not cut:
            _leaf(raw, entity, "text/plain", found, limits)  # no parts: show the body as text
        stack.extend(reversed(children))
    return found


def _plain(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\x00", "")


def parse_email_bytes(raw: bytes, limits: MimeLimits = MimeLimits()) -> ParsedEmail:
    """Parse one received message. Raises :class:`UnparseableEmail` only when ``raw``
    is not a message at all; a hostile but readable one comes back with
    ``quarantine_reason`` set. See the module docstring for the rules."""
    if not raw:
        raise UnparseableEmail("the message is empty")
    extent = _header_extent(raw, 0, len(raw), limits.max_header_bytes)
    if extent is None:
        raise UnparseableEmail(f"header block over {limits.max_header_bytes} bytes")
    headers, body_start = _read_headers(raw, 0, *extent)
    if not headers.fields:
        raise UnparseableEmail("no header fields")
    found = _walk(raw, _Entity(headers, body_start, len(raw), 0), limits)

    from_address, from_display = _single_mailbox(headers.all("from"))
    sender, _ = _single_mailbox(headers.all("sender"))
    subject = headers.first("subject")
    html = None if found.html is None else sanitize_html(found.html)
    if found.text is not None:
        text = _plain(found.text)
    elif html is not None:
        text = html_to_text(html)
    else:
        text = ""
    return ParsedEmail(
        message_id=_message_id(headers.first("message-id")),
        from_address=from_address,
        from_display=from_display,
        sender=sender,
        reply_to=_address_list(headers.all("reply-to")),
        to=_address_list(headers.all("to")),
        cc=_address_list(headers.all("cc")),
        subject=None
        if subject is None
        else remove_control_chars(decode_words(subject)).strip()[:_MAX_SUBJECT],
        date=_date(headers.first("date")),
        in_reply_to=_message_id(headers.first("in-reply-to")),
        references=_references(headers.all("references")),
        text=text,
        html=html,
        attachments=tuple(found.attachments),
        quarantine_reason=found.quarantine_reason,
        content_ids=tuple(found.content_ids),
    )
