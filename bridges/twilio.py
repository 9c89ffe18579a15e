"""Twilio Programmable Messaging: verify and parse inbound SMS/MMS webhooks.

Signatures (https://www.twilio.com/docs/usage/security): base64 of an HMAC over
the full URL Twilio requested followed by every POST parameter sorted by name
(name immediately followed by value). The key is the account Auth Token
(HMAC-SHA1), or, when ``X-Twilio-Webhooks-Signature-Settings: key=ID,algorithm=ALG``
is present, the SharedKey secret with id ID (HMAC-SHA256 or -SHA1).

The URL is rebuilt from the configured ``public_url`` - never from the Host
header, which a client chooses - and checked with and without the scheme's
default port, because Twilio signs whichever form was configured on its side.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from bridges.base import CommandRunner, Ingest, WebhookRequest, WebhookResponse
from bridges.errors import MalformedRequest, PayloadTooLarge, SignatureInvalid
from bridges.sms_keywords import (
    Command,
    CommandError,
    Keyword,
    keyword_of,
    parse_command,
    twiml_message,
)
from inbox.addresses import parse_phone, parse_sms_sender
from inbox.errors import AddressError
from inbox.message import Channel, Inbound, InboundAttachment, IngestResult, Outcome

log = logging.getLogger(__name__)

BRIDGE = "twilio"
SIGNATURE_HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
TWIML_TYPE = "text/xml"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 256  # a full MMS webhook with 10 media is under 60 fields
MAX_MEDIA = 10  # Twilio's own cap on media per message
_HASHES = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}
# Parameters that become fields of the normalised message; the rest are kept as metadata.
_NORMALISED = frozenset({"From", "To", "Body", "MessageSid", "SmsMessageSid", "SmsSid", "NumMedia"})


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def url_variants(url: str) -> tuple[str, str]:
    """The URL as given, and the same URL with its default port toggled (added if it
    had none, removed if it had the default one)."""
    parts = urlsplit(url)
    default = _default_port(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return url, url
    return url, urlunsplit(other)


def signing_payload(url: str, params: Sequence[tuple[str, str]]) -> bytes:
    """The string Twilio signs: the URL then each name+value, sorted by name then value,
    a repeated (name, value) pair counted once (as Twilio's own validator does)."""
    pieces = [url]
    for name, value in sorted(set(params)):
        pieces.append(name)
        pieces.append(value)
    return "".join(pieces).encode("utf-8")


class SignatureVerifier:
    """Checks ``X-Twilio-Signature`` against the URL built from ``public_url``."""

    def __init__(
        self,
        public_url: str,
        auth_token: bytes,
        shared_keys: Mapping[str, bytes],
        url_fragment: str = "",
    ) -> None:
        self.auth_token = auth_token
        self.shared_keys = dict(shared_keys)
        # The URL bases to try, computed once: as configured first (what Twilio signs
        # in the common case), then with the default port toggled.
        self._bases = tuple(dict.fromkeys(url_variants(public_url)))
        # Connection overrides (``#rc=5&rp=ct,rt``) live in the URL fragment, which
        # the client never sends; when configured, the URL with it is accepted too.
        self._suffix = "#" + url_fragment if url_fragment else ""

    def _candidates(self, path_qs: str) -> list[str]:
        urls = [base + path_qs for base in self._bases]
        if self._suffix:
            urls += [url + self._suffix for url in urls]
        return urls

    def _secret_and_hash(self, settings_header: str | None) -> tuple[bytes, str]:
        if not settings_header:
            return self.auth_token, "HMAC_SHA1"
        key_id = ""
        algorithm = "HMAC_SHA1"
        for part in settings_header.split(","):
            name, sep, value = part.partition("=")
            if not sep:
                continue
            if name.strip() == "key":
                key_id = value.strip()
            elif name.strip() == "algorithm":
                algorithm = value.strip().upper()
        if algorithm not in _HASHES:
            raise SignatureInvalid(f"unsupported signature algorithm {algorithm[:32]!r}")
        secret = self.shared_keys.get(key_id)
        if secret is None:
            raise SignatureInvalid("the webhook names a signing key this gateway does not have")
        return secret, algorithm

    def verify(
        self, path_qs: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str]
    ) -> None:
        signature = headers.get(SIGNATURE_HEADER)
        if not signature:
            raise SignatureInvalid("missing X-Twilio-Signature header")
        # Compared in base64 form: encoding ours is C code, decoding theirs is not.
        given = signature.strip().encode("ascii", "replace")
        secret, algorithm = self._secret_and_hash(headers.get(SETTINGS_HEADER))
        digest = _HASHES[algorithm]
        for candidate in self._candidates(path_qs):
            expected = hmac.digest(secret, signing_payload(candidate, params), digest)
            if hmac.compare_digest(base64.b64encode(expected), given):
                return
        raise SignatureInvalid("signature does not match this request")


