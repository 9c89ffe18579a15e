"""Twilio Programmable Messaging, outbound: send one SMS through Twilio's REST API.

Synchronous (``requests`` under the official ``twilio`` package), called from a
worker thread. One call is one HTTP request: the sender never retries by itself;
the job that calls it decides, with backoff, from :attr:`SendFailed.retryable`.

Where requests go: the configured ``api_base_url`` (``https://api.twilio.com`` in
production, a local fake in tests). The SDK builds every API-domain URL on
``https://api.twilio.com``; the HTTP client handed to ``twilio.rest.Client`` (the
SDK's documented extension point for custom transports) swaps that origin for the
configured one, and refuses any other URL, so a request can never leave for a host
nobody configured. The SDK's edge/region settings, which it would otherwise read
from ``TWILIO_EDGE``/``TWILIO_REGION`` in the environment, are turned off: a
regional endpoint is configured as the base URL itself.

Threads: ``requests.Session`` is not documented as thread-safe (psf/requests#2766),
and the SDK's HTTP client keeps per-request state on itself. So a
:class:`TwilioSender` keeps a small pool of clients, each used by one thread at a
time and returned afterwards: connections are reused, nothing is shared mid-request,
and the pool never grows beyond the number of concurrent senders.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from bridges.errors import BridgeError

TWILIO_API = "https://api.twilio.com"  # where the SDK points every api-domain request
USER_AGENT_EXTENSION = "optmsg-gateway"
UNSUBSCRIBED = 21610  # the recipient replied STOP to this sender
REGION_NOT_ENABLED = 21408  # the account's geographic permissions exclude the recipient
AUTHENTICATE = 20003  # Twilio could not authenticate the request
# Twilio will not delete a message it is still processing (a minute or more after it
# was sent or received); the same request succeeds later.
NOT_YET_DELETABLE = 20009
# A Message SID: SM (SMS) or MM (MMS) and 32 hex digits. Checked before it goes into
# a URL path (the SDK does not escape it).
_MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")
MAX_REASON = 300  # characters of a provider's message kept in a reason
_SDK_PREFIX = "Unable to create record"  # what the SDK puts before Twilio's message
_RETRYABLE_4XX = frozenset({408, 429})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

# Sentences for codes whose Twilio wording does not tell a user what happened.
_FRIENDLY = {
    UNSUBSCRIBED: (
        "The recipient has replied STOP to this number and receives nothing from it "
        "until they reply START."
    ),
    REGION_NOT_ENABLED: (
        "The gateway's Twilio account is not allowed to send SMS to the recipient's "
        "country (geographic permissions)."
    ),
}


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Twilio accepted the message: its Message SID and first status (``queued``,
    ``accepted`` or ``scheduled``; later ones arrive on the status callback)."""

    sid: str
    status: str


def is_message_sid(value: str) -> bool:
    """True when ``value`` is a Twilio Message SID (not a placeholder such as the
    ``pending:``/``draft:`` ids of messages Twilio has not been handed)."""
    return _MESSAGE_SID.fullmatch(value) is not None


