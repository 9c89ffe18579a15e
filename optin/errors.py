"""Exceptions raised by the optin package."""

from __future__ import annotations

from inbox.errors import NotFound


class OptinError(Exception):
    """Root of the optin exception tree."""


class NotQuarantined(OptinError):
    """Raised when release or deny names a message that is not in quarantine."""


class TrustEntryNotFound(OptinError, NotFound):
    """Raised when removing an address that is not on the user's list."""


class NothingToUndo(OptinError):
    """Raised when a screener undo finds no decision of the user's young enough to undo
    (none yet, already undone, or older than the undo window)."""
