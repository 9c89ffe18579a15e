"""Conversations: a user's messages grouped by who or what they are with.

An SMS/MMS conversation is keyed by the counterpart's address (E.164, or a
``short:``/``alpha:`` sender id), the same key both ways. An email conversation is
keyed by the root of its thread: the first Message-ID in References, else
In-Reply-To, else the message's own Message-ID, stored as ``email:`` + the SHA-256
of that id (lower-cased, without angle brackets or whitespace), so that a hostile
header can neither overflow the column nor be told apart by case.

Only messages in the inbox and the sent folder take part: held mail is the
screener's business, drafts belong to no conversation until they are sent.

Cost (see docs in README): a conversation's messages are one range of the index
(user_id, conversation, id), read newest first, ``limit + 1`` rows per page. The list
of conversations groups the user's conversation rows, so each page costs a pass over
the user's messages that belong to a conversation (an index range plus a row lookup
each for the folder and read flag); the page's latest messages are then read by
primary key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from inbox.db import Database
from inbox.message import Channel, Folder
from inbox.models import messages_t
from inbox.store import (
    MAX_PAGE,
    MESSAGE_COLUMNS,
    Page,
    attachments_for,
    decode_cursor,
    encode_cursor,
    message_json,
)

EMAIL_PREFIX = "email:"
#: The longest key: the column's size (an E.164 number or sender id is far shorter).
MAX_KEY = 254
PREVIEW_CHARS = 140
#: The folders whose messages make up conversations.
CONVERSATION_FOLDERS = (Folder.INBOX.value, Folder.SENT.value)
_LIST_KIND = "conversations"


def canonical_message_id(value: str) -> str:
    """A Message-ID as compared for threading: no angle brackets, no whitespace, lower
    case (the local part is case-sensitive by the RFC, but clients change its case
    in replies often enough that matching without it loses threads)."""
    return "".join(value.split()).strip("<>").lower()


def email_key(message_id: str) -> str:
    """The stored key of the thread whose root is ``message_id``."""
    digest = hashlib.sha256(canonical_message_id(message_id).encode("utf-8", "replace"))
    return EMAIL_PREFIX + digest.hexdigest()


def email_thread_key(
    message_id: str | None,
    in_reply_to: str | None,
    references: Iterable[str],
    *,
    fallback: str,
) -> str:
    """The thread key of an email: its References root, else In-Reply-To, else its
    own Message-ID; ``fallback`` (something unique to the message) when it has none,
    so that it is a conversation of its own."""
    for candidate in (*references, in_reply_to, message_id):
        if candidate is not None and canonical_message_id(candidate):
            return email_key(candidate)
    return email_key(fallback)


def sms_key(counterpart: str) -> str:
    """The key of the SMS/MMS conversation with ``counterpart`` (already canonical)."""
    return counterpart


def kind_of(key: str) -> str:
    return Channel.EMAIL.value if key.startswith(EMAIL_PREFIX) else Channel.SMS.value


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _iso(value: Any) -> str:
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def list_conversations(
    db: Database, user_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """The user's conversations, the one with the newest message first. Each has its
    key, kind, counterpart (the other party of its latest message), subject (email),
    message and unread counts, and a preview of its latest message."""
    limit = max(1, min(limit, MAX_PAGE))
    m = messages_t.c
    last_id = sa.func.max(m.id).label("last_id")
    stmt = (
        sa.select(
            m.conversation,
            last_id,
            sa.func.count().label("messages"),
            sa.func.sum(sa.case((m.read == sa.false(), 1), else_=0)).label("unread"),
        )
        .where(
            m.user_id == user_id,
            m.conversation.is_not(None),
            m.folder.in_(CONVERSATION_FOLDERS),
        )
        .group_by(m.conversation)
        .order_by(last_id.desc())
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.having(sa.func.max(m.id) < decode_cursor(cursor, _LIST_KIND))
    with db.read.connect() as conn:
        groups = list(conn.execute(stmt))
        more = len(groups) > limit
        groups = groups[:limit]
        latest = {
            row.id: row
            for row in conn.execute(
                sa.select(
                    m.id, m.direction, m.channel, m.sender, m.recipient, m.subject, m.text,
                    m.received_at,
                ).where(m.id.in_([g.last_id for g in groups]), m.user_id == user_id)
            )
        }  # fmt: skip
    items = []
    for group in groups:
        last = latest[group.last_id]
        outbound = last.direction == "outbound"
        items.append(
            {
                "key": group.conversation,
                "kind": kind_of(group.conversation),
                "counterpart": last.recipient if outbound else last.sender,
                "subject": last.subject if last.channel == Channel.EMAIL.value else None,
                "messages": int(group.messages),
                "unread": int(group.unread or 0),
                "latest": {
                    "id": last.id,
                    "direction": last.direction,
                    "preview": _preview(last.text),
                    "at": _iso(last.received_at),
                },
            }
        )
    return Page(items, encode_cursor(_LIST_KIND, groups[-1].last_id) if more else None)


def messages_statement(user_id: str, key: str, limit: int, before: str | None) -> sa.Select[Any]:
    """Newest first, one range of ix_messages_user_conversation_id."""
    m = messages_t.c
    stmt = (
        sa.select(*MESSAGE_COLUMNS)
        .where(
            m.user_id == user_id,
            m.conversation == key,
            m.folder.in_(CONVERSATION_FOLDERS),
        )
        .order_by(m.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(m.id < before)
    return stmt


def list_conversation_messages(
    db: Database, user_id: str, key: str, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """The messages of one of the user's conversations, newest first. A key that is
    not one of the user's conversations (unknown, or another user's) is an empty
    list, exactly alike."""
    limit = max(1, min(limit, MAX_PAGE))
    # The cursor names the conversation it pages, so it cannot page another one.
    kind = f"{_LIST_KIND}/{key}"
    before = decode_cursor(cursor, kind) if cursor else None
    if len(key) > MAX_KEY:
        return Page([], None)
    with db.read.connect() as conn:
        rows = list(conn.execute(messages_statement(user_id, key, limit + 1, before)))
        more = len(rows) > limit
        rows = rows[:limit]
        atts = attachments_for(conn, [r.id for r in rows])
    items = [message_json(r, atts[r.id]) for r in rows]
    return Page(items, encode_cursor(kind, rows[-1].id) if more else None)
