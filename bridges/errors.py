"""Exceptions raised by bridges while verifying and parsing provider traffic.

The gateway maps each to an HTTP status; the message is safe to show the caller
(it names what was wrong, never a secret or an internal detail).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of the bridges exception tree."""

    status = 500


class SignatureInvalid(BridgeError):
    """Raised when a webhook's signature is missing, malformed or does not match:
    the request did not come from the provider (or was altered). Nothing is stored."""

    status = 403


class MalformedRequest(BridgeError):
    """Raised when a signed or unsigned request cannot be understood: wrong content
    type, undecodable body, a required parameter missing or out of range."""

    status = 400


class PayloadTooLarge(BridgeError):
    """Raised when a request body is over the configured limit."""

    status = 413
