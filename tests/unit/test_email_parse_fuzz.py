"""Fuzzing the MIME parser: whatever bytes arrive after DATA, ``parse_email_bytes``
returns a ParsedEmail that is safe to store and show, or raises UnparseableEmail,
the one exception its module documents. Nothing else escapes.

Inputs are arbitrary bytes, and hostile messages built from what parsers trip
over: header fields with random names and values, RFC 2047 encoded words in bad
charsets with bad base64 and quoted-printable, random Content-Type parameters and
boundaries, nested multiparts with missing, duplicated or mismatched delimiters,
NUL and control characters, bare CR and bare LF, non-UTF-8 bytes, long header
lines, path-like file names and script-laden HTML.

The runs are bounded and derandomised: every run (CI included) tries the same
examples. The strategies are shared with the SMTP fuzz test
(``tests/integration/test_smtp_fuzz.py``).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from html.parser import HTMLParser
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridges.email_parse import MimeLimits, ParsedEmail, parse_email_bytes
from bridges.errors import UnparseableEmail

# Bounded and reproducible: the whole file runs in about ten seconds.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Tight limits as well as the defaults, so that the flagging paths (nesting, part
# count, part header size, HTML tag count) and the header-size refusal are reached
# by small inputs.
TIGHT_LIMITS = MimeLimits(max_depth=3, max_parts=6, max_header_bytes=4096, max_html_tags=40)
LIMITS = st.sampled_from([MimeLimits(), TIGHT_LIMITS])


def parse_or_refuse(raw: bytes, limits: MimeLimits) -> ParsedEmail | None:
    """``parse_email_bytes(raw, limits)``, with its one documented refusal as None. Any
    other exception propagates and fails the test that called it."""
    try:
        return parse_email_bytes(raw, limits)
    except UnparseableEmail:
        return None


# ---------------------------------------------------------------------------
# Building blocks


def utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate in a strategy's text becomes the invalid
    # UTF-8 sequence a hostile sender could put on the wire.
    return text.encode("utf-8", "surrogatepass")


LINE_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"])
CONTROL_CHARS = st.one_of(
    st.characters(max_codepoint=0x1F, exclude_characters="\r\n"),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.sampled_from("\u202a\u202e\u2066\u2069\ufeff"),
)
SYNTAX_CHARS = st.sampled_from(list("=?<>()\"';:,@\\/.-*%_+ \t"))
_ANY_CHAR = st.characters(codec="utf-8", exclude_characters="\r\n")
# A lone surrogate is invalid UTF-8 on the wire (see utf8) and, in UTF-7, "+2AA-".
_SURROGATE = st.characters(categories=["Cs"])
# One line of any code points, with controls, MIME/address syntax and lone surrogates
# over-represented (st.lists: st.text would merge the alphabets and lose the weights).
HOSTILE_TEXT = st.lists(
    st.one_of(_ANY_CHAR, _ANY_CHAR, _ANY_CHAR, CONTROL_CHARS, SYNTAX_CHARS, _SURROGATE),
    max_size=30,
).map("".join)
LONE_SURROGATES = st.text(_SURROGATE, min_size=1, max_size=3)

# Common labels, labels that are not text codecs or not codecs at all, and UTF-7
# (whose decoder passes lone surrogates through), each a third of the time.
CHARSETS = st.one_of(
    st.sampled_from(["utf-8", "UTF-8", "us-ascii", "iso-8859-1", "windows-1252", "shift_jis",
                     "gb2312", "koi8-r", "utf-16", "utf-16-le", "utf-32"]),
    st.sampled_from(["x-unknown", "", "zlib", "base64", "hex", "rot13", "bz2", "uu", "idna",
                     "punycode", "unicode_escape", "raw-unicode-escape", "undefined",
                     "utf-8*en", "'utf-8'", '"utf-8"', "x" * 80, "utf\x00-8", "utf 8",
                     "\u00e9t\u00e9"]),
    st.sampled_from(["utf-7", "UTF-7", "unicode-1-1-utf-7"]),
)  # fmt: skip

# Bytes a part or an encoded word may carry: anything, text over several lines,
# and UTF-7 that decodes to lone surrogates ("+2AA-" is U+D800).
PAYLOAD_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(HOSTILE_TEXT.map(utf8), LINE_ENDS), max_size=8).map(b"".join),
    st.lists(st.one_of(HOSTILE_TEXT, LONE_SURROGATES), max_size=4).map(
        lambda texts: "".join(texts).encode("utf-7")
    ),
)

# Payloads that are not valid base64 or quoted-printable: stray characters, bad
# padding, "=" escapes that are not hex, soft line breaks.
DAMAGED_PAYLOAD = st.lists(
    st.sampled_from([*"ABCDabcd0189+/=_-!*~.\x00 Z", "=ZZ", "=\r\n", "=3", "==", "+2AA-"]),
    max_size=30,
).map("".join)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word, well-formed or not, in any charset label."""
    charset = draw(CHARSETS)
    kind = draw(st.sampled_from(["b", "B", "q", "Q", "x", ""]))
    data = draw(PAYLOAD_BYTES)
    if draw(st.integers(0, 3)) == 0:
        payload = draw(DAMAGED_PAYLOAD)
    elif kind in ("b", "B"):
        payload = base64.b64encode(data).decode("ascii")
    else:
        payload = binascii.b2a_qp(data, header=True).decode("ascii")
    end = draw(st.sampled_from(["?=", "?=", "?=", "", "?", "="]))
    return f"=?{charset}?{kind}?{payload}{end}"


