"""Outbound messages in the store: created ``pending``, handed to the provider by a job,
then moved forward by the provider's delivery statuses.

A status never moves backwards: callbacks arrive out of order and more than once, so
each status has a rank and an update applies only when it ranks higher than the
stored one (which also makes a repeated callback a no-op).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from inbox import events
from inbox.addresses import E164
from inbox.errors import InboxError, NotFound
from inbox.ids import new_id
from inbox.message import Channel, Folder
from inbox.models import attachments_t, messages_t, sms_opt_outs_t, user_addresses_t
from inbox.suspension import is_suspended

PENDING = "pending"
FAILED = "failed"
REASON_SENT = "sent by you"
MAX_SMS_TEXT = 1600  # Twilio's limit for one (multi-segment) message body
SUSPENDED_REFUSAL = "your account is suspended: nothing can be sent from it"

# Twilio's message statuses, in the order a message goes through them. The three
# outcomes share a rank: a message is delivered, undelivered or failed, and a later
# callback of another outcome does not override the first.
_RANK = {
    PENDING: 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
    "read": 6,
}
STATUSES = frozenset(_RANK)


class SendRefused(InboxError):
    """Raised when a message may not be sent: the user has no OptMsg number to send
    from, the recipient texted STOP to it (until they text START), or the account is
    suspended."""


@dataclass(frozen=True, slots=True)
class OutboundSms:
    message_id: str
    user_id: str
    sender: E164
    recipient: E164
    text: str
    status: str
    external_id: str


def sending_number(conn: sa.Connection, user_id: str) -> E164:
    """The OptMsg number the user sends SMS from; SendRefused when they have none or
    their account is suspended (every SMS path asks this first)."""
    if is_suspended(conn, user_id):
        raise SendRefused(SUSPENDED_REFUSAL)
    a = user_addresses_t.c
    number = conn.execute(
        sa.select(a.address).where(a.user_id == user_id, a.kind == "sms").order_by(a.address)
    ).scalar()
    if number is None:
        raise SendRefused("you have no OptMsg number to send SMS from")
    return E164(number)


def is_opted_out(conn: sa.Connection, user_id: str, address: str) -> bool:
    o = sms_opt_outs_t.c
    found = conn.execute(
        sa.select(o.address).where(o.user_id == user_id, o.address == address)
    ).first()
    return found is not None


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """A file to send with an MMS, already in the blob store."""

    content_type: str
    filename: str | None
    sha256: str
    size: int


def insert_outbound_sms(
    conn: sa.Connection,
    user_id: str,
    to: E164,
    text: str,
    media: Sequence[OutboundMedia] = (),
) -> OutboundSms:
    """Create the pending outbound message (within the caller's transaction); with
    ``media`` it is an MMS. SendRefused when there is no number to send from or the
    recipient opted out."""
    if not text.strip() and not media:
        raise ValueError("the message is empty")
    if len(text) > MAX_SMS_TEXT:
        raise ValueError(f"an SMS is at most {MAX_SMS_TEXT} characters")
    sender = sending_number(conn, user_id)
    if is_opted_out(conn, user_id, to):
        raise SendRefused(
            f"{to} texted STOP to your number; they receive nothing from you until they text START"
        )
    message_id = new_id("msg")
    # Unique per message until the provider's id replaces it.
    external_id = f"pending:{message_id}"
    conn.execute(
        messages_t.insert().values(
            id=message_id,
            user_id=user_id,
            bridge="twilio",
            external_id=external_id,
            direction="outbound",
            channel=(Channel.MMS if media else Channel.SMS).value,
            folder=Folder.SENT.value,
            sender=sender,
            recipient=to,
            subject=None,
            text=text,
            html=None,
            received_at=datetime.now(UTC),
            read=True,
            reason=REASON_SENT,
            status=PENDING,
            conversation=to,
        )
    )
    now = datetime.now(UTC)
    for item in media:
        conn.execute(
            attachments_t.insert().values(
                id=new_id("att"),
                message_id=message_id,
                user_id=user_id,
                filename=item.filename,
                content_type=item.content_type,
                size=item.size,
                status="stored",
                sha256=item.sha256,
                created_at=now,
            )
        )
    channel = (Channel.MMS if media else Channel.SMS).value
    events.insert(
        conn,
        [events.message_created(user_id, message_id, Folder.SENT.value, channel, "outbound")],
    )
    return OutboundSms(message_id, user_id, sender, to, text, PENDING, external_id)


def outbound_media_ids(conn: sa.Connection, message_id: str) -> list[str]:
    a = attachments_t.c
    return list(
        conn.execute(
            sa.select(a.id).where(a.message_id == message_id, a.status == "stored").order_by(a.id)
        ).scalars()
    )


def media_for_provider(conn: sa.Connection, attachment_id: str) -> tuple[str, str] | None:
    """(content type, sha256) of a stored attachment of an outbound message, the only
    kind served to the provider; None for anything else."""
    a, m = attachments_t.c, messages_t.c
    row = conn.execute(
        sa.select(a.content_type, a.sha256)
        .join(messages_t, m.id == a.message_id)
        .where(a.id == attachment_id, a.status == "stored", m.direction == "outbound")
    ).first()
    if row is None or row.sha256 is None:
        return None
    return str(row.content_type), str(row.sha256)


def get_outbound(conn: sa.Connection, message_id: str) -> OutboundSms:
    m = messages_t.c
    row = conn.execute(
        sa.select(m.id, m.user_id, m.sender, m.recipient, m.text, m.status, m.external_id).where(
            m.id == message_id, m.direction == "outbound"
        )
    ).first()
    if row is None:
        raise NotFound(f"no outbound message {message_id}")
    return OutboundSms(
        row.id, row.user_id, E164(row.sender), E164(row.recipient), row.text, row.status,
        row.external_id,
    )  # fmt: skip


def mark_handed_over(conn: sa.Connection, message_id: str, sid: str, status: str) -> bool:
    """The provider accepted the message: record its id and first status (once)."""
    m = messages_t.c
    values: dict[str, object] = {"external_id": sid}
    if status in STATUSES:
        values["status"] = status
    moved = conn.execute(
        messages_t.update()
        .where(m.id == message_id, m.status == PENDING, m.external_id.like("pending:%"))
        .values(**values)
        .returning(m.user_id)
    ).first()
    if moved is not None and "status" in values:
        events.insert(conn, [events.message_status(moved.user_id, message_id, status)])
    return moved is not None


def mark_failed(conn: sa.Connection, message_id: str, code: int | None, reason: str) -> None:
    """Sending failed for good (refused by the provider, or retries exhausted)."""
    m = messages_t.c
    moved = conn.execute(
        messages_t.update()
        .where(m.id == message_id, m.status == PENDING)
        .values(status=FAILED, error_code=code, reason=f"not sent: {reason}"[:200])
        .returning(m.user_id)
    ).first()
    if moved is not None:
        events.insert(conn, [events.message_status(moved.user_id, message_id, FAILED)])


def apply_status(
    conn: sa.Connection, sid: str, status: str, error_code: int | None
) -> tuple[str, str, str] | None:
    """Move the message with provider id ``sid`` forward to ``status``. Returns
    (user id, recipient, applied status) when it moved, None when the status is
    unknown, older than or equal to the stored one, or the sid is not ours."""
    rank = _RANK.get(status)
    if rank is None:
        return None
    m = messages_t.c
    row = conn.execute(
        sa.select(m.id, m.user_id, m.recipient, m.status).where(
            m.bridge == "twilio", m.external_id == sid, m.direction == "outbound"
        )
    ).first()
    if row is None or _RANK.get(row.status or PENDING, 0) >= rank:
        return None
    values: dict[str, object] = {"status": status}
    if error_code is not None:
        values["error_code"] = error_code
    moved = conn.execute(
        messages_t.update().where(m.id == row.id, m.status == row.status).values(**values)
    ).rowcount
    if not moved:
        return None
    events.insert(conn, [events.message_status(row.user_id, row.id, status)])
    return (row.user_id, row.recipient, status)


def record_opt_out(conn: sa.Connection, user_id: str, address: str) -> None:
    """The provider says the recipient unsubscribed (Twilio error 21610)."""
    exists = is_opted_out(conn, user_id, address)
    if not exists:
        conn.execute(
            sms_opt_outs_t.insert().values(
                user_id=user_id, address=address, created_at=datetime.now(UTC)
            )
        )
