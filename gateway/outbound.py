"""Sending SMS: the request (store + auto-trust), the job (hand to Twilio, with
retries), and the delivery statuses Twilio calls back with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa

from bridges.twilio import StatusUpdate
from bridges.twilio_rest import SendFailed, SentMessage
from config import Settings
from gateway.media_urls import signed_url
from inbox import outbound
from inbox.addresses import E164, parse_in_regions, parse_phone
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.models import messages_t
from optin.trust import Source, add_if_absent, lock_user

log = logging.getLogger(__name__)

STATUS_PATH = "/bridges/twilio/status"
UNSUBSCRIBED = 21610
MAX_MEDIA = 10  # Twilio's cap per message  # Twilio: the recipient has replied STOP to this sender


class Sender(Protocol):
    def send(
        self,
        *,
        from_: str,
        to: str,
        body: str,
        status_callback: str | None = None,
        media_urls: Sequence[str] = (),
    ) -> SentMessage: ...


def parse_recipient(text: str, regions: tuple[str, ...]) -> E164:
    """The recipient as typed, read with each region in turn (the user's, then the
    deployment's)."""
    return parse_in_regions(parse_phone, text, regions)


@dataclass(frozen=True, slots=True)
class MediaUpload:
    content_type: str
    filename: str | None
    data: bytes


def create_sms(
    settings: Settings,
    db: Database,
    user_id: str,
    to: E164,
    text: str,
    media: Sequence[MediaUpload] = (),
    blobs: BlobStore | None = None,
) -> outbound.OutboundSms:
    """Store the message to send (pending; an MMS with ``media``) and, when
    configured, trust the recipient: the user wants their answers. Raises
    SendRefused, ValueError (empty, too long, too many or too large media)."""
    stored: list[outbound.OutboundMedia] = []
    if media:
        if blobs is None:
            raise ValueError("media need a blob store")
        if len(media) > MAX_MEDIA:
            raise ValueError(f"at most {MAX_MEDIA} media per message")
        total = sum(len(m.data) for m in media)
        if total > settings.bridges.twilio.media_max_bytes:
            raise ValueError(
                f"the media are {total:,} bytes; at most "
                f"{settings.bridges.twilio.media_max_bytes:,} per message"
            )
        for item in media:
            digest = blobs.put(item.data)
            stored.append(
                outbound.OutboundMedia(item.content_type, item.filename, digest, len(item.data))
            )
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        message = outbound.insert_outbound_sms(conn, user_id, to, text, stored)
        if settings.optin.auto_trust_sent_to:
            add_if_absent(conn, user_id, [to], Source.SENT_TO)
    return message


class SendRetry(Exception):
    """Raised by the send job for a retryable provider failure (the broker retries)."""


def deliver_sms(
    settings: Settings, db: Database, sender: Sender, message_id: str, *, last_attempt: bool
) -> str:
    """Hand one pending message to Twilio. Idempotent: a message already handed over
    or failed is left alone. Returns the message's status afterwards."""
    try:
        with db.read.connect() as conn:
            message = outbound.get_outbound(conn, message_id)
    except NotFound:
        # Deleted since it was queued (by the user, or with their account): nothing
        # to send, and nothing a retry could change.
        log.info("sms %s no longer exists; not sent", message_id)
        return "deleted"
    if message.status != outbound.PENDING or not message.external_id.startswith("pending:"):
        return message.status
    callback = settings.http.public_url.rstrip("/") + STATUS_PATH
    with db.read.connect() as conn:
        media_ids = outbound.outbound_media_ids(conn, message_id)
    try:
        sent = sender.send(
            from_=message.sender,
            to=message.recipient,
            body=message.text,
            status_callback=callback,
            media_urls=[signed_url(settings, a) for a in media_ids],
        )
    except SendFailed as exc:
        if exc.retryable and not last_attempt:
            raise SendRetry(exc.reason) from exc
        with db.write.begin() as conn:
            outbound.mark_failed(conn, message_id, exc.code, exc.reason)
            if exc.code == UNSUBSCRIBED:
                outbound.record_opt_out(conn, message.user_id, message.recipient)
        log.info("sms %s not sent: %s", message_id, exc.reason)
        return outbound.FAILED
    with db.write.begin() as conn:
        outbound.mark_handed_over(conn, message_id, sent.sid, sent.status)
    return sent.status


def apply_status(db: Database, update: StatusUpdate) -> str | None:
    """Apply a delivery status callback; the message's user when it moved forward
    (their live streams are to be told), None when it did not."""
    with db.write.begin() as conn:
        moved = outbound.apply_status(conn, update.sid, update.status, update.error_code)
        if moved is not None and update.error_code == UNSUBSCRIBED:
            user_id, recipient, _ = moved
            outbound.record_opt_out(conn, user_id, recipient)
    return moved[0] if moved is not None else None


# A send still pending this long was lost (its job died with an in-memory queue or a
# broker restart): longer than all retries of one job take, so that the sweeper never
# races a job that is only waiting for its next attempt (that would send twice).
SEND_SWEEP_GRACE_S = 30 * 60.0


def pending_sends(db: Database, *, older_than_s: float, limit: int = 500) -> list[str]:
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    m = messages_t.c
    with db.read.connect() as conn:
        return list(
            conn.execute(
                sa.select(m.id)
                .where(
                    m.direction == "outbound",
                    # Email has its own job and sweep (gateway.drafts_send).
                    m.channel != "email",
                    m.status == outbound.PENDING,
                    m.received_at < cutoff,
                )
                .order_by(m.id)
                .limit(limit)
            ).scalars()
        )