ADDRESS_VALUES = st.sampled_from(
    ["Ann <ann@example.com>", '"a@b.example" <c@d.example>', "victim@bank.com(<attacker@evil>",
     "a@b.example, , c@d.example", "grp: a@b.example, c@d.example;", "<a@b.example",
     "a@b.example>", "(unterminated", '"unterminated', "a@@b", "@", "<>", "a@[127.0.0.1]",
     "=?utf-8?q?Bank?= <x@y.example>", "a@xn--.example", "a@" + "b" * 300 + ".example",
     "<m1@example.com> <m2@example.com>", "Mon, 02 Mar 2026 10:00:00 +0000",
     "Tue, 31 Feb 99999 25:61:61 -9999", "Thu, 01 Jan 1970 00:00:00 +2400"]
)  # fmt: skip

HEADER_VALUE_PIECES = st.one_of(
    HOSTILE_TEXT.map(utf8),
    encoded_words().map(utf8),
    encoded_words().map(utf8),
    ADDRESS_VALUES.map(utf8),
    st.binary(max_size=16),  # non-UTF-8 bytes
    st.sampled_from([b"\r\n ", b"\n\t", b"\r\n\t", b"\x00", b"\xff\xfe", b"\xed\xa0\x80"]),
    # Long lines: around RFC 5322's 998, over the tight limits, within the default ones.
    st.sampled_from([76, 78, 997, 998, 999, 3000, 5000]).map(lambda n: b"x" * n),
)
HEADER_VALUES = st.lists(HEADER_VALUE_PIECES, max_size=5).map(b"".join)

KNOWN_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Sender", "Reply-To", "Subject", "Date", "Message-ID",
     "In-Reply-To", "References", "Content-Type", "Content-Disposition",
     "Content-Transfer-Encoding", "Content-ID", "MIME-Version", "FROM", "subject"]
)  # fmt: skip
TOKEN_NAMES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=20,
)
# Lines that are not a header field: spaces, colons, NUL or non-ASCII in the
# name, no colon, a bare CR or LF. The stdlib ends the header block there.
BROKEN_LINES = st.one_of(
    st.binary(max_size=20),
    st.tuples(st.binary(max_size=8), HEADER_VALUES).map(lambda t: t[0] + b": " + t[1]),
    st.tuples(HEADER_VALUES, st.sampled_from([b"\r", b"\n", b"\r\n"]), HEADER_VALUES).map(b"".join),
)


