"""Make sender-controlled email content safe to store and show: HTML, text, file names.

Everything here is a pure function of its input. The HTML sanitiser is nh3 (the
Rust ``ammonia`` crate) with an explicit allow-list; nothing outside the lists
survives, so a construct we did not think of is dropped rather than passed on.
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Callable

import nh3

# Characters that must never reach a subject, a display name or a file name:
# C0/C1 controls (NUL breaks PostgreSQL text columns; CR/LF would forge header or
# log lines) and the bidi embedding/override/isolate marks, which reorder what is
# shown ("invoice\u202efdp.exe" displays as "invoiceexe.pdf").
_CONTROLS: dict[int, str | None] = {code: None for code in range(0x20)}
_CONTROLS.update({code: None for code in range(0x7F, 0xA0)})
_CONTROLS.update({code: None for code in range(0x202A, 0x202F)})
_CONTROLS.update({code: None for code in range(0x2066, 0x206A)})
_CONTROLS[ord("\t")] = " "

_ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "address", "b", "bdi", "big", "blockquote", "br", "caption",
        "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl",
        "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5",
        "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q",
        "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

# Removed together with their content (the rest of the disallowed tags are
# unwrapped: their text stays, the element goes).
_DROP_WITH_CONTENT = frozenset(
    {"script", "style", "title", "template", "textarea", "select", "svg", "math",
     "noembed", "noframes", "object", "iframe"}
)  # fmt: skip

_CELL = {"align", "valign", "width", "height", "bgcolor", "colspan", "rowspan", "nowrap"}
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"align", "dir", "lang", "title", "style"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border"},
    "table": {"border", "cellpadding", "cellspacing", "width", "bgcolor", "summary"},
    "td": _CELL,
    "th": _CELL | {"scope"},
    "tr": {"valign", "bgcolor"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value"},
    "hr": {"size", "width", "noshade"},
    "del": {"datetime"},
    "ins": {"datetime"},
}

# Layout and typography only: nothing that positions an element over the page
# around it (position, z-index), loads anything (background, list-style-image,
# border-image, content, cursor) or runs anything (behavior, -moz-binding).
_STYLE_PROPERTIES = frozenset(
    {
        "background-color", "border", "border-bottom", "border-bottom-color",
        "border-bottom-style", "border-bottom-width", "border-collapse", "border-color",
        "border-left", "border-left-color", "border-left-style", "border-left-width",
        "border-radius", "border-right", "border-right-color", "border-right-style",
        "border-right-width", "border-spacing", "border-style", "border-top",
        "border-top-color", "border-top-style", "border-top-width", "border-width",
        "clear", "color", "display", "float", "font", "font-family", "font-size",
        "font-style", "font-variant", "font-weight", "height", "letter-spacing",
        "line-height", "list-style-position", "list-style-type", "margin",
        "margin-bottom", "margin-left", "margin-right", "margin-top", "max-height",
        "max-width", "min-height", "min-width", "padding", "padding-bottom",
        "padding-left", "padding-right", "padding-top", "table-layout", "text-align",
        "text-decoration", "text-indent", "text-transform", "vertical-align",
        "white-space", "width", "word-break", "word-spacing",
    }
)  # fmt: skip

# A style value containing any of these is dropped whole. The filter sees the
# value before nh3 normalises it, and nh3's CSS parser resolves escapes
# ("\75rl(" becomes "url("), so backslashes and comments are refused outright
# rather than second-guessed.
_STYLE_DENY = (
    "url(", "src(", "@import", "expression(", "image(", "image-set(", "\\", "/*", "javascript:",
)  # fmt: skip

_URL_SCHEMES = frozenset({"http", "https", "mailto", "cid"})
_LINK_REL = "noopener noreferrer nofollow"
# Whitespace browsers strip from both ends of a URL attribute before reading it.
_URL_TRIM = " \t\n\r\f"


def _style_ok(value: str) -> bool:
    lowered = value.lower()
    return not any(marker in lowered for marker in _STYLE_DENY)


def _filter_local_images(tag: str, attribute: str, value: str) -> str | None:
    # Must not raise: nh3 reports a raising filter through sys.unraisablehook.
    if attribute == "style":
        return value if _style_ok(value) else None
    if tag == "img" and attribute == "src":
        return value if value.strip(_URL_TRIM).lower().startswith("cid:") else None
    return value


def _filter_remote_images(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "style":
        return value if _style_ok(value) else None
    return value


def _cleaner(attribute_filter: Callable[[str, str, str], str | None]) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=_ALLOWED_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        strip_comments=True,
        link_rel=_LINK_REL,
        url_schemes=_URL_SCHEMES,
        # A relative URL in a mail would resolve against our own web page.
        url_relative="deny",
        filter_style_properties=_STYLE_PROPERTIES,
    )


# Built once: constructing a Cleaner copies the allow-lists into Rust.
_LOCAL_IMAGES = _cleaner(_filter_local_images)
_REMOTE_IMAGES = _cleaner(_filter_remote_images)

# Where a rendered page would break the line; used only by html_to_text.
_BLOCK_BOUNDARY = re.compile(
    r"<(?:br|p|div|tr|li|dt|dd|hr|h[1-6]|/p|/div|/tr|/li|/h[1-6]|/table|/blockquote|/pre)\b",
    re.IGNORECASE,
)
# A tag of sanitize_html output: attribute values are always double-quoted there
# (with '"' escaped), and a '<' in text is always escaped, so this is exact on
# that output and linear in its length.
_TAG = re.compile(r'<(?:[^<>"]|"[^"]*")*>')
_SPACE_RUN = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def sanitize_html(html: str, *, allow_remote_images: bool = False) -> str:
    """The sender's HTML reduced to an allow-list, safe to embed in our web page.

    Kept, nothing else:

    - tags: a, abbr, address, b, bdi, big, blockquote, br, caption, center, cite,
      code, col, colgroup, dd, del, dfn, div, dl, dt, em, figcaption, figure, font,
      h1-h6, hr, i, img, ins, kbd, li, mark, ol, p, pre, q, s, samp, small, span,
      strike, strong, sub, sup, table, tbody, td, tfoot, th, thead, tr, tt, u, ul,
      var, wbr. Other tags are unwrapped (their text stays); script, style, title,
      template, textarea, select, svg, math, noembed, noframes, object and iframe
      go with their content. So forms, inputs, buttons, embeds, frames, ``<base>``,
      ``<meta>`` and ``<link>`` never survive.
    - attributes: align, dir, lang, title and style on any kept tag; href on a;
      src, alt, width, height, border on img; table layout attributes (border,
      cellpadding, cellspacing, width, bgcolor, summary; align, valign, width,
      height, bgcolor, colspan, rowspan, nowrap, scope on cells; valign, bgcolor on
      tr; span, width on col/colgroup); color, face, size on font; start, type,
      reversed on ol; type on ul; value on li; size, width, noshade on hr;
      datetime on del/ins. No event handlers (``on*``), no class or id (they
      would match our page's own CSS and anchors), no srcset/background.
    - URLs (href, src): http, https, mailto and cid only; relative URLs are
      dropped (they would resolve against our own origin), and so are
      ``javascript:`` and every ``data:`` URL. Links get
      ``rel="noopener noreferrer nofollow"``.
    - images: ``<img src="cid:...">`` (a part of the same message) is kept; any
      other src is removed - the element stays, with its alt text, but loads
      nothing - unless ``allow_remote_images`` is true, when http(s) sources are
      kept too (they tell the sender when and where the mail is read).
    - style attributes: kept, but only the layout and typography properties
      listed in ``_STYLE_PROPERTIES`` (no position, background or anything that
      loads a resource), and the whole attribute is dropped when its value holds
      ``url(``, ``src(``, ``image(``, ``image-set(``, ``@import``,
      ``expression(``, ``javascript:``, a CSS escape or a CSS comment (nh3
      resolves escapes, so ``\\75rl(`` would become ``url(``). HTML comments
      are removed.

    Cost: html5ever's work grows with the square of the element nesting depth
    (10,000 nested divs ~0.4 s), so callers bound the input first
    (``bridges.email_parse`` refuses to sanitise an HTML body with more than
    ``MimeLimits.max_html_tags`` tags).
    """
    cleaner = _REMOTE_IMAGES if allow_remote_images else _LOCAL_IMAGES
    return cleaner.clean(html)


def html_to_text(sanitized_html: str) -> str:
    """A plain-text rendering of ``sanitize_html`` output, for display and search
    when a message has no text/plain part: tags stripped, entities decoded, a line
    break where a block ended, runs of spaces and blank lines collapsed. The result
    is text, never to be read as HTML again.

    It takes sanitised HTML, not the sender's, so that script and style content is
    already gone and one html5ever pass (the costly part) serves both renderings.
    """
    # Source line breaks are plain whitespace in HTML; the rendered ones come
    # from block elements, marked before the tags disappear.
    flattened = _BLOCK_BOUNDARY.sub(lambda m: "\n" + m.group(0), " ".join(sanitized_html.split()))
    text = html_lib.unescape(_TAG.sub("", flattened)).replace("\xa0", " ")
    lines = (line.strip() for line in _SPACE_RUN.sub(" ", text).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip().replace("\x00", "")


def remove_control_chars(text: str) -> str:
    """``text`` without C0/C1 control characters and bidi override/isolate marks;
    a tab becomes a space. For one-line values a sender chose: subjects, names."""
    return text.translate(_CONTROLS)


_MAX_FILENAME_BYTES = 255  # the file name limit of every common file system
_MAX_KEPT_EXTENSION_BYTES = 16  # a longer "extension" is just part of a long name
_DRIVE = re.compile(r"^[A-Za-z]:")


def _cut_utf8(text: str, limit: int) -> str:
    # Dropping the bytes of a character cut in half keeps the result valid UTF-8.
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_filename(name: str | None) -> str | None:
    """A sender-supplied attachment file name made safe to keep as metadata (and to
    offer as a download name), or None when nothing usable remains.

    Removes control characters (NUL included) and bidi overrides, any directory
    part (after the last ``/`` or ``\\``) and a drive prefix, every ``..``, and
    leading dots (no hidden files); collapses whitespace; caps the result at 255
    bytes of UTF-8, cut on a character boundary and keeping a short extension.
    Non-ASCII names survive (NFC-normalised).
    """
    if name is None:
        return None
    cleaned = remove_control_chars(unicodedata.normalize("NFC", name))
    cleaned = cleaned.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _DRIVE.sub("", cleaned)
    while ".." in cleaned:
        cleaned = cleaned.replace("..", "")
    cleaned = " ".join(cleaned.split()).lstrip(". ")
    if len(cleaned.encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem, dot, extension = cleaned.rpartition(".")
        suffix = dot + extension
        if stem and len(suffix.encode("utf-8")) <= _MAX_KEPT_EXTENSION_BYTES:
            budget = _MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
            cleaned = _cut_utf8(stem, budget).rstrip() + suffix
        else:
            cleaned = _cut_utf8(cleaned, _MAX_FILENAME_BYTES).rstrip()
    return cleaned or None