def parse_form(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != FORM_TYPE:
        raise MalformedRequest(f"expected {FORM_TYPE}, got {mime or 'no content type'}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the form is not valid UTF-8") from None
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise MalformedRequest("a form value is not valid UTF-8 once decoded") from None
    except ValueError:
        raise MalformedRequest(f"more than {MAX_FIELDS} form fields") from None
    return pairs


def _single(params: Mapping[str, list[str]], name: str) -> str:
    values = params.get(name)
    if not values or not values[0].strip():
        raise MalformedRequest(f"missing required parameter {name}")
    if len(set(values)) > 1:
        raise MalformedRequest(f"parameter {name} given more than once with different values")
    return values[0]


def normalise(
    pairs: Sequence[tuple[str, str]], default_region: str, received_at: datetime
) -> tuple[Inbound | None, str]:
    """Build the normalised message. Returns (None, reason) when ``To`` is not a phone
    number at all (the message cannot be routed; the caller answers 200 regardless)."""
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    sid = _single(params, "MessageSid") if "MessageSid" in params else None
    if sid is None:
        sid = _single(params, "SmsMessageSid") if "SmsMessageSid" in params else None
    if sid is None:
        raise MalformedRequest("missing required parameter MessageSid")
    if len(sid) > 64 or not sid.isascii() or not sid.isalnum():
        raise MalformedRequest("MessageSid is not a Twilio message SID")
    sender_raw = _single(params, "From")
    to_raw = _single(params, "To")
    body = params.get("Body", [""])[0]
    try:
        sender = parse_sms_sender(sender_raw, default_region)
    except AddressError as exc:
        raise MalformedRequest(f"From is not a phone number or sender id: {exc.reason}") from None
    try:
        recipient = parse_phone(to_raw, default_region)
    except AddressError as exc:
        return None, f"To is not a phone number: {exc.reason}"
    attachments = _media(params)
    meta = {
        name: values[0]
        for name, values in params.items()
        if name not in _NORMALISED and not name.startswith(("MediaUrl", "MediaContentType"))
    }
    inbound = Inbound(
        bridge=BRIDGE,
        external_id=sid,
        channel=Channel.MMS if attachments else Channel.SMS,
        sender=sender,
        recipient=recipient,
        text=body,
        received_at=received_at,
        attachments=attachments,
        provider_meta=meta,
        keyword=keyword_of(body, meta.get("OptOutType")),
    )
    return inbound, ""


def _media(params: Mapping[str, list[str]]) -> tuple[InboundAttachment, ...]:
    raw = params.get("NumMedia", ["0"])[0].strip() or "0"
    if not raw.isdigit() or int(raw) > MAX_MEDIA:
        raise MalformedRequest(f"NumMedia must be a whole number from 0 to {MAX_MEDIA}")
    media = []
    for i in range(int(raw)):
        url = params.get(f"MediaUrl{i}", [""])[0]
        if not url.startswith(("https://", "http://")):
            raise MalformedRequest(f"MediaUrl{i} is missing or not an http(s) URL")
        content_type = params.get(f"MediaContentType{i}", ["application/octet-stream"])[0]
        media.append(InboundAttachment(content_type=content_type[:255], remote_url=url))
    return tuple(media)


class TwilioBridge:
    """The inbound half of the Twilio bridge. Handed an ``ingest`` callable; never
    touches the store or the opt-in filter itself."""

    name = BRIDGE

    def __init__(
        self,
        *,
        verifier: SignatureVerifier,
        default_region: str,
        max_body_bytes: int,
        help_reply: str = "Reply STOP to stop, START to resume.",
    ) -> None:
        self.verifier = verifier
        self.default_region = default_region
        self.max_body_bytes = max_body_bytes
        self._help_twiml = twiml_message(help_reply)

    async def handle_sms(
        self, request: WebhookRequest, ingest: Ingest, command: CommandRunner | None = None
    ) -> tuple[WebhookResponse, IngestResult]:
        """Verify, parse and ingest one inbound SMS/MMS webhook.

        Raises :class:`SignatureInvalid` (403), :class:`MalformedRequest` (400) or
        :class:`PayloadTooLarge` (413) before anything is stored; lets
        ``inbox.StoreUnavailable`` through when the store refused the message.
        The TwiML answer is returned only after ``ingest`` committed.
        """
        verified = self.verify_sms(request, datetime.now(UTC))
        return await self.process_sms(verified, ingest, command)

    def verify_sms(self, request: WebhookRequest, received_at: datetime) -> VerifiedSms:
        """Everything that can refuse a request, and nothing that touches the store:
        size, form, signature, then the fields (SignatureInvalid, MalformedRequest,
        PayloadTooLarge)."""
        if len(request.body) > self.max_body_bytes:
            raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
        pairs = parse_form(request.body, request.headers.get("content-type"))
        self.verifier.verify(request.path_qs, pairs, request.headers)
        return self.reparse_sms(pairs, received_at)

    def reparse_sms(self, pairs: Sequence[tuple[str, str]], received_at: datetime) -> VerifiedSms:
        """The parse of a form whose signature was checked earlier (a spooled webhook
        replayed after a restart: the signature is not checked twice, so a rotated
        auth token cannot lose it). Raises MalformedRequest."""
        inbound, unroutable_reason = normalise(pairs, self.default_region, received_at)
        return VerifiedSms(tuple(pairs), received_at, inbound, unroutable_reason)

    async def process_sms(
        self, verified: VerifiedSms, ingest: Ingest, command: CommandRunner | None = None
    ) -> tuple[WebhookResponse, IngestResult]:
        """Run a verified message's command or ingest it; the TwiML to answer with.
        Lets ``inbox.StoreUnavailable`` through."""
        inbound = verified.inbound
        if inbound is None:
            return _twiml(EMPTY_TWIML), IngestResult(Outcome.UNROUTABLE, verified.unroutable_reason)
        if command is not None and not inbound.attachments:
            try:
                parsed: Command | CommandError | None = parse_command(inbound.text)
            except CommandError as exc:
                parsed = exc
            if parsed is not None:
                reply = await command(inbound, parsed)
                if reply is not None:
                    # A command is answered, never stored as a message.
                    return _twiml(twiml_message(reply)), IngestResult(
                        Outcome.COMMAND, "a command to the user's account"
                    )
        result = await ingest(inbound)
        if inbound.keyword == Keyword.HELP and result.outcome is not Outcome.UNROUTABLE:
            return _twiml(self._help_twiml), result
        return _twiml(EMPTY_TWIML), result


@dataclass(frozen=True, slots=True)
class VerifiedSms:
    """An inbound SMS/MMS webhook that passed every check: its form, when it arrived,
    and the normalised message (None, with the reason, when ``To`` cannot be routed)."""

    pairs: tuple[tuple[str, str], ...]
    received_at: datetime
    inbound: Inbound | None
    unroutable_reason: str


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A delivery status callback: the message's provider id, its new status (lower
    case) and Twilio's error code when it failed."""

    sid: str
    status: str
    error_code: int | None


