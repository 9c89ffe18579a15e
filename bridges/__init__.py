"""Provider bridges: verify and parse inbound traffic into inbox.Inbound.

A bridge never imports optin or gateway: it is handed an ``ingest`` callable.
"""

from bridges.base import Ingest, WebhookRequest, WebhookResponse
from bridges.errors import BridgeError, MalformedRequest, PayloadTooLarge, SignatureInvalid
from bridges.twilio import SignatureVerifier, TwilioBridge

__all__ = [
    "BridgeError",
    "Ingest",
    "MalformedRequest",
    "PayloadTooLarge",
    "SignatureInvalid",
    "SignatureVerifier",
    "TwilioBridge",
    "WebhookRequest",
    "WebhookResponse",
]
