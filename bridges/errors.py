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


class DnsError(BridgeError):
    """Root of the DNS errors raised by :mod:`bridges.dns` resolvers. Raised when a
    lookup cannot be answered; "no such name" and "no such record" are not errors
    (resolvers answer them with an empty list)."""


class DnsTempError(DnsError):
    """Raised when a DNS lookup failed for a reason that may pass (timeout, SERVFAIL,
    no reachable name server): the answer is unknown, not empty, so sender
    authentication reports ``temperror`` instead of treating the record as absent."""


class UnparseableEmail(BridgeError):
    """Raised when received bytes cannot be treated as an email message at all: empty,
    no header field, or a header block over the configured limit. The caller keeps
    the raw bytes and quarantines them as "unparseable"; a message that parses but is
    hostile (a MIME bomb) is not refused this way but flagged for quarantine."""

    status = 400
