"""Typed settings, loaded once and handed down (no module-level singletons)."""

from config.errors import ConfigError, ConfigFileError
from config.settings import (
    BridgesSettings,
    DatabaseSettings,
    HttpSettings,
    LogSettings,
    OptinSettings,
    RedisSettings,
    Settings,
    SmtpSettings,
    SpoolSettings,
    StorageSettings,
    TwilioSettings,
    load_settings,
)

__all__ = [
    "BridgesSettings",
    "ConfigError",
    "ConfigFileError",
    "DatabaseSettings",
    "HttpSettings",
    "LogSettings",
    "OptinSettings",
    "RedisSettings",
    "Settings",
    "SmtpSettings",
    "SpoolSettings",
    "StorageSettings",
    "TwilioSettings",
    "load_settings",
]
