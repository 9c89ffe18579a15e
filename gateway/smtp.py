"""The SMTP protocol layer: an aiosmtpd handler and a server on the caller's event loop.

Thin, like the HTTP layer: it speaks SMTP, checks what can be checked at the edge
(recipient known, sizes, syntax) and hands one :class:`ReceivedEmail` to ``accept``,
which stores it durably. ``250`` after DATA is sent only once ``accept`` returned:
from then on the message is ours (Postfix is the reference for replies and limits).

What aiosmtpd (1.4.6) does for us, and what we change:

- DATA is read by :mod:`gateway.smtp_data` in bulk rather than by aiosmtpd's
  line-at-a-time loop (the same result, measured 1.5x the messages/s for 200 KB
  mail). It ends only at ``CRLF.CRLF``; bare CR and bare LF reach us inside the
  data. They are normalised to CRLF here (Postfix ``smtpd_forbid_bare_newline =
  normalize``): the fake end-of-data sequences used for SMTP smuggling become
  ordinary content lines of the one message, never a second transaction.
- ``line_length_limit`` is a class attribute that also sizes the connection's
  ``StreamReader`` (so the longest command line); :class:`_GatewaySMTP` sets it per
  server instance. DATA lines longer than RFC 5322's 998 octets are accepted up to
  ``max_line_bytes``.
- ``command_size_limits`` is a class-level dict that every connection clears and
  every EHLO grows; each connection gets its own here.
- Some of aiosmtpd's fixed replies are rewritten into Postfix's wording with
  enhanced status codes (``_REPLIES``); a handler error never leaves as aiosmtpd's
  ``500 Error: (Class) message`` but as ``451 4.3.0`` (:meth:`handle_exception`).
- Its session timeout restarts only when a command arrives, so a large message on a
  slow link would be cut off mid-DATA; here any bytes received restart it (an idle
  timeout, like Postfix's ``smtpd_timeout``).
- AUTH is never offered (no submission, no relaying) and the banner does not name
  the software or its version.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from gateway.smtp_data import DataError, read_data
from inbox.addresses import parse_email
from inbox.errors import AddressError, StoreUnavailable

log = logging.getLogger(__name__)

# Replies (Postfix's wording; enhanced status codes per RFC 3463).
OK_SENDER = "250 2.1.0 Ok"
OK_RECIPIENT = "250 2.1.5 OK"
OK_QUEUED = "250 2.0.0 Ok: queued"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
UTF8_NOT_DECLARED = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
NO_VALID_RECIPIENTS = "554 5.5.1 Error: no valid recipients"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
HEADER_TOO_BIG = "552 5.3.4 Message header size exceeds fixed limit"
LINE_TOO_LONG = "552 5.3.4 Message line length exceeds fixed limit"
LOOKUP_FAILED = "451 4.3.0 Temporary lookup failure"
STORE_FAILED = "451 4.3.0 Error: queue file write error"
INTERNAL_ERROR = "451 4.3.0 Error: internal error, try again later"
NO_AUTH = "503 5.5.1 Error: authentication not enabled"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"

_DATA_ERRORS = {DataError.TOO_MUCH: MESSAGE_TOO_BIG, DataError.LINE_TOO_LONG: LINE_TOO_LONG}

# aiosmtpd's own fixed replies -> ours. Matched exactly; the protocol tests pin them.
_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "553 5.1.3 Error: malformed address": "501 5.1.3 Bad address syntax",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "221 Bye": "221 2.0.0 Bye",
}

# aiosmtpd's line_length_limit counts the CRLF; max_line_bytes does not.
_CRLF = 2
# aiosmtpd's envelope marks the null reverse-path <> with this (a truthy) string.
_NULL_SENDER = "<>"
_FEATURES = ("8BITMIME", "SMTPUTF8", "PIPELINING")
# A connection that sends nothing for this long is closed (Postfix: smtpd_timeout).
IDLE_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    max_message_bytes: int  # advertised in EHLO SIZE; over it -> 552 5.3.4
    max_recipients: int = 100  # more RCPTs -> 452 4.5.3 Too many recipients
    max_header_bytes: int = 100 * 1024  # header block over it -> 552 5.3.4 (say "header")
    # Lines longer than 998 accepted up to this (Postfix-like). Counted as sent: CRLF
    # excluded, a transparency dot (RFC 5321 4.5.2) included.
    max_line_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_recipients", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_line_bytes < 999:
            raise ValueError("max_line_bytes must be at least 999 (998 and a transparency dot)")


@dataclass(frozen=True, slots=True)
class ReceivedEmail:
    peer_ip: str
    helo: str
    mail_from: str  # "" for the null reverse-path <>
    recipients: tuple[str, ...]  # canonical addresses (as returned by `route`)
    data: bytes  # line endings normalised to CRLF, as received otherwise


# RCPT address -> canonical address if it routes to a user, else None.
Route = Callable[[str], Awaitable[str | None]]
# Durably stores the message; raises inbox.errors.StoreUnavailable on failure.
Accept = Callable[[ReceivedEmail], Awaitable[None]]


def normalize_line_endings(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF; CRLF stays as it is."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data  # the common case: nothing bare, no copy
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def header_size(data: bytes) -> int:
    """Octets of the header block: up to and including the CRLF before the first
    empty line (the whole message when there is no body). ``data`` uses CRLF."""
    if data.startswith(b"\r\n"):
        return 0
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 2


def _has_surrogates(text: str) -> bool:
    # aiosmtpd decodes command arguments as UTF-8 with surrogateescape.
    return any("\ud800" <= ch <= "\udfff" for ch in text)


class GatewayHandler:
    """aiosmtpd handler: every recipient must route to a user; no AUTH, no relaying."""

    def __init__(self, limits: SmtpLimits, *, route: Route, accept: Accept) -> None:
        self._limits = limits
        self._route = route
        self._accept = accept
        # Stores still running for clients that went away before the reply.
        self._orphans: set[asyncio.Future[None]] = set()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # With this hook aiosmtpd leaves recording the client's name to us.
        session.host_name = hostname
        features = [f"SIZE {self._limits.max_message_bytes}", *_FEATURES]
        # aiosmtpd offers STARTTLS only with a TLS context and before TLS is on.
        if "250-STARTTLS" in responses:
            features.append("STARTTLS")
        lines = [server.hostname, *features]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address != _NULL_SENDER:
            if _has_surrogates(address) or not address.isprintable():
                return BAD_SENDER_SYNTAX
            if not address.isascii() and not envelope.smtp_utf8:
                return UTF8_NOT_DECLARED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return OK_SENDER

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self._limits.max_recipients:
            return TOO_MANY_RECIPIENTS
        if address.lower() == "postmaster":
            # RFC 5321 4.5.1: <postmaster> without a domain means ours.
            address = f"{address}@{server.hostname}"
        try:
            parse_email(address)
        except AddressError:
            return BAD_RECIPIENT_SYNTAX
        if not address.isascii() and not envelope.smtp_utf8:
            return UTF8_NOT_DECLARED
        try:
            canonical = await self._route(address)
        except StoreUnavailable:
            log.warning("recipient lookup failed: the store is unavailable")
            return LOOKUP_FAILED
        except Exception as exc:
            log.error("recipient lookup failed: %s", type(exc).__name__, exc_info=exc)
            return LOOKUP_FAILED
        if canonical is None:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        # One stored copy per user, however many of their addresses were named.
        if canonical not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(canonical)
        envelope.rcpt_options.extend(rcpt_options)
        return OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content
        assert isinstance(raw, bytes)  # decode_data=False
        data = normalize_line_endings(raw)
        if header_size(data) > self._limits.max_header_bytes:
            return HEADER_TOO_BIG
        mail_from = envelope.mail_from
        email = ReceivedEmail(
            peer_ip=_peer_ip(session.peer),
            helo=session.host_name or "",
            mail_from="" if mail_from in (_NULL_SENDER, None) else mail_from,
            recipients=tuple(envelope.rcpt_tos),
            data=data,
        )
        # Shielded: a client that disconnects now must not interrupt a store half-way.
        # As with Postfix after end-of-data, the message is then kept, and the client,
        # having had no reply, may send it again (RFC 1047); ingest deduplicates.
        store = asyncio.ensure_future(self._accept(email))
        try:
            await asyncio.shield(store)
        except asyncio.CancelledError:
            log.debug("client disconnected while its message was being stored")
            self._orphans.add(store)
            store.add_done_callback(self._orphan_done)
            raise
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                log.warning("message not stored (%s); answered 451", type(exc).__name__)
            else:
                log.error("message not stored (%s); answered 451", type(exc).__name__, exc_info=exc)
            return STORE_FAILED
        return OK_QUEUED

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client's TLS handshake failed; aiosmtpd closes the connection.
            log.info("STARTTLS handshake failed: %s", type(error.__cause__).__name__)
            return INTERNAL_ERROR
        # Anything unexpected: temporary (the client retries), with no detail.
        log.error("SMTP session error: %s", type(error).__name__, exc_info=error)
        return INTERNAL_ERROR

    def _orphan_done(self, store: asyncio.Future[None]) -> None:
        self._orphans.discard(store)
        if store.cancelled():
            log.warning("client disconnected after DATA; the store was cancelled")
        elif (exc := store.exception()) is not None:
            log.warning("client disconnected after DATA; not stored (%s)", type(exc).__name__)
        else:
            log.info("client disconnected after DATA; stored all the same (it may retry)")


def _peer_ip(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "" if peer is None else str(peer)


class _GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with per-instance limits, an idle timeout and Postfix's replies."""

    def __init__(self, handler: GatewayHandler, *, limits: SmtpLimits, **kwargs: Any) -> None:
        # Both must exist before SMTP.__init__: it sizes the StreamReader from the
        # first and clears the second (the class-level one otherwise, shared by all).
        self.line_length_limit = limits.max_line_bytes + _CRLF
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, data_size_limit=limits.max_message_bytes, **kwargs)
        self._handler = handler  # aiosmtpd's event_handler, typed
        self._limits = limits

    def data_received(self, data: bytes) -> None:
        self._reset_timeout()
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(_REPLIES.get(status, status))
        else:
            await super().push(status)

    async def smtp_AUTH(self, arg: str) -> None:
        # Without this, aiosmtpd answers "538 Encryption required" before TLS and runs
        # its (always failing) LOGIN/PLAIN exchange after it.
        await self.push(NO_AUTH)

    async def smtp_EHLO(self, hostname: str) -> None:
        # Each EHLO adds the SIZE and SMTPUTF8 allowances again; start from scratch.
        self.command_size_limits.clear()
        await super().smtp_EHLO(hostname)

    async def smtp_DATA(self, arg: str | None) -> None:
        # aiosmtpd's own smtp_DATA reads one line at a time; this one reads in bulk
        # (gateway/smtp_data.py) and keeps its replies and its checks' order.
        if await self.check_helo_needed():
            return
        session, envelope = self.session, self.envelope
        assert session is not None and envelope is not None
        if not envelope.rcpt_tos:
            # aiosmtpd answers "503 need RCPT" even when RCPTs were sent and all refused.
            refused = session.host_name and envelope.mail_from
            await self.push(NO_VALID_RECIPIENTS if refused else NEED_RCPT)
            return
        if arg:
            await self.push(DATA_SYNTAX)
            return
        await self.push(START_DATA)
        try:
            result = await read_data(
                self._reader,
                max_bytes=self._limits.max_message_bytes,
                max_line=self._limits.max_line_bytes,
            )
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            log.info("connection closed during DATA")
            self._writer.close()
            return
        if result.error is not None:
            self.envelope = self._create_envelope()  # aiosmtpd: the state after DATA
            await self.push(_DATA_ERRORS[result.error])
            return
        envelope.content = envelope.original_content = result.content
        status = await self._handler.handle_DATA(self, session, envelope)
        self.envelope = self._create_envelope()  # aiosmtpd: the state after DATA
        await self.push(status)


async def start_smtp_server(
    host: str,
    port: int,
    *,
    hostname: str,
    limits: SmtpLimits,
    route: Route,
    accept: Accept,
    tls_context: ssl.SSLContext | None = None,
) -> asyncio.base_events.Server:
    """Listen on ``host:port`` on the running event loop (no Controller thread).

    The caller owns the returned server: ``close()`` and ``wait_closed()`` it.
    STARTTLS is offered when ``tls_context`` is given, never required.
    """
    loop = asyncio.get_running_loop()
    handler = GatewayHandler(limits, route=route, accept=accept)

    def protocol() -> _GatewaySMTP:
        return _GatewaySMTP(
            handler,
            limits=limits,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="ESMTP",
            tls_context=tls_context,
            require_starttls=False,
            timeout=IDLE_TIMEOUT_S,
            auth_exclude_mechanism=("LOGIN", "PLAIN"),
            loop=loop,
        )

    return await loop.create_server(protocol, host, port, backlog=1024, reuse_address=True)
