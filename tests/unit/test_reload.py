"""LiveSettings: which keys a reload applies, which wait for a restart, and what a
refused reload leaves behind."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from config import ConfigError, Settings
from gateway.reload import LiveSettings, ReloadReport, leaves, upper_bound
from tests.conftest import AUTH_TOKEN, make_settings

NEW_TOKEN = "rotated-token-" + "0f1e2d3c4b5a6978"


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/optmsg.db")


def changed(base: Settings, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """``base`` with some values replaced (``section={"sub.key": value}``)."""
    data = base.model_dump()
    for section, values in sections.items():
        for key, value in values.items():
            *path, last = key.split(".")
            node = data[section]
            for part in path:
                node = node[part]
            node[last] = value
    return Settings(**data)


def reloads(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("optmsg_config_reloads_total", {"result": result})
    return 0.0 if value is None else value


def test_a_reloadable_key_takes_its_new_value(base: Settings, tmp_path: Path) -> None:
    live = LiveSettings(base)
    live.reloadable("optin.quarantine_days")
    new = changed(base, tmp_path, optin={"quarantine_days": 7})

    report = live.reload(lambda: new)

    assert report == ReloadReport(applied=("optin.quarantine_days",), needs_restart=())
    assert live.current.optin.quarantine_days == 7


def test_a_restart_only_key_keeps_its_running_value(base: Settings, tmp_path: Path) -> None:
    live = LiveSettings(base)
    live.reloadable("optin.quarantine_days")
    new = changed(base, tmp_path, optin={"quarantine_days": 7}, database={"batch_max": 9})

    report = live.reload(lambda: new)

    assert report is not None and report.needs_restart == ("database.batch_max",)
    assert live.current.database.batch_max == base.database.batch_max
    assert live.current.optin.quarantine_days == 7


def test_restart_only_change_is_logged_by_key(
    base: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveSettings(base)
    new = changed(base, tmp_path, http={"listen": "127.0.0.1:9999"})

    with caplog.at_level(logging.INFO, logger="gateway.reload"):
        live.reload(lambda: new)

    assert "http.listen changed but needs a restart" in caplog.text
    assert live.current is base


def test_a_section_pattern_covers_its_keys(base: Settings, tmp_path: Path) -> None:
    live = LiveSettings(base)
    live.reloadable("auth")
    new = changed(base, tmp_path, auth={"codes_per_ip": 3, "window_s": 120})

    report = live.reload(lambda: new)

    assert report is not None and set(report.applied) == {"auth.codes_per_ip", "auth.window_s"}
    assert live.is_reloadable("auth.codes_per_ip") and not live.is_reloadable("authx.y")


def test_callback_runs_only_when_one_of_its_keys_changed(base: Settings, tmp_path: Path) -> None:
    live = LiveSettings(base)
    seen: list[str] = []
    live.on_reload(lambda s: seen.append("log"), "log.level")
    live.on_reload(lambda s: seen.append(s.optin.default_region), "optin.max_contacts")

    live.reload(lambda: changed(base, tmp_path, optin={"max_contacts": 10}))

    assert seen == ["US"]


def test_callback_receives_the_settings_now_in_force(base: Settings, tmp_path: Path) -> None:
    live = LiveSettings(base)
    received: list[Settings] = []
    live.on_reload(received.append, "events.max_streams")

    live.reload(lambda: changed(base, tmp_path, events={"max_streams": 3}))

    assert received == [live.current]
    assert received[0].events.max_streams == 3


def test_loader_error_keeps_running_settings_and_is_counted(
    base: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    live = LiveSettings(base, registry=registry)
    live.reloadable("http")

    def refuse() -> Settings:
        raise ConfigError("http.max_webhook_bytes", "Input should be greater than or equal to 1024")

    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert live.reload(refuse) is None

    assert live.current is base
    assert "http.max_webhook_bytes" in caplog.text
    assert (reloads(registry, "error"), reloads(registry, "ok")) == (1.0, 0.0)


def test_successful_reload_is_counted_ok(base: Settings, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    live = LiveSettings(base, registry=registry)

    live.reload(lambda: changed(base, tmp_path, log={"level": "debug"}))

    assert (reloads(registry, "ok"), reloads(registry, "error")) == (1.0, 0.0)


def test_mix_of_new_and_running_values_is_validated_again(
    base: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file turns the bridge off and empties the token; the switch needs a restart,
    # so the token alone would leave an enabled bridge without one.
    live = LiveSettings(base)
    live.reloadable("bridges.twilio.auth_token")
    new = changed(base, tmp_path, bridges={"twilio.enabled": False, "twilio.auth_token": ""})

    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert live.reload(lambda: new) is None

    assert live.current is base
    assert "bridges.twilio.auth_token" in caplog.text


def test_failing_callback_restores_previous_settings(
    base: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    live = LiveSettings(base, registry=registry)
    applied: list[int] = []
    live.on_reload(lambda s: applied.append(s.events.max_streams), "events.max_streams")

    def broken(_: Settings) -> None:
        raise RuntimeError("cannot")

    live.on_reload(broken, "events.max_streams")

    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert live.reload(lambda: changed(base, tmp_path, events={"max_streams": 3})) is None

    assert live.current is base
    # The first callback took the new value, then was handed the old one back.
    assert applied == [3, base.events.max_streams]
    assert reloads(registry, "error") == 1.0


def test_secret_values_never_reach_the_log(
    base: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveSettings(base)
    live.reloadable("bridges.twilio.auth_token")

    with caplog.at_level(logging.DEBUG, logger="gateway.reload"):
        live.reload(lambda: changed(base, tmp_path, bridges={"twilio.auth_token": NEW_TOKEN}))

    assert live.current.bridges.twilio.auth_token.get_secret_value() == NEW_TOKEN
    assert "bridges.twilio.auth_token" in caplog.text
    assert NEW_TOKEN not in caplog.text and AUTH_TOKEN not in caplog.text


def test_on_reload_without_keys_is_refused(base: Settings) -> None:
    with pytest.raises(ValueError, match="keys"):
        LiveSettings(base).on_reload(lambda s: None)


def test_tables_are_one_key(base: Settings) -> None:
    keys = leaves(base)
    assert "bridges.twilio.webhook_shared_keys" in keys
    assert not any(k.startswith("bridges.twilio.webhook_shared_keys.") for k in keys)


def test_upper_bound_reads_the_fields_limit() -> None:
    from config import HttpSettings

    assert upper_bound(HttpSettings, "max_webhook_bytes") == 16 * 1024 * 1024


def test_unreadable_file_keeps_running_settings(
    base: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    live = LiveSettings(base, registry=registry)

    def unreadable() -> Settings:
        raise PermissionError(13, "Permission denied")

    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert live.reload(unreadable) is None

    assert live.current is base
    assert "could not be read (PermissionError)" in caplog.text
    assert reloads(registry, "error") == 1.0
