"""Quarantine review: release (trust the sender, move their held mail to the inbox)
and deny (block the sender, delete their held mail), each in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.message import Folder
from inbox.models import attachments_t, messages_t
from inbox.store import delete_unreferenced_blobs
from optin import screener
from optin.decide import TrustVerdict
from optin.errors import NotQuarantined
from optin.trust import Source, lock_user, set_entry


@dataclass(frozen=True, slots=True)
class ReviewResult:
    sender: str
    verdict: TrustVerdict
    messages: int


def _held_sender(conn: sa.Connection, user_id: str, message_id: str) -> str:
    row = conn.execute(
        sa.select(messages_t.c.sender, messages_t.c.folder).where(
            messages_t.c.id == message_id, messages_t.c.user_id == user_id
        )
    ).first()
    if row is None or row.folder == Folder.DISCARDED:
        raise NotFound("no such message")
    if row.folder != Folder.QUARANTINE:
        raise NotQuarantined(f"message {message_id} is not in quarantine")
    return str(row.sender)


def release(db: Database, user_id: str, message_id: str) -> ReviewResult:
    """Trust the message's sender and move every held message of theirs to the inbox:
    the screener's Allow for that sender (so it can be undone the same way)."""
    with db.read.connect() as conn:
        sender = _held_sender(conn, user_id, message_id)
    decision = screener.allow(db, user_id, [sender])
    return ReviewResult(sender, TrustVerdict.TRUSTED, decision.messages)


def deny(db: Database, blobs: BlobStore, user_id: str, message_id: str) -> ReviewResult:
    """Block the message's sender and delete every held message of theirs (with
    attachments and their blobs)."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        sender = _held_sender(conn, user_id, message_id)
        set_entry(conn, user_id, sender, TrustVerdict.BLOCKED, Source.MANUAL)
        held = sa.select(messages_t.c.id).where(
            messages_t.c.user_id == user_id,
            messages_t.c.sender == sender,
            messages_t.c.folder == str(Folder.QUARANTINE),
        )
        digests = set(
            conn.execute(
                sa.select(attachments_t.c.sha256).where(
                    attachments_t.c.message_id.in_(held), attachments_t.c.sha256.is_not(None)
                )
            ).scalars()
        )
        # Attachment rows go with their messages (ON DELETE CASCADE).
        deleted = conn.execute(
            messages_t.delete().where(messages_t.c.id.in_(held.scalar_subquery()))
        ).rowcount
    delete_unreferenced_blobs(db, blobs, digests)
    return ReviewResult(sender, TrustVerdict.BLOCKED, deleted)