def parse_status(
    verifier: SignatureVerifier, request: WebhookRequest, max_body_bytes: int
) -> StatusUpdate:
    """Verify and parse a StatusCallback request (signed like inbound webhooks).
    Raises SignatureInvalid, MalformedRequest or PayloadTooLarge."""
    if len(request.body) > max_body_bytes:
        raise PayloadTooLarge(f"request body over {max_body_bytes} bytes")
    pairs = parse_form(request.body, request.headers.get("content-type"))
    verifier.verify(request.path_qs, pairs, request.headers)
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    sid = _single(params, "MessageSid")
    if len(sid) > 64 or not sid.isascii() or not sid.isalnum():
        raise MalformedRequest("MessageSid is not a Twilio message SID")
    status = _single(params, "MessageStatus").strip().lower()
    if len(status) > 16 or not status.isalpha():
        raise MalformedRequest("MessageStatus is not a status word")
    raw_code = params.get("ErrorCode", [""])[0].strip()
    if raw_code and not (raw_code.isdigit() and len(raw_code) <= 9):
        raise MalformedRequest("ErrorCode is not a number")
    return StatusUpdate(sid, status, int(raw_code) if raw_code else None)


def _twiml(body: bytes) -> WebhookResponse:
    return WebhookResponse(200, TWIML_TYPE, body)
