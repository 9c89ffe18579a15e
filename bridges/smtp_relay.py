"""Outbound email: build the MIME message (stdlib ``email``) and hand it to the
operator's SMTP relay (stdlib ``smtplib``).

The relay's answer decides what happens next: a ``4xx`` reply, a dropped
connection or a timeout may pass (:class:`RelayTemporary`, the caller retries); a
``5xx`` reply will not (:class:`RelayPermanent`, the message failed, the reply is
kept for the user to read).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from bridges.errors import BridgeError

#: Longest relay reply kept on a message (the stored reason is at most 200 characters).
_MAX_REPLY = 150
_FORBIDDEN_IN_HEADERS = frozenset("\r\n\x00")


class RelayError(BridgeError):
    """Root of the errors raised while handing a message to the SMTP relay.
    ``code`` is the relay's reply code when it gave one; ``reason`` is safe to show
    the user (the reply text, never a credential)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RelayTemporary(RelayError):
    """Raised when the relay could not take the message now: a ``4xx`` reply, a
    connection refused, dropped or timed out, STARTTLS unavailable. Sending again
    later may succeed."""


class RelayPermanent(RelayError):
    """Raised when the relay refused the message for good: a ``5xx`` reply to the
    sender, every recipient, the data, or the credentials."""


def header_safe(value: str) -> bool:
    """Whether ``value`` can go into a header without starting another one."""
    return not any(c in _FORBIDDEN_IN_HEADERS for c in value)


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    content_type: str
    filename: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One message to send. ``message_id`` is the full header value (``<x@domain>``);
    addresses are canonical; nothing here may hold CR or LF."""

    message_id: str
    sender: str
    to: tuple[str, ...]
    subject: str | None
    text: str
    date: datetime
    attachments: tuple[OutgoingAttachment, ...] = ()


def build_message(mail: OutgoingEmail) -> bytes:
    """The message as bytes with CRLF line ends, ready for DATA. ValueError when a
    header value holds a line break (the store refuses those before; this is the
    last guard against header injection)."""
    for value in (mail.message_id, mail.sender, mail.subject or "", *mail.to):
        if not header_safe(value):
            raise ValueError("a header value contains a line break")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.to)
    if mail.subject:
        msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = mail.message_id
    msg.set_content(mail.text)
    for att in mail.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            att.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=att.filename or "attachment",
        )
    return msg.as_bytes()


def _reply(code: int, text: bytes | str) -> str:
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    shown = " ".join(shown.split())[:_MAX_REPLY]
    return f"the relay answered {code} {shown}".rstrip()


def _error(code: int, text: bytes | str) -> RelayError:
    kind = RelayTemporary if 400 <= code < 500 else RelayPermanent
    return kind(_reply(code, text), code)


@dataclass(frozen=True, slots=True)
class SendReport:
    """What the relay accepted: recipients it refused while taking the rest."""

    refused: dict[str, str]


class SmtpRelay:
    """The operator's relay at ``host:port``. With ``starttls`` the connection is
    upgraded before anything else (refusing a relay that does not offer it); with a
    ``username`` it logs in. ``tls_context`` verifies the relay's certificate (the
    system's trust store by default)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        starttls: bool = True,
        timeout_s: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_s = timeout_s
        self._tls_context = tls_context
        self._local_hostname = local_hostname

    def __repr__(self) -> str:
        return f"SmtpRelay({self.host}:{self.port}, starttls={self._starttls})"

    def send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> SendReport:
        """Hand one message to the relay. Raises RelayTemporary or RelayPermanent."""
        try:
            return self._send(mail_from, recipients, data)
        except smtplib.SMTPRecipientsRefused as exc:
            # Every recipient refused: temporary only if one of them was.
            code, text = min(exc.recipients.values(), default=(550, b"recipients refused"))
            raise _error(code, text) from None
        except smtplib.SMTPResponseException as exc:
            raise _error(exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError:
            raise RelayTemporary("the relay does not offer STARTTLS") from None
        except ssl.SSLError as exc:
            raise RelayTemporary(f"TLS with the relay failed: {exc.reason or exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise RelayTemporary(f"the relay could not be reached: {type(exc).__name__}") from None

    def _send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> SendReport:
        with smtplib.SMTP(
            self.host, self.port, local_hostname=self._local_hostname, timeout=self._timeout_s
        ) as smtp:
            smtp.ehlo()
            if self._starttls:
                if not smtp.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError("STARTTLS")
                context = self._tls_context or ssl.create_default_context()
                smtp.starttls(context=context)
                smtp.ehlo()
            if self._username:
                smtp.login(self._username, self._password)
            refused = smtp.sendmail(mail_from, list(recipients), data)
        return SendReport({rcpt: _reply(code, text) for rcpt, (code, text) in refused.items()})