PLAUSIBLE_LINES = st.sampled_from(
    [b"From: Ann <ann@example.com>", b"From: bank@example.com", b"To: bob@example.org",
     b"Subject: =?utf-8?q?caf=C3=A9?= statement", b"Message-ID: <m1@example.com>",
     b"Date: Mon, 02 Mar 2026 10:00:00 +0000", b"MIME-Version: 1.0",
     b"References: <a@x> <b@y>", b"In-Reply-To: <a@x>"]
)  # fmt: skip


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    """One header line: a field with a hostile value, a plausible field, or (rarely)
    a line that is not a field at all."""
    choice = draw(st.integers(0, 15))
    if choice == 0:
        return draw(BROKEN_LINES)
    if choice < 6:
        return draw(PLAUSIBLE_LINES)
    name = draw(st.one_of(KNOWN_NAMES, KNOWN_NAMES, TOKEN_NAMES))
    separator = draw(st.sampled_from([": ", ": ", ":", " : ", ":\t"]))
    return utf8(name + separator) + draw(HEADER_VALUES)


# --- file names ---------------------------------------------------------------

ODD_FILENAMES = st.sampled_from(
    ["../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/shadow", "C:\\boot.ini",
     "c:evil.exe", "a\x00b", "a\x00/../b", "....//....//x", ". .", "..", ".", "", " ",
     ".hidden", "invoice\u202efdp.exe", "a\r\nContent-Type: text/html", "%2e%2e%2fpasswd",
     "x" * 300, "\u00e9" * 200 + ".pdf", "a/b\\c", ".\u2024./x", "\u2025/x", ". ./. ./x",
     "\u0085..\u0085/x", "e\u0301.txt", "..\ufeff/x"]
)  # fmt: skip
FILENAMES = st.one_of(
    ODD_FILENAMES,
    ODD_FILENAMES,
    HOSTILE_TEXT,
    st.lists(st.one_of(ODD_FILENAMES, HOSTILE_TEXT, LONE_SURROGATES), max_size=3).map("".join),
)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _percent(data: bytes) -> str:
    return quote_from_bytes(data, safe="")


@st.composite
def parameters(draw: st.DrawFn, name: str, value: str) -> str:
    """``name=value`` as a MIME parameter in one of the forms senders use: quoted or
    not, RFC 2231 extended (in UTF-8, UTF-7 or any charset label) or continued,
    or broken (an unterminated quote)."""
    form = draw(st.integers(0, 6))
    if form == 0:
        return f"{name}={_quoted(value)}"
    if form == 1:
        return f"{name}={value}"
    if form == 2:
        return f"{name}*={draw(CHARSETS)}'en'{_percent(utf8(value))}"
    if form == 3:
        return f"{name}*=utf-7''{_percent(value.encode('utf-7'))}"
    if form == 4:
        encoded = _percent(utf8(value))
        cut = draw(st.integers(0, len(encoded)))
        return f"{name}*0*=utf-8''{encoded[:cut]}; {name}*1*={encoded[cut:]}"
    if form == 5:
        cut = draw(st.integers(0, len(value)))
        return f"{name}*0={_quoted(value[:cut])}; {name}*1={_quoted(value[cut:])}"
    return f'{name}="{value}'


JUNK_PARAMETERS = st.one_of(
    st.sampled_from(["", ";", "=", "x*0*=%ZZ", "x*=''", "*=x", "charset*=utf-7''%2B2AA-"]),
    st.tuples(TOKEN_NAMES, HOSTILE_TEXT).map(lambda t: f"{t[0]}={_quoted(t[1])}"),
)


@st.composite
def filename_params(draw: st.DrawFn) -> str:
    """A file name parameter (``filename`` or Content-Type's ``name``), plain, in
    RFC 2231 form, or an RFC 2047 encoded word inside quotes."""
    name = draw(FILENAMES)
    param = draw(st.sampled_from(["filename", "name", "FILENAME"]))
    if draw(st.integers(0, 4)) == 0:
        word = base64.b64encode(utf8(name)).decode("ascii")
        return f'{param}="=?{draw(CHARSETS)}?b?{word}?="'
    return draw(parameters(param, name))


# --- MIME entities -------------------------------------------------------------

