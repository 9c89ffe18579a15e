"""Signed, expiring URLs under public_url from which Twilio fetches the media of an
MMS we send. Only stored attachments of outbound messages are served, and only with a
valid, unexpired signature: the URL is a capability, not a public file link.

The key is derived from the Twilio auth token (HMAC with a fixed label) rather than a
setting of its own: whoever holds the token controls the account anyway, and rotating
it revokes every outstanding URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

from config import Settings

MEDIA_PATH = "/media/outbound"
URL_TTL_S = 3600  # Twilio fetches at send time; retries of a send span ~20 minutes
_LABEL = b"optmsg outbound media url v1"


def _key(settings: Settings) -> bytes:
    token = settings.bridges.twilio.auth_token.get_secret_value().encode("utf-8")
    return hmac.digest(token, _LABEL, hashlib.sha256)


def _signature(settings: Settings, attachment_id: str, expires: int) -> str:
    payload = f"{attachment_id}:{expires}".encode()
    return hmac.digest(_key(settings), payload, hashlib.sha256).hex()


def signed_url(settings: Settings, attachment_id: str, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + URL_TTL_S)
    signature = _signature(settings, attachment_id, expires)
    base = settings.http.public_url.rstrip("/")
    return f"{base}{MEDIA_PATH}/{quote(attachment_id)}?expires={expires}&signature={signature}"


def valid(settings: Settings, attachment_id: str, expires: str, signature: str) -> bool:
    if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
        return False
    expected = _signature(settings, attachment_id, int(expires))
    return hmac.compare_digest(expected, signature)
