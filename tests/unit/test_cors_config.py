"""http.cors_origins: origins as browsers send them, everything else refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings


def load(tmp_path: Path, origins: str) -> list[str]:
    path = tmp_path / "optmsg.toml"
    path.write_text(
        f"[http]\ncors_origins = {origins}\n[bridges.twilio]\nenabled = false\n", encoding="utf-8"
    )
    return load_settings(path).http.cors_origins


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def test_cors_origins_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "optmsg.toml"
    path.write_text("[bridges.twilio]\nenabled = false\n", encoding="utf-8")
    assert load_settings(path).http.cors_origins == []


def test_origins_are_normalised_as_browsers_serialise_them(tmp_path: Path) -> None:
    origins = load(
        tmp_path,
        '["HTTPS://App.Example.com:443/", "http://localhost:5173", "http://127.0.0.1:80",'
        ' "https://[::1]:8443"]',
    )
    assert origins == [
        "https://app.example.com",
        "http://localhost:5173",
        "http://127.0.0.1",
        "https://[::1]:8443",
    ]


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "app.example.com",
        "https://app.example.com/app",
        "https://app.example.com?x=1",
        "https://app.example.com#top",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "https://bücher.example",
        "https://",
    ],
)
def test_a_value_that_is_not_an_origin_is_refused_naming_the_key(
    tmp_path: Path, origin: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'["{origin}"]')
    assert info.value.key == "http.cors_origins"