LEAF_TYPES = st.sampled_from(
    ["text/plain", "text/html", "TEXT/HTML", "text/enriched", "application/octet-stream",
     "application/pdf", "image/png", "message/rfc822", "message/partial", "text", "",
     "a/b/c", "text/plain\x00", "image/png\x00", "text/\x01x", "application/x\x7f",
     "text/\u00e9", "*/*", "multipart/", "multipart"]
)  # fmt: skip
MULTIPART_SUBTYPES = st.sampled_from(["mixed", "alternative", "related", "digest", "x-odd", ""])
# Few distinct boundaries, so that a child often reuses its parent's; some that
# prefix one another; some that are not allowed by RFC 2046.
BOUNDARIES = st.one_of(
    st.sampled_from(["b", "b", "b1", "=_x", "b b", "", "--", " lead", "trail ", "\x00", "é"]),
    st.just("a" * 70),
    st.just("a" * 200),
    HOSTILE_TEXT,
    LONE_SURROGATES,
)
ENCODINGS = st.sampled_from(
    ["7bit", "8bit", "binary", "base64", "BASE64", "quoted-printable", "x-uuencode", "", "bogus"]
)
DISPOSITIONS = st.sampled_from(["attachment", "inline", "ATTACHMENT", "bogus", ""])

SCRIPTS = st.sampled_from(
    ["<script>alert(1)</script>", "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
     "<scr<script>ipt>alert(1)</script>", "<script/src=x>", "<<script>script>",
     "<svg><script>alert(1)</script></svg>", "<math><mtext><script>alert(1)</script>",
     "<img src=x onerror=alert(1)>", "<a href='javascript:alert(1)'>x</a>",
     "<!--<script>-->", "<![CDATA[<script>]]>", "<iframe srcdoc='<script>x</script>'>",
     "<noscript><script>x</script></noscript>", "<template><script>x</script></template>",
     "<textarea><script>x</script></textarea>", "<style></style><script>x</script>",
     "<scr\x00ipt>x</script>", "<script\x0c>x</script>", "<p title='</p><script>x'>",
     "+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "<body onload=alert(1)>",
     "<div style=\"background:url(javascript:x)\">", "<a href=\"&#106;avascript:x\">x</a>",
     "<img src=cid:x onerror=alert(1)>", "<p onclick=alert(1)>x</p>"]
)  # fmt: skip
HTML_TEXT = st.lists(st.one_of(SCRIPTS, HOSTILE_TEXT), max_size=8).map("".join)