class SendFailed(BridgeError):
    """Raised by :meth:`TwilioSender.send` when Twilio did not accept the message:
    Twilio answered an error (HTTP 4xx/5xx, with its error ``code`` when it gave one),
    the request could not be made or completed (connection refused or broken, DNS,
    TLS, timeout), the answer could not be read, or sending is not configured.

    ``reason`` is a sentence that can be shown to the user; it never contains the
    auth token or the account SID. ``retryable`` is True when trying again later may
    succeed (HTTP 5xx, 408, 429, connection failures, timeouts) and False when the
    same request would get the same answer (other 4xx, bad configuration).
    ``maybe_sent`` is True when the request may have reached Twilio before it failed
    (a read timeout, a connection broken after sending, an unreadable success
    answer): Twilio has no idempotency key for Messages, so a retry may send the
    SMS twice; False when Twilio certainly created no message.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        code: int | None = None,
        http_status: int | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.code = code
        self.http_status = http_status
        self.maybe_sent = maybe_sent

    @property
    def unsubscribed(self) -> bool:
        """The recipient replied STOP to the sending number (Twilio error 21610)."""
        return self.code == UNSUBSCRIBED


class _ApiHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """The SDK's own ``requests`` client, pointed at ``api_base_url`` and with
    transport-level retries off on both schemes (the job retries, with backoff)."""

    def __init__(self, api_base_url: str, timeout_s: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout_s)
        self._base = api_base_url
        session: requests.Session = self.session
        # max_retries=0 is urllib3's Retry(0, read=False): one attempt, no retry on a
        # refused connection either. Mounted for http:// too (the SDK mounts https only).
        for prefix in ("https://", "http://"):
            session.mount(prefix, HTTPAdapter(max_retries=0))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url != TWILIO_API and not url.startswith(TWILIO_API + "/"):
            raise TwilioException("the Twilio SDK built a URL outside the configured API base")
        return super().request(method, self._base + url[len(TWILIO_API) :], *args, **kwargs)

    def close(self) -> None:
        session: requests.Session = self.session
        session.close()


class _Connection:
    """One SDK client and its HTTP session; used by one thread at a time."""

    def __init__(self, account_sid: str, auth_token: str, base: str, timeout_s: float) -> None:
        self._http = _ApiHttpClient(base, timeout_s)
        client = Client(
            account_sid,
            auth_token,
            http_client=self._http,
            user_agent_extensions=[USER_AGENT_EXTENSION],
        )
        # Never rewrite the host for an edge/region found in the environment.
        client.edge = None
        client.region = None
        self._messages = client.messages

    def create(self, params: dict[str, Any]) -> tuple[object, object]:
        message = self._messages.create(**params)
        return message.sid, message.status

    def delete_media(self, message_sid: str, media_sid: str) -> bool:
        return bool(self._messages(message_sid).media(media_sid).delete())

    def delete_message(self, message_sid: str) -> bool:
        return bool(self._messages(message_sid).delete())

    def close(self) -> None:
        self._http.close()


def _check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("api_base_url must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("api_base_url must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("api_base_url must not have a query or fragment")
    return url.rstrip("/")


class TwilioSender:
    """Sends SMS through Twilio's Messages API at ``api_base_url``. Safe to share
    between threads. Construction makes no request and accepts empty credentials
    (a gateway without Twilio configured); :meth:`send` then fails, not retryable."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base_url: str,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._base = _check_base_url(api_base_url)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []

    def __repr__(self) -> str:
        return f"TwilioSender(api_base_url={self._base!r}, timeout_s={self._timeout_s})"

    @property
    def api_base_url(self) -> str:
        return self._base

    def send(
        self,
        *,
        from_: str,
        to: str,
        body: str,
        status_callback: str | None = None,
        media_urls: Sequence[str] = (),
    ) -> SentMessage:
        """Ask Twilio to send ``body`` from ``from_`` to ``to`` (E.164 numbers).
        Twilio calls ``status_callback`` back with each delivery status. One HTTP
        request, no retry; :class:`SendFailed` when Twilio did not accept it."""
        if not self._account_sid or not self._auth_token:
            raise SendFailed(
                "Sending SMS is not configured on this gateway (no Twilio account).",
                retryable=False,
            )
        params: dict[str, Any] = {"to": to, "from_": from_, "body": body}
        if status_callback is not None:
            params["status_callback"] = status_callback
        if media_urls:
            # MMS: Twilio fetches each URL when it sends the message.
            params["media_url"] = list(media_urls)
        try:
            with self._connection() as connection:
                sid, status = connection.create(params)
        # Twilio's errors are not chained as causes (``from None``; still reachable as
        # ``__context__``): their text is the provider's, which a traceback would print
        # unredacted. Everything they carry is in the SendFailed, cleaned.
        except TwilioRestException as exc:
            raise self._http_failure(exc.status, exc.code, _strip_sdk_prefix(exc.msg)) from None
        except TwilioServiceException as exc:
            message = exc.detail or exc.title or ""
            raise self._http_failure(exc.status, exc.code, str(message)) from None
        except TwilioException as exc:
            raise SendFailed(
                "The gateway could not build the request to Twilio: "
                + self._clean(str(exc) or type(exc).__name__),
                retryable=False,
            ) from None
        except requests.RequestException as exc:
            raise _transport_failure(exc) from exc
        except json.JSONDecodeError as exc:
            raise SendFailed(
                "Twilio's answer could not be read; the message may have been sent.",
                retryable=False,
                maybe_sent=True,
            ) from exc
        if not isinstance(sid, str) or not sid:
            raise SendFailed(
                "Twilio's answer had no message id; the message may have been sent.",
                retryable=False,
                maybe_sent=True,
            )
        return SentMessage(sid=sid, status=status if isinstance(status, str) else "queued")

    def delete_media(self, message_sid: str, media_sid: str) -> None:
        """Delete one media item of a received MMS from Twilio (data minimisation once
        we hold our own copy). SendFailed when Twilio refused or was unreachable."""
        if not self._account_sid or not self._auth_token:
            raise SendFailed("Twilio is not configured on this gateway.", retryable=False)
        try:
            with self._connection() as connection:
                connection.delete_media(message_sid, media_sid)
        except TwilioRestException as exc:
            raise self._http_failure(exc.status, exc.code, _strip_sdk_prefix(exc.msg)) from None
        except TwilioException as exc:
            raise SendFailed(self._clean(str(exc) or type(exc).__name__), retryable=False) from None
        except requests.RequestException as exc:
            raise _transport_failure(exc) from exc

    def delete_message(self, message_sid: str) -> None:
        """Delete a message (and with it its media) from the Twilio account. SendFailed
        when Twilio refused or was unreachable: ``http_status`` 404 when Twilio has no
        such message (already deleted); retryable when Twilio is still processing it
        (error 20009), besides the usual 5xx, 408, 429 and connection failures."""
        if not self._account_sid or not self._auth_token:
            raise SendFailed("Twilio is not configured on this gateway.", retryable=False)
        if not is_message_sid(message_sid):
            raise SendFailed("Not a Twilio message SID.", retryable=False)
        try:
            with self._connection() as connection:
                connection.delete_message(message_sid)
        except TwilioRestException as exc:
            raise self._http_failure(
                exc.status,
                exc.code,
                _strip_sdk_prefix(exc.msg),
                retry_codes=frozenset({NOT_YET_DELETABLE}),
            ) from None
        except TwilioException as exc:
            raise SendFailed(self._clean(str(exc) or type(exc).__name__), retryable=False) from None
        except requests.RequestException as exc:
            raise _transport_failure(exc) from exc

    def close(self) -> None:
        """Close the pooled connections. The sender stays usable (it reconnects)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- internals

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = _Connection(
                self._account_sid, self._auth_token, self._base, self._timeout_s
            )
        try:
            yield connection
        finally:
            with self._lock:
                self._idle.append(connection)

    def _clean(self, text: str) -> str:
        """A provider's text made safe for a user: no secrets, one line, bounded."""
        for secret in (self._auth_token, self._account_sid):
            if secret:
                text = text.replace(secret, "[redacted]")
        text = _CONTROL.sub(" ", text).strip()
        if len(text) > MAX_REASON:
            text = text[: MAX_REASON - 1].rstrip() + "…"
        return text

    def _http_failure(
        self,
        status: object,
        code: object,
        message: str,
        *,
        retry_codes: frozenset[int] = frozenset(),
    ) -> SendFailed:
        http_status = status if isinstance(status, int) else None
        # The SDK reports the HTTP status as the code when Twilio's answer had none.
        twilio_code = code if isinstance(code, int) and code != http_status else None
        text = self._clean(message)
        if http_status is None:
            retryable = True
        else:
            retryable = http_status >= 500 or http_status in _RETRYABLE_4XX
        if twilio_code in retry_codes:
            retryable = True
        error = f"Twilio error {twilio_code}" if twilio_code is not None else None
        if http_status in (401, 403) and twilio_code in (None, AUTHENTICATE):
            reason = (
                f"Twilio refused the gateway's credentials (HTTP {http_status}); an operator "
                "must check the Twilio account SID and auth token."
            )
        elif twilio_code in _FRIENDLY:
            reason = f"{_FRIENDLY[twilio_code].removesuffix('.')} ({error})."
        elif http_status == 429:
            reason = "Twilio is limiting how fast the gateway sends (HTTP 429)."
        elif http_status is not None and http_status >= 500:
            reason = f"Twilio could not take the message just now (HTTP {http_status})."
        elif text:
            # Twilio's own sentence, intact: it names what was wrong.
            reason = f"Twilio refused the message ({error or f'HTTP {http_status}'}): {text}"
        else:
            reason = f"Twilio refused the message ({error or f'HTTP {http_status}'})."
        return SendFailed(reason, retryable=retryable, code=twilio_code, http_status=http_status)


def _strip_sdk_prefix(msg: object) -> str:
    text = str(msg or "")
    if text.startswith(_SDK_PREFIX):
        text = text[len(_SDK_PREFIX) :].lstrip(": ")
    return text


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (args, ``reason``) and its causes, depth-bounded."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the failure happened before any byte of the request was sent."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    return any(isinstance(e, NewConnectionError | ConnectTimeoutError) for e in _causes(exc))


def _transport_failure(exc: requests.RequestException) -> SendFailed:
    """A request that got no HTTP answer (or an unreadable one)."""
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return SendFailed(
            "The gateway's Twilio API address is not usable; an operator must check it.",
            retryable=False,
        )
    sent = not _never_connected(exc)
    if isinstance(exc, requests.Timeout):
        what = "Twilio did not answer in time" if sent else "Twilio could not be reached in time"
    elif isinstance(exc, requests.exceptions.SSLError):
        what = "The secure connection to Twilio failed"
    elif isinstance(exc, requests.ConnectionError):
        what = "The connection to Twilio broke" if sent else "Twilio could not be reached"
    else:
        what = "Twilio's answer could not be read"
    if sent:
        what += "; the message may have been sent"
    return SendFailed(what + ".", retryable=True, maybe_sent=sent)
