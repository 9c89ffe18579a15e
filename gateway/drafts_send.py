"""Sending a draft (SMS through Twilio, email through the operator's SMTP relay), and
the email send job.

Sending checks the draft, moves its row to ``sent`` as ``pending`` and trusts the
recipients in one transaction; the caller then enqueues the job. A refusal (no
number or address to send from, a recipient who texted STOP, nothing to send)
leaves the draft as it was.

The email job is at-least-once like every job: if a worker dies after the relay
accepted a message but before the row says so, the message is sent again, with the
same Message-ID (receiving systems and clients drop such duplicates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from bridges.smtp_relay import (
    OutgoingAttachment,
    OutgoingEmail,
    RelayPermanent,
    RelayTemporary,
    SendReport,
    build_message,
)
from config import Settings
from gateway.outbound import MAX_MEDIA, SendRetry
from inbox import drafts, outbound
from inbox.blobs import BlobStore
from inbox.conversations import email_key, sms_key
from inbox.db import Database
from inbox.errors import NotFound
from inbox.message import Channel
from inbox.models import attachments_t, messages_t, user_addresses_t
from inbox.suspension import is_suspended
from optin.trust import Source, add_if_absent, lock_user

log = logging.getLogger(__name__)

SENT = "sent"


class Relay(Protocol):
    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendReport: ...


def sending_address(conn: sa.Connection, user_id: str) -> str:
    """The user's OptMsg email address, the From of what they send; refused for a
    suspended account like every SMS path (inbox.outbound.sending_number)."""
    if is_suspended(conn, user_id):
        raise outbound.SendRefused(outbound.SUSPENDED_REFUSAL)
    a = user_addresses_t.c
    address = conn.execute(
        sa.select(a.address).where(a.user_id == user_id, a.kind == "email").order_by(a.address)
    ).scalar()
    if address is None:
        raise outbound.SendRefused("you have no OptMsg email address to send email from")
    return str(address)


def message_id_header(message_id: str, sender: str) -> str:
    """The Message-ID of an email we send: ours (the sender's domain), and the same
    on every attempt, so that a resend is recognisably the same message."""
    return f"<{message_id}@{sender.rpartition('@')[2]}>"


def _check_sms(settings: Settings, conn: sa.Connection, draft: drafts.DraftToSend) -> str:
    if not settings.bridges.twilio.enabled:
        raise outbound.SendRefused("SMS sending is not enabled on this gateway")
    if len(draft.to) != 1:
        raise ValueError("the draft has no recipient")
    if not draft.text.strip() and not draft.attachments:
        raise ValueError("the message is empty")
    if draft.attachments > MAX_MEDIA:
        raise ValueError(f"at most {MAX_MEDIA} media per message")
    sender = outbound.sending_number(conn, draft.user_id)
    (to,) = draft.to
    if outbound.is_opted_out(conn, draft.user_id, to):
        raise outbound.SendRefused(
            f"{to} texted STOP to your number; they receive nothing from you until they text START"
        )
    return sender


def _check_email(settings: Settings, conn: sa.Connection, draft: drafts.DraftToSend) -> str:
    if not settings.email_out.enabled:
        raise outbound.SendRefused("email sending is not enabled on this gateway")
    if not draft.to:
        raise ValueError("the draft has no recipient")
    if not draft.text.strip() and not draft.subject and not draft.attachments:
        raise ValueError("the message is empty")
    return sending_address(conn, draft.user_id)


def send_draft(settings: Settings, db: Database, user_id: str, draft_id: str) -> str:
    """Turn the draft into a pending outbound message; returns its channel after
    the move (``sms``, ``mms`` or ``email``). Raises NotFound, SendRefused (409),
    ValueError (nothing to send, 400)."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        draft = drafts.draft_to_send(conn, user_id, draft_id)
        if draft.channel == Channel.SMS.value:
            sender = _check_sms(settings, conn, draft)
            channel = Channel.MMS.value if draft.attachments else Channel.SMS.value
            conversation = sms_key(draft.to[0])
        else:
            sender = _check_email(settings, conn, draft)
            channel = Channel.EMAIL.value
            # Our own Message-ID is the thread's root: a reply's References name it.
            conversation = email_key(message_id_header(draft.id, sender))
        drafts.move_to_sent(conn, draft, sender=sender, channel=channel, conversation=conversation)
        if settings.optin.auto_trust_sent_to:
            add_if_absent(conn, user_id, draft.to, Source.SENT_TO)
    return channel


# --- the email job ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PendingEmail:
    id: str
    sender: str
    to: tuple[str, ...]
    subject: str | None
    text: str
    received_at: datetime
    status: str | None


def _pending_email(conn: sa.Connection, message_id: str) -> _PendingEmail:
    m = messages_t.c
    row = conn.execute(
        sa.select(m.id, m.sender, m.recipient, m.subject, m.text, m.received_at, m.status).where(
            m.id == message_id, m.direction == "outbound", m.channel == Channel.EMAIL.value
        )
    ).first()
    if row is None:
        raise NotFound(f"no outbound email {message_id}")
    to = tuple(r for r in row.recipient.split(",") if r)
    return _PendingEmail(row.id, row.sender, to, row.subject, row.text, row.received_at, row.status)


def _attachments(conn: sa.Connection, blobs: BlobStore, message_id: str) -> list[Any]:
    a = attachments_t.c
    rows = conn.execute(
        sa.select(a.content_type, a.filename, a.sha256)
        .where(a.message_id == message_id, a.status == "stored", a.sha256.is_not(None))
        .order_by(a.id)
    )
    return [OutgoingAttachment(r.content_type, r.filename, blobs.get(r.sha256)) for r in rows]


def _finish(conn: sa.Connection, message_id: str, values: dict[str, Any]) -> None:
    m = messages_t.c
    conn.execute(
        messages_t.update().where(m.id == message_id, m.status == outbound.PENDING).values(**values)
    )


def deliver_email(
    db: Database, blobs: BlobStore, relay: Relay, message_id: str, *, last_attempt: bool
) -> str:
    """Hand one pending email to the relay. Idempotent: an email already sent or
    failed is left alone. Returns its status afterwards; raises SendRetry for a
    temporary failure while attempts remain."""
    with db.read.connect() as conn:
        mail = _pending_email(conn, message_id)
        if mail.status != outbound.PENDING:
            return mail.status or ""
        attachments = _attachments(conn, blobs, message_id)
    data = build_message(
        OutgoingEmail(
            message_id=message_id_header(mail.id, mail.sender),
            sender=mail.sender,
            to=mail.to,
            subject=mail.subject,
            text=mail.text,
            date=mail.received_at.astimezone(UTC),
            attachments=tuple(attachments),
        )
    )
    try:
        report = relay.send(mail.sender, list(mail.to), data)
    except RelayTemporary as exc:
        if not last_attempt:
            raise SendRetry(exc.reason) from exc
        failed: RelayTemporary | RelayPermanent = exc
    except RelayPermanent as exc:
        failed = exc
    else:
        reason = drafts.REASON_SENT
        if report.refused:
            refused = "; ".join(f"{r}: {why}" for r, why in sorted(report.refused.items()))
            reason = f"sent, but refused for {refused}"[:200]
        with db.write.begin() as conn:
            _finish(
                conn,
                message_id,
                {"status": SENT, "external_id": f"smtp:{message_id}", "reason": reason},
            )
        return SENT
    with db.write.begin() as conn:
        outbound.mark_failed(conn, message_id, failed.code, failed.reason)
    log.info("email %s not sent: %s", message_id, failed.reason)
    return outbound.FAILED


def pending_emails(db: Database, *, older_than_s: float, limit: int = 500) -> list[str]:
    """Emails still pending after ``older_than_s``: their job was lost (the sweeper)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    m = messages_t.c
    with db.read.connect() as conn:
        return list(
            conn.execute(
                sa.select(m.id)
                .where(
                    m.direction == "outbound",
                    m.channel == Channel.EMAIL.value,
                    m.status == outbound.PENDING,
                    m.received_at < cutoff,
                )
                .order_by(m.id)
                .limit(limit)
            ).scalars()
        )