@st.composite
def encoded_bodies(draw: st.DrawFn, data: bytes) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding value, ``data`` in it): right, wrong or damaged."""
    encoding = draw(ENCODINGS)
    if draw(st.integers(0, 3)) == 0:
        return utf8(encoding), utf8(draw(DAMAGED_PAYLOAD)) + data
    if encoding.lower() == "base64":
        return utf8(encoding), base64.encodebytes(data)
    if encoding == "quoted-printable":
        return utf8(encoding), binascii.b2a_qp(data)
    return utf8(encoding), data


@st.composite
def leaf_parts(draw: st.DrawFn) -> bytes:
    """One non-multipart entity: a text, HTML or attachment part with hostile headers."""
    eol = draw(LINE_ENDS)
    kind = draw(st.sampled_from(["text", "html", "attachment", "random"]))
    if kind == "html":
        content_type = "text/html"
        data = utf8(draw(HTML_TEXT))
    else:
        content_type = "text/plain" if kind == "text" else draw(LEAF_TYPES)
        data = draw(PAYLOAD_BYTES)
    params = [draw(parameters("charset", draw(CHARSETS)))] if draw(st.booleans()) else []
    if kind == "attachment" or draw(st.integers(0, 5)) == 0:
        params.append(draw(filename_params()))
    params.extend(draw(st.lists(JUNK_PARAMETERS, max_size=2)))
    lines = [utf8("; ".join([f"Content-Type: {content_type}", *params]))]
    encoding, body = draw(encoded_bodies(data))
    lines.append(b"Content-Transfer-Encoding: " + encoding)
    if kind == "attachment" or draw(st.integers(0, 3)) == 0:
        lines.append(utf8(f"Content-Disposition: {draw(DISPOSITIONS)}; {draw(filename_params())}"))
    if draw(st.booleans()):
        lines.append(b"Content-ID: <" + draw(HEADER_VALUES) + b">")
    lines.extend(draw(st.lists(header_lines(), max_size=2)))
    return eol.join(lines) + eol + eol + body


DELIMITER_STYLES = st.sampled_from(
    ["proper", "proper", "proper", "no-close", "duplicated", "no-open", "trailing-text",
     "mismatched", "no-boundary-param"]
)  # fmt: skip


@st.composite
def multipart_of(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    """A multipart entity around ``children``, its delimiters right or wrong."""
    eol = draw(LINE_ENDS)
    boundary = draw(BOUNDARIES)
    style = draw(DELIMITER_STYLES)
    parts = draw(st.lists(children, max_size=4))
    params = [] if style == "no-boundary-param" else [draw(parameters("boundary", boundary))]
    params.extend(draw(st.lists(JUNK_PARAMETERS, max_size=2)))
    content_type = "; ".join([f"Content-Type: multipart/{draw(MULTIPART_SUBTYPES)}", *params])
    used = utf8("x" + boundary if style == "mismatched" else boundary)
    delimiter = b"--" + used
    opening = delimiter + (b" trailing text" if style == "trailing-text" else b"") + eol
    pieces = [b"preamble" + eol]
    for index, part in enumerate(parts):
        if not (style == "no-open" and index == 0):
            pieces.append(opening)
        if style == "duplicated":
            pieces.append(opening)
        pieces.append(part + eol)
    if style != "no-close":
        pieces.append(delimiter + b"--" + eol + b"epilogue" + eol)
    return utf8(content_type) + eol + eol + b"".join(pieces)


def nested_entity(depth: int) -> bytes:
    """``depth`` well-formed multiparts, one inside the other, around a text part."""
    entity = b"Content-Type: text/plain\r\n\r\ncore\r\n"
    for level in range(depth):
        boundary = f"b{level}"
        entity = (
            utf8(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n')
            + utf8(f"--{boundary}\r\n")
            + entity
            + utf8(f"\r\n--{boundary}--\r\n")
        )
    return entity


def wide_entity(parts: int) -> bytes:
    """A multipart/mixed entity of ``parts`` small attachments."""
    body = b"".join(
        utf8(f"--w\r\nContent-Type: application/octet-stream\r\n\r\npart {n}\r\n")
        for n in range(parts)
    )
    return b'Content-Type: multipart/mixed; boundary="w"\r\n\r\n' + body + b"--w--\r\n"


# Random trees, and nesting or part-count bombs around the tight limits.
MIME_ENTITIES = st.one_of(
    st.recursive(leaf_parts(), multipart_of, max_leaves=8),
    st.recursive(leaf_parts(), multipart_of, max_leaves=8),
    st.integers(1, 6).map(nested_entity),
    st.integers(1, 9).map(wide_entity),
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """Random top-level header fields, then a (possibly nested) MIME entity whose
    own header fields continue the header block."""
    eol = draw(LINE_ENDS)
    headers = draw(st.lists(header_lines(), max_size=8))
    entity = draw(MIME_ENTITIES)
    return b"".join(line + eol for line in headers) + entity


@st.composite
def html_messages(draw: st.DrawFn) -> bytes:
    """A message whose body is script-laden HTML, alone or beside a text part,
    in a charset that may turn "+ADw-" into "<" (UTF-7)."""
    html = draw(HTML_TEXT)
    charset = draw(st.sampled_from(["utf-8", "utf-7", "us-ascii", "x-unknown", "utf-16"]))
    try:
        data = html.encode(charset)
    except (LookupError, UnicodeError):
        data = utf8(html)
    encoding, body = draw(encoded_bodies(data))
    html_part = (
        b"Content-Type: text/html; charset=" + utf8(charset) + b"\r\n"
        b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + body
    )
    if draw(st.booleans()):
        entity = html_part
    else:
        text_part = b"Content-Type: text/plain\r\n\r\nplain\r\n"
        entity = (
            b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
            b"--b\r\n" + text_part + b"\r\n--b\r\n" + html_part + b"\r\n--b--\r\n"
        )
    return b"From: a@b.example\r\nSubject: html\r\n" + entity


@st.composite
def charset_messages(draw: st.DrawFn) -> bytes:
    """A well-formed skeleton in which every decoded spot - display name, subject,
    boundary, charset and file name parameters, text and HTML bodies, media type -
    carries a hostile charset label and payload, so that each decoder is reached."""

    def word() -> bytes:
        return utf8(draw(encoded_words()))

    boundary = draw(BOUNDARIES.filter(lambda b: b.strip() and "\r" not in b and "\n" not in b))
    parts = []
    controls = st.one_of(st.just("\x00"), CONTROL_CHARS)
    odd_type = st.one_of(LEAF_TYPES, st.builds("application/x{}pdf".format, controls))
    for media_type in ("text/plain", "text/html", draw(odd_type)):
        params = [draw(parameters("charset", draw(CHARSETS))), draw(filename_params())]
        if media_type.startswith("text/"):
            params = params[:1]
        encoding, body = draw(encoded_bodies(draw(PAYLOAD_BYTES)))
        parts.append(
            utf8("; ".join([f"Content-Type: {media_type}", *params]))
            + b"\r\nContent-Transfer-Encoding: "
            + encoding
            + b"\r\n\r\n"
            + body
        )
    delimiter = b"--" + utf8(boundary)
    return (
        b"From: " + word() + b" <ann@example.com>\r\n"
        b"Subject: " + b" ".join(word() for _ in range(draw(st.integers(1, 3)))) + b"\r\n"
        b"Content-Type: multipart/mixed; " + utf8(draw(parameters("boundary", boundary))) + b"\r\n"
        b"\r\n" + b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
        + delimiter + b"--\r\n"
    )  # fmt: skip


@st.composite
def attachment_messages(draw: st.DrawFn) -> bytes:
    """A multipart/mixed message whose parts carry odd file names."""
    parts = draw(st.lists(leaf_parts(), min_size=1, max_size=4))
    attachments = [
        b"Content-Type: application/octet-stream; "
        + utf8(draw(filename_params()))
        + b"\r\nContent-Disposition: "
        + utf8(f"{draw(DISPOSITIONS)}; {draw(filename_params())}")
        + b"\r\n\r\ndata"
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in [*parts, *attachments])
    return (
        b'From: a@b.example\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + body
        + b"--b--\r\n"
    )


def nested(depth: int) -> bytes:
    """``depth`` well-formed multiparts, one inside the other, around a text part."""
    return b"From: a@b.example\r\nSubject: deep\r\n" + nested_entity(depth)


# ---------------------------------------------------------------------------
# Oracles for "safe to store and show"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: str) -> bool:
    """Valid Unicode without NUL: what a PostgreSQL text column accepts."""
    return "\x00" not in value and not _LONE_SURROGATE.search(value)


def string_fields(parsed: ParsedEmail) -> list[str]:
    values: list[str | None] = [
        parsed.message_id,
        parsed.from_address,
        parsed.from_display,
        parsed.sender,
        parsed.subject,
        parsed.in_reply_to,
        parsed.text,
        parsed.html,
        parsed.quarantine_reason,
        *parsed.reply_to,
        *parsed.to,
        *parsed.cc,
        *parsed.references,
        *parsed.content_ids,
    ]
    for attachment in parsed.attachments:
        values += [attachment.content_type, attachment.filename]
    return [value for value in values if value is not None]


class _ActiveContent(HTMLParser):
    """Collects what a browser would run: script elements, event handler attributes,
    javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found.append("<script>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{name}=")
            is_url = name in ("href", "src", "action", "formaction", "xlink:href")
            if is_url and value is not None and "javascript:" in "".join(value.split()).lower():
                self.found.append(f"{name}=javascript:")


