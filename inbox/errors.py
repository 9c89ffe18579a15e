"""Exceptions raised by the inbox package."""

from __future__ import annotations


class InboxError(Exception):
    """Root of the inbox exception tree."""


class AddressError(InboxError, ValueError):
    """Raised when text cannot be parsed as a phone number or email address.

    The message says why in words a user can act on (``"too few digits for a
    phone number"``); ``text`` is the input as given.
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text
        self.reason = reason


class NotFound(InboxError):
    """Raised when a user, message or token does not exist *for the caller*.

    Another user's object raises this too, so that callers cannot learn it exists.
    """


class Conflict(InboxError):
    """Raised when a create would violate uniqueness (a phone number already registered,
    an inbound address already routed to another user)."""


class StoreUnavailable(InboxError):
    """Raised when the database cannot be reached or refuses a write; the caller must not
    acknowledge the message (SMTP 451, webhook spool)."""


class WriterClosed(StoreUnavailable):
    """Raised when a message is submitted to a group-commit writer that has been stopped."""


class SpoolError(InboxError):
    """Root of the local webhook spool's errors (inbox.spool)."""


class SpoolFull(SpoolError):
    """Raised when a record would take the spool past its ``max_bytes``; the caller
    answers as if the store failed (503), the one case the spool gives up. Also
    raised by requeue_dead_letters when the dead letters do not fit."""


class SpoolBusy(SpoolError):
    """Raised at start when every instance slot of the spool directory is locked by
    another process (or the directory cannot be used)."""
