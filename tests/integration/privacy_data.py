"""A user with data in every table, for the export and account-deletion tests."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from inbox import export, raw_store
from inbox.addresses import E164, EmailAddress
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.ids import new_id
from inbox.message import Channel, Folder, Inbound, InboundAttachment
from inbox.models import (
    abuse_flags_t,
    auth_log_t,
    events_t,
    messages_t,
    screener_decisions_t,
    sms_opt_outs_t,
    verifications_t,
)
from optin import address_book, trust
from optin.contacts import parse_contacts
from tests.integration.helpers import run_batch

FRIEND = "+14155550100"
PHOTO = b"\x89PNG\r\n\x1a\n" + b"a photo of a cat" * 64
SHARED = b"%PDF-1.7 the same file sent to two users" * 8
EMAIL = (
    b"From: Friend <friend@example.com>\r\n"
    b"To: ada@optmsg.test\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Ada\r\n"
)
AUTH_RESULTS = "mx.test.example; spf=pass smtp.mailfrom=example.com"
VCARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Grace Hopper\\, RADM\r\nTEL;TYPE=CELL:+1 415 555 0111\r\n"
    "EMAIL:grace@example.com\r\nEND:VCARD\r\n"
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ren\u00e9e; \u201cThe Line\\nBreaker\u201d\r\n"
    "TEL:+44 20 7946 0958\r\nEND:VCARD\r\n"
).encode()


@dataclass
class Seeded:
    user_id: str
    phone: str
    sms_number: str
    email_address: str = ""
    message_ids: list[str] = field(default_factory=list)
    photo_message: str = ""
    email_message: str = ""
    draft_message: str = ""
    raw_id: str = ""
    export_id: str = ""


def inbound(
    to: str,
    text: str,
    *,
    channel: Channel = Channel.SMS,
    attachments: tuple[InboundAttachment, ...] = (),
    raw_id: str | None = None,
    sender: str = FRIEND,
) -> Inbound:
    return Inbound(
        bridge="twilio" if channel is not Channel.EMAIL else "smtp",
        external_id="MM" + secrets.token_hex(16),
        channel=channel,
        sender=E164(sender) if channel is not Channel.EMAIL else EmailAddress(sender),
        recipient=E164(to) if channel is not Channel.EMAIL else EmailAddress(to),
        text=text,
        received_at=datetime.now(UTC),
        attachments=attachments,
        raw_id=raw_id,
    )


def receive(db: Database, blobs: BlobStore, message: Inbound) -> str:
    for attachment in message.attachments:
        if attachment.content is not None:
            blobs.put(attachment.content)
    (result,) = run_batch(db, [message])
    assert result.message_id is not None, result
    return result.message_id


def seed_everything(
    db: Database,
    blobs: BlobStore,
    user_id: str,
    *,
    phone: str,
    sms_number: str,
    email_address: str,
    ip: str = "203.0.113.7",
) -> Seeded:
    """Messages (SMS, MMS with a photo and a file another user may share, an email
    with its raw bytes, a draft), contacts, trust entries, a screener decision, an
    opt-out, a verification, an auth log entry, an event and a ready export."""
    seeded = Seeded(user_id, phone, sms_number, email_address)
    now = datetime.now(UTC)
    trust.add(db, user_id, E164(FRIEND))
    trust.add(db, user_id, EmailAddress("friend@example.com"))
    seeded.message_ids.append(receive(db, blobs, inbound(sms_number, "plain hello")))
    seeded.photo_message = receive(
        db,
        blobs,
        inbound(
            sms_number,
            "look",
            channel=Channel.MMS,
            attachments=(
                InboundAttachment("image/png", "../../cat.png", content=PHOTO),
                InboundAttachment("application/pdf", None, content=SHARED),
            ),
        ),
    )
    seeded.message_ids.append(seeded.photo_message)
    raw = raw_store.new_raw(
        peer_ip="198.51.100.1",
        helo="mail.example.com",
        mail_from="friend@example.com",
        recipients=[email_address],
        data=EMAIL,
    )
    with db.write.begin() as conn:
        raw_store.insert_raw_batch(conn, [raw])
    seeded.raw_id = raw.id
    seeded.email_message = receive(
        db,
        blobs,
        inbound(
            email_address,
            "Hello Ada",
            channel=Channel.EMAIL,
            raw_id=raw.id,
            sender="friend@example.com",
        ),
    )
    # Done once its message is stored, as the email path does (a running app's
    # retention deletes done raw emails that no message refers to).
    with db.write.begin() as conn:
        raw_store.mark_done_batch(conn, [raw_store.Processed(raw.id, auth_results=AUTH_RESULTS)])
    seeded.message_ids.append(seeded.email_message)
    seeded.draft_message = new_id("msg")
    with db.write.begin() as conn:
        conn.execute(
            messages_t.insert().values(
                id=seeded.draft_message,
                user_id=user_id,
                bridge="twilio",
                external_id=f"draft:{seeded.draft_message}",
                direction="outbound",
                channel="sms",
                folder=str(Folder.DRAFTS),
                sender=sms_number,
                recipient=FRIEND,
                text="half a thought",
                received_at=now,
                reason="draft",
            )
        )
        conn.execute(
            screener_decisions_t.insert().values(
                id=new_id("scr"),
                user_id=user_id,
                action="allow",
                payload=json.dumps({"senders": [FRIEND]}),
                created_at=now,
            )
        )
        conn.execute(
            sms_opt_outs_t.insert().values(user_id=user_id, address=FRIEND, created_at=now)
        )
        conn.execute(
            verifications_t.insert().values(
                id=new_id("ver"),
                purpose="login",
                phone=phone,
                user_id=user_id,
                code_hash="x" * 64,
                created_at=now,
                expires_at=now + timedelta(minutes=10),
            )
        )
        # A sign-up code carries the number, not the user id.
        conn.execute(
            verifications_t.insert().values(
                id=new_id("ver"),
                purpose="signup",
                phone=phone,
                user_id=None,
                code_hash="y" * 64,
                details=json.dumps({"first_name": "Ada"}),
                created_at=now - timedelta(days=30),
                expires_at=now - timedelta(days=30),
                consumed_at=now - timedelta(days=30),
            )
        )
        conn.execute(
            auth_log_t.insert().values(
                id=new_id("aut"),
                user_id=user_id,
                created_at=now,
                method="sms_code",
                outcome="success",
                device="Ada's phone",
                ip=ip,
            )
        )
        conn.execute(
            abuse_flags_t.insert().values(
                id=new_id("abf"),
                ip=ip,
                reason="failed_codes",
                count=1,
                first_seen=now,
                last_seen=now,
            )
        )
        conn.execute(
            events_t.insert().values(
                user_id=user_id,
                kind="message",
                data=json.dumps({"id": seeded.photo_message}),
                created_at=now,
            )
        )
    seeded.message_ids.append(seeded.draft_message)
    report = parse_contacts(VCARD, region="US", filename="contacts.vcf")
    address_book.import_contacts(db, user_id, report, max_contacts=100)
    return seeded


def build_export(db: Database, blobs: BlobStore, blob_dir: Path, user_id: str) -> str:
    """A ready export of the user (its archive in the exports directory)."""
    record = export.request_export(db, user_id)
    built = export.build(db, blobs, export.exports_dir(blob_dir), record.id, ttl=timedelta(hours=1))
    assert built is not None and built.state == export.READY, built
    return record.id