def active_content(html: str) -> list[str]:
    parser = _ActiveContent()
    parser.feed(html)
    parser.close()
    return parser.found


_FILENAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def unsafe_filename(name: str) -> bool:
    return (
        "/" in name
        or "\\" in name
        or ".." in name
        or bool(_FILENAME_CONTROLS.search(name))
        or name != unicodedata.normalize("NFC", name)
        or len(name.encode("utf-8", "surrogatepass")) > 255
    )


# ---------------------------------------------------------------------------
# Properties

# What the fuzz found once, kept as explicit examples so that every run tries them.
# UTF-7 decodes "+2AA-" to a lone surrogate, which UTF-8 cannot encode (nh3 and the
# database refuse it); NUL in a media type, which PostgreSQL text refuses.
FOUND_UTF7_BOUNDARY = (
    b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary*=utf-7''%2B2AA-\r\n"
    b"\r\n--x\r\n\r\nhi\r\n"
)
FOUND_UTF7_HTML = (
    b"From: a@b.example\r\nContent-Type: text/html; charset=utf-7\r\n\r\n+2AA-<b>x</b>"
)
FOUND_UTF7_SUBJECT = b"From: a@b.example\r\nSubject: =?utf-7?q?+2AA-?=\r\n\r\nx"
FOUND_UTF7_TEXT = b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2AA-"
FOUND_UTF7_FILENAME = (
    b"From: a@b.example\r\nContent-Type: image/png; name*=utf-7''%2B2AA-\r\n\r\nxx"
)
FOUND_NUL_MEDIA_TYPE = b"From: a@b.example\r\nContent-Type: image/p\x00ng\r\n\r\nxx"


