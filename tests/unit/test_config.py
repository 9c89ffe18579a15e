"""Settings: file + env, unknown keys and bad values refused naming the key, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, ConfigFileError, load_settings

GOOD = """
[http]
listen = "127.0.0.1:9000"
public_url = "https://gw.example.com/"
[database]
url = "sqlite:///var/x.db"
[bridges.twilio]
enabled = true
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "s3cret-token-0123456789"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OPTMSG_") and name != "OPTMSG_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "optmsg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_are_loaded(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.http.listen == "127.0.0.1:9000"
    assert settings.http.public_url == "https://gw.example.com"
    assert settings.bridges.twilio.auth_token.get_secret_value() == "s3cret-token-0123456789"


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTMSG_BRIDGES__TWILIO__AUTH_TOKEN", "from-env-token-0123456789")
    monkeypatch.setenv("OPTMSG_BRIDGES__TWILIO__MEDIA_HOSTS", '["media.example.com"]')
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.bridges.twilio.auth_token.get_secret_value() == "from-env-token-0123456789"
    assert settings.bridges.twilio.media_hosts == ["media.example.com"]


def test_config_path_comes_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTMSG_CONFIG", str(write(tmp_path, GOOD)))
    assert load_settings().http.listen == "127.0.0.1:9000"


def test_unknown_key_in_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD + "\n[smtp]\nlisten_port = 25\n"))
    assert info.value.key == "smtp.listen_port"
    assert "unknown" in info.value.message


def test_unknown_section_in_env_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTMSG_HTTTP__LISTEN", "127.0.0.1:1")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD))
    assert info.value.key == "OPTMSG_HTTTP__LISTEN"


def test_unknown_key_in_env_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTMSG_BRIDGES__TWILIO__AUTHTOKEN", "x")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD))
    assert info.value.key == "bridges.twilio.authtoken"


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[http]\nlisten = "nope"\n', "http.listen"),
        ('[http]\npublic_url = "gw.example.com"\n', "http.public_url"),
        ('[http]\nmetrics_listen = "9100"\n', "http.metrics_listen"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[redis]\nurl = "http://x"\n', "redis.url"),
        ('[optin]\ndefault_region = "ZZ"\n', "optin.default_region"),
        ("[smtp]\nmax_message_bytes = -1\n", "smtp.max_message_bytes"),
        ("[worker]\nsweep_interval_s = 0\n", "worker.sweep_interval_s"),
    ],
)
def test_bad_value_is_refused_naming_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    base = GOOD[GOOD.index("[bridges.twilio]") :]
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, base + snippet))
    assert info.value.key == key


@pytest.mark.parametrize("token", ["", "changeme", "your_auth_token", "abc123"])
def test_placeholder_auth_token_on_enabled_bridge_is_refused(tmp_path: Path, token: str) -> None:
    text = GOOD.replace('auth_token = "s3cret-token-0123456789"', f'auth_token = "{token}"')
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == "bridges.twilio.auth_token"
    assert token not in str(info.value) or token == ""


def test_disabled_bridge_needs_no_secret(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[bridges.twilio]\nenabled = false\n"))
    assert settings.bridges.twilio.enabled is False


def test_error_never_echoes_a_secret_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTMSG_BRIDGES__TWILIO__ENABLED", "super-secret-value")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD))
    assert "super-secret-value" not in str(info.value)
    assert info.value.key == "bridges.twilio.enabled"


def test_secrets_are_masked_in_repr_and_dump(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    assert "s3cret-token" not in repr(settings)
    assert settings.masked()["bridges"]["twilio"]["auth_token"] == "***"
    assert "s3cret-token" not in str(settings.masked())


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\nlisten=")
    with pytest.raises(ConfigFileError) as info:
        load_settings(path)
    assert info.value.key == str(path)


def test_settings_compare_by_value(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_settings(path) == load_settings(path)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ('["127.0.0.1"]', [("127.0.0.1", 53)]),
        ('["127.0.0.1:5353", "::1"]', [("127.0.0.1", 5353), ("::1", 53)]),
        ('["[2001:db8::53]:5300"]', [("2001:db8::53", 5300)]),
        ("[]", None),
    ],
)
def test_dns_servers_are_read_as_ip_and_port(
    tmp_path: Path, entries: str, expected: list[tuple[str, int]] | None
) -> None:
    settings = load_settings(write(tmp_path, GOOD + f"[smtp]\ndns_servers = {entries}\n"))
    assert settings.smtp.nameservers() == expected


@pytest.mark.parametrize(
    "entry", ["dns.google", "127.0.0.1:0", "127.0.0.1:x", "[::1", "1.2.3.4:70000", "[::1]x", ""]
)
def test_a_dns_server_that_is_not_an_ip_and_port_is_refused(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD + f'[smtp]\ndns_servers = ["{entry}"]\n'))
    assert info.value.key == "smtp.dns_servers"
