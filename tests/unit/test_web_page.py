"""Which names under /static/ map to a file: only existing files with a known
suffix inside the static directory, whatever the name tries."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.web_page import CONTENT_TYPES, STATIC_DIR, static_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "js" / "app.js").write_text("export {};\n")
    (static / "app.css").write_text("body {}\n")
    (tmp_path / "secret.js").write_text("secret\n")
    return static.resolve()


def test_a_file_in_the_directory_or_below_is_found(root: Path) -> None:
    assert static_path("js/app.js", root) == root / "js" / "app.js"
    assert static_path("app.css", root) == root / "app.css"


@pytest.mark.parametrize(
    "name",
    [
        "../secret.js",
        "js/../../secret.js",
        "js/..",
        "/etc/passwd",
        ".hidden.js",
        "js\\app.js",
        "JS/APP.JS",
        "js/app.js.map",
        "js/app.py",
        "js/",
        "js//app.js",
        "js/app.js\x00.css",
    ],
)
def test_a_name_that_is_not_a_plain_file_name_is_refused(root: Path, name: str) -> None:
    assert static_path(name, root) is None


def test_a_missing_file_is_refused(root: Path) -> None:
    assert static_path("js/missing.js", root) is None


def test_a_symbolic_link_out_of_the_directory_is_refused(root: Path) -> None:
    (root / "js" / "leak.js").symlink_to(root.parent / "secret.js")
    assert static_path("js/leak.js", root) is None


def test_every_shipped_file_has_a_known_content_type() -> None:
    shipped = [p for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert shipped, "gateway/static is empty"
    assert {p.suffix for p in shipped} <= set(CONTENT_TYPES)
    for path in shipped:
        assert static_path(path.relative_to(STATIC_DIR).as_posix()) == path