@FUZZ
@given(raw=st.binary(max_size=4000), limits=LIMITS)
def test_arbitrary_bytes_give_a_parsed_email_or_unparseable_and_nothing_else(
    raw: bytes, limits: MimeLimits
) -> None:
    parsed = parse_or_refuse(raw, limits)
    assert parsed is None or isinstance(parsed.text, str)


@FUZZ
@given(raw=st.one_of(hostile_messages(), charset_messages()), limits=LIMITS)
@example(raw=FOUND_UTF7_BOUNDARY, limits=MimeLimits())
def test_hostile_messages_give_a_parsed_email_or_unparseable_and_nothing_else(
    raw: bytes, limits: MimeLimits
) -> None:
    parsed = parse_or_refuse(raw, limits)
    assert parsed is None or isinstance(parsed.text, str)


@FUZZ
@given(raw=st.one_of(charset_messages(), hostile_messages()), limits=LIMITS)
@example(raw=FOUND_UTF7_SUBJECT, limits=MimeLimits())
@example(raw=FOUND_UTF7_TEXT, limits=MimeLimits())
@example(raw=FOUND_NUL_MEDIA_TYPE, limits=MimeLimits())
def test_every_string_field_is_valid_unicode_without_nul(raw: bytes, limits: MimeLimits) -> None:
    parsed = parse_or_refuse(raw, limits)
    if parsed is not None:
        assert [value for value in string_fields(parsed) if not _storable(value)] == []


@FUZZ
@given(raw=st.one_of(html_messages(), hostile_messages()), limits=LIMITS)
@example(raw=FOUND_UTF7_HTML, limits=MimeLimits())
def test_html_body_keeps_no_script_event_handler_or_javascript_url(
    raw: bytes, limits: MimeLimits
) -> None:
    parsed = parse_or_refuse(raw, limits)
    if parsed is not None and parsed.html is not None:
        assert "<script" not in parsed.html.lower()
        assert active_content(parsed.html) == []


@FUZZ
@given(raw=st.one_of(attachment_messages(), hostile_messages()), limits=LIMITS)
@example(raw=FOUND_UTF7_FILENAME, limits=MimeLimits())
def test_attachment_file_names_have_no_path_control_characters_or_dot_dot(
    raw: bytes, limits: MimeLimits
) -> None:
    parsed = parse_or_refuse(raw, limits)
    if parsed is not None:
        names = [a.filename for a in parsed.attachments if a.filename is not None]
        assert [name for name in names if name == "" or unsafe_filename(name)] == []


@FUZZ
@given(depth=st.integers(0, 12), max_depth=st.integers(1, 8))
def test_nesting_is_flagged_exactly_when_deeper_than_the_limit(depth: int, max_depth: int) -> None:
    parsed = parse_email_bytes(nested(depth), MimeLimits(max_depth=max_depth))
    flagged = parsed.quarantine_reason == f"MIME nesting deeper than {max_depth} levels"
    assert flagged == (depth > max_depth)
