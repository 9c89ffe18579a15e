"""Exceptions raised by the config package."""

from __future__ import annotations


class ConfigError(Exception):
    """Raised when the configuration cannot be loaded or a value is refused.

    ``key`` is the dotted name of the offending setting (``bridges.twilio.auth_token``)
    so that operators see exactly what to fix; the message never contains a secret.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class ConfigFileError(ConfigError):
    """Raised when the TOML file named by ``OPTMSG_CONFIG`` is missing or is not valid TOML."""
