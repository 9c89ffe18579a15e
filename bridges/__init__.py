"""Provider bridges: verify and parse inbound traffic into inbox.Inbound, send
outbound, fetch provider media.

A bridge never imports optin or gateway: it is handed an ``ingest`` callable.
"""

from bridges.base import CommandRunner, Ingest, WebhookRequest, WebhookResponse
from bridges.errors import BridgeError, MalformedRequest, PayloadTooLarge, SignatureInvalid
from bridges.media import (
    AddressNotAllowed,
    Fetched,
    FetchFailed,
    HostNotAllowed,
    HostResolver,
    MediaFetcher,
    MediaPolicy,
    MediaRefused,
    StaticHostResolver,
    TooLarge,
    TypeNotAllowed,
)
from bridges.media import fetch as fetch_media
from bridges.media import fetch_all as fetch_all_media
from bridges.twilio import SignatureVerifier, StatusUpdate, TwilioBridge
from bridges.twilio_rest import SendFailed, SentMessage, TwilioSender

__all__ = [
    "AddressNotAllowed",
    "BridgeError",
    "CommandRunner",
    "FetchFailed",
    "Fetched",
    "HostNotAllowed",
    "HostResolver",
    "Ingest",
    "MalformedRequest",
    "MediaFetcher",
    "MediaPolicy",
    "MediaRefused",
    "PayloadTooLarge",
    "SendFailed",
    "SentMessage",
    "SignatureInvalid",
    "SignatureVerifier",
    "StaticHostResolver",
    "StatusUpdate",
    "TooLarge",
    "TwilioBridge",
    "TwilioSender",
    "TypeNotAllowed",
    "WebhookRequest",
    "WebhookResponse",
    "fetch_all_media",
    "fetch_media",
]
