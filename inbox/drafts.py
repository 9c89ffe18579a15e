"""Drafts: outbound messages being written, stored as rows of ``messages``.

A draft is a message in the ``drafts`` folder, direction ``outbound``, status
``draft``, with external id ``draft:<id>``. Its recipients are kept canonical in the
``recipient`` column as a comma-separated list (an SMS draft has at most one, an
email draft up to :data:`MAX_EMAIL_RECIPIENTS`, all together within the column's
254 characters); a draft may have none while it is written. Its attachments are
ordinary attachment rows whose blobs are in the blob store.

Sending moves the same row to ``sent`` with status ``pending`` (see
:func:`move_to_sent`); from then on it is a message like any other, and no
draft operation finds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from inbox import store
from inbox.addresses import parse_email, parse_in_regions, parse_phone
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import AddressError, InboxError, NotFound
from inbox.ids import new_id
from inbox.message import AttachmentStatus, Channel, Folder
from inbox.models import attachments_t, messages_t

DRAFT = "draft"
PENDING = "pending"
REASON_DRAFT = "draft"
REASON_SENT = "sent by you"
CHANNELS = (Channel.SMS.value, Channel.EMAIL.value)
BRIDGE = {Channel.SMS.value: "twilio", Channel.EMAIL.value: "email"}

MAX_DRAFTS = 500
MAX_EMAIL_RECIPIENTS = 10
MAX_RECIPIENT_CHARS = 254  # the recipient column
MAX_SUBJECT = 998  # RFC 5322's line length
MAX_SMS_TEXT = 1600  # Twilio's limit for one (multi-segment) message body
MAX_EMAIL_TEXT = 100_000
MAX_ATTACHMENTS = 10


class DraftError(InboxError, ValueError):
    """Raised when a draft's content is refused: too many recipients, too long,
    a line break in a subject, a field the channel does not have. The message
    says which and why."""


class AttachmentRefused(DraftError):
    """Raised when an attachment would put the draft over its count or size limit,
    or its type is not allowed. ``too_large`` tells a size refusal (HTTP 413)."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


class DraftLimit(DraftError):
    """Raised when the user already has :data:`MAX_DRAFTS` drafts."""


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """What one draft may carry: media types (``type/*`` patterns allowed), their
    count and their total size."""

    types: tuple[str, ...]
    max_bytes: int
    max_count: int = MAX_ATTACHMENTS

    def type_allowed(self, media_type: str) -> bool:
        major = media_type.partition("/")[0]
        return any(p in (media_type, f"{major}/*") for p in self.types)


@dataclass(frozen=True, slots=True)
class DraftToSend:
    """A draft as it is being sent: what the sending path needs to validate it."""

    id: str
    user_id: str
    channel: str
    to: tuple[str, ...]
    subject: str | None
    text: str
    attachments: int
    attachment_bytes: int


def _now() -> datetime:
    return datetime.now(UTC)


# --- recipients, subject and text ----------------------------------------------------


def parse_recipients(channel: str, raw: Sequence[str], regions: Iterable[str]) -> tuple[str, ...]:
    """Canonical recipients for a draft of ``channel``: phone numbers read with each
    of ``regions`` in turn (SMS, at most one), or email addresses (ASCII, at most
    :data:`MAX_EMAIL_RECIPIENTS`). Duplicates are dropped; DraftError names the bad one."""
    limit = 1 if channel == Channel.SMS.value else MAX_EMAIL_RECIPIENTS
    if len(raw) > limit:
        raise DraftError(
            "an SMS draft has one recipient"
            if limit == 1
            else f"an email draft has at most {limit} recipients"
        )
    regions = tuple(regions)
    out: list[str] = []
    for i, text in enumerate(raw):
        try:
            if channel == Channel.SMS.value:
                address: str = parse_in_regions(parse_phone, text, regions)
            else:
                address = parse_email(text)
                if not address.isascii():
                    raise AddressError(text, "only ASCII email addresses can be sent to")
        except AddressError as exc:
            raise DraftError(f"to[{i}]: {exc.reason}") from None
        if address not in out:
            out.append(address)
    if len(",".join(out)) > MAX_RECIPIENT_CHARS:
        raise DraftError(f"the recipients are over {MAX_RECIPIENT_CHARS} characters together")
    return tuple(out)


def check_subject(channel: str, subject: str | None) -> str | None:
    if subject is None:
        return None
    if channel != Channel.EMAIL.value:
        raise DraftError("only an email draft has a subject")
    if len(subject) > MAX_SUBJECT:
        raise DraftError(f"the subject is over {MAX_SUBJECT} characters")
    if any(c in subject for c in "\r\n\x00"):
        raise DraftError("the subject must be one line (no CR, LF or NUL)")
    return subject


def check_text(channel: str, text: str) -> str:
    limit = MAX_SMS_TEXT if channel == Channel.SMS.value else MAX_EMAIL_TEXT
    if len(text) > limit:
        raise DraftError(f"the text is over {limit:,} characters")
    if "\x00" in text:
        raise DraftError("the text must not contain NUL characters")
    return text


def _split(recipient: str) -> list[str]:
    return [r for r in recipient.split(",") if r]


# --- reading -------------------------------------------------------------------------

_COLUMNS = (
    messages_t.c.id,
    messages_t.c.channel,
    messages_t.c.recipient,
    messages_t.c.subject,
    messages_t.c.text,
    messages_t.c.received_at,
)


def _is_draft(user_id: str, draft_id: str) -> sa.ColumnElement[bool]:
    m = messages_t.c
    return sa.and_(m.id == draft_id, m.user_id == user_id, m.folder == Folder.DRAFTS.value)


def _attachments(conn: sa.Connection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    a = attachments_t.c
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = conn.execute(
        sa.select(a.id, a.message_id, a.filename, a.content_type, a.size)
        .where(a.message_id.in_(ids))
        .order_by(a.id)
    )
    for r in rows:
        out[r.message_id].append(
            {"id": r.id, "filename": r.filename, "content_type": r.content_type, "size": r.size}
        )
    return out


def _json(row: Any, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "to": _split(row.recipient),
        "subject": row.subject,
        "text": row.text,
        "updated_at": row.received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "attachments": attachments,
    }


def _read(conn: sa.Connection, user_id: str, draft_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(*_COLUMNS).where(_is_draft(user_id, draft_id))).first()
    if row is None:
        raise NotFound("no such draft")
    return _json(row, _attachments(conn, [row.id])[row.id])


def get_draft(db: Database, user_id: str, draft_id: str) -> dict[str, Any]:
    with db.read.connect() as conn:
        return _read(conn, user_id, draft_id)


def list_drafts(
    db: Database, user_id: str, *, limit: int = 50, cursor: str | None = None
) -> store.Page:
    """The user's drafts, the most recently created first."""
    limit = max(1, min(limit, store.MAX_PAGE))
    m = messages_t.c
    # One range of ix_messages_user_folder_id.
    stmt = (
        sa.select(*_COLUMNS)
        .where(m.user_id == user_id, m.folder == Folder.DRAFTS.value)
        .order_by(m.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.where(m.id < store.decode_cursor(cursor, "drafts"))
    with db.read.connect() as conn:
        rows = list(conn.execute(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        atts = _attachments(conn, [r.id for r in rows])
    return store.Page(
        [_json(r, atts[r.id]) for r in rows],
        store.encode_cursor("drafts", rows[-1].id) if more else None,
    )


# --- writing -------------------------------------------------------------------------


def create_draft(
    db: Database,
    user_id: str,
    channel: str,
    *,
    to: Sequence[str] = (),
    subject: str | None = None,
    text: str = "",
) -> dict[str, Any]:
    """A new draft. ``to`` must already be canonical (:func:`parse_recipients`)."""
    if channel not in CHANNELS:
        raise DraftError("channel must be sms or email")
    subject = check_subject(channel, subject)
    text = check_text(channel, text)
    draft_id = new_id("msg")
    m = messages_t.c
    with db.write.begin() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(messages_t)
            .where(m.user_id == user_id, m.folder == Folder.DRAFTS.value)
        ).scalar_one()
        if count >= MAX_DRAFTS:
            raise DraftLimit(f"you have {MAX_DRAFTS} drafts already; send or delete some first")
        conn.execute(
            messages_t.insert().values(
                id=draft_id,
                user_id=user_id,
                bridge=BRIDGE[channel],
                external_id=f"draft:{draft_id}",
                direction="outbound",
                channel=channel,
                folder=Folder.DRAFTS.value,
                sender="",
                recipient=",".join(to),
                subject=subject,
                text=text,
                html=None,
                received_at=_now(),
                read=True,
                reason=REASON_DRAFT,
                status=DRAFT,
                # A draft is in no conversation until it is sent.
                conversation=None,
            )
        )
        return _read(conn, user_id, draft_id)


_UNSET: Any = object()


def update_draft(
    db: Database,
    user_id: str,
    draft_id: str,
    *,
    to: Sequence[str] | None = None,
    subject: str | None = _UNSET,
    text: str | None = None,
) -> dict[str, Any]:
    """Change the fields given (``subject=None`` clears it); ``to`` canonical."""
    with db.write.begin() as conn:
        row = conn.execute(
            sa.select(messages_t.c.channel).where(_is_draft(user_id, draft_id))
        ).first()
        if row is None:
            raise NotFound("no such draft")
        values: dict[str, Any] = {"received_at": _now()}
        if to is not None:
            values["recipient"] = ",".join(to)
        if subject is not _UNSET:
            values["subject"] = check_subject(row.channel, subject)
        if text is not None:
            values["text"] = check_text(row.channel, text)
        conn.execute(messages_t.update().where(_is_draft(user_id, draft_id)).values(**values))
        return _read(conn, user_id, draft_id)


def channel_of(db: Database, user_id: str, draft_id: str) -> str:
    """The draft's channel (to parse recipients for it); NotFound if not a draft."""
    with db.read.connect() as conn:
        channel = conn.execute(
            sa.select(messages_t.c.channel).where(_is_draft(user_id, draft_id))
        ).scalar()
    if channel is None:
        raise NotFound("no such draft")
    return str(channel)


def delete_draft(db: Database, blobs: BlobStore, user_id: str, draft_id: str) -> None:
    """Delete the draft, its attachment rows, and the blobs nothing references any more."""
    a = attachments_t.c
    with db.write.begin() as conn:
        if (
            conn.execute(sa.select(messages_t.c.id).where(_is_draft(user_id, draft_id))).first()
            is None
        ):
            raise NotFound("no such draft")
        digests = set(
            conn.execute(
                sa.select(a.sha256).where(a.message_id == draft_id, a.sha256.is_not(None))
            ).scalars()
        )
        conn.execute(attachments_t.delete().where(a.message_id == draft_id, a.user_id == user_id))
        conn.execute(messages_t.delete().where(_is_draft(user_id, draft_id)))
    store.delete_unreferenced_blobs(db, blobs, digests)


def _usage(conn: sa.Connection, draft_id: str) -> tuple[int, int]:
    a = attachments_t.c
    count, total = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(a.size), 0)).where(
            a.message_id == draft_id
        )
    ).one()
    return int(count), int(total)


def _lock_draft(conn: sa.Connection, user_id: str, draft_id: str) -> str:
    """The draft's channel, its row locked (PostgreSQL) against concurrent changes."""
    stmt = sa.select(messages_t.c.channel).where(_is_draft(user_id, draft_id))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    channel = conn.execute(stmt).scalar()
    if channel is None:
        raise NotFound("no such draft")
    return str(channel)


def add_attachment(
    db: Database,
    blobs: BlobStore,
    user_id: str,
    draft_id: str,
    *,
    content_type: str,
    filename: str | None,
    data: bytes,
    limits_for: Callable[[str], AttachmentLimits],
) -> dict[str, Any]:
    """Attach ``data`` to the draft; ``limits_for(channel)`` gives the draft's limits.
    Raises NotFound, AttachmentRefused. Returns the draft."""
    if not data:
        raise AttachmentRefused("the attachment is empty")
    limits = limits_for(channel_of(db, user_id, draft_id))
    if not limits.type_allowed(content_type):
        raise AttachmentRefused(f"{content_type} is not a type that can be attached")
    # Checked before the blob is written (the common refusal costs no disk), and
    # again under the lock (two uploads at once).
    with db.read.connect() as conn:
        _check_room(limits, *_usage(conn, draft_id), len(data))
    digest = blobs.put(data)
    try:
        with db.write.begin() as conn:
            _lock_draft(conn, user_id, draft_id)
            _check_room(limits, *_usage(conn, draft_id), len(data))
            conn.execute(
                attachments_t.insert().values(
                    id=new_id("att"),
                    message_id=draft_id,
                    user_id=user_id,
                    filename=filename,
                    content_type=content_type,
                    size=len(data),
                    status=AttachmentStatus.STORED.value,
                    sha256=digest,
                    created_at=_now(),
                )
            )
            conn.execute(
                messages_t.update().where(_is_draft(user_id, draft_id)).values(received_at=_now())
            )
            return _read(conn, user_id, draft_id)
    except (NotFound, AttachmentRefused):
        store.delete_unreferenced_blobs(db, blobs, {digest})
        raise


def _check_room(limits: AttachmentLimits, count: int, total: int, size: int) -> None:
    if count >= limits.max_count:
        raise AttachmentRefused(f"a draft has at most {limits.max_count} attachments")
    if total + size > limits.max_bytes:
        raise AttachmentRefused(
            f"the attachments would be {total + size:,} bytes; at most "
            f"{limits.max_bytes:,} per message",
            too_large=True,
        )


def remove_attachment(
    db: Database, blobs: BlobStore, user_id: str, draft_id: str, attachment_id: str
) -> None:
    a = attachments_t.c
    with db.write.begin() as conn:
        _lock_draft(conn, user_id, draft_id)
        digest = conn.execute(
            sa.select(a.sha256).where(a.id == attachment_id, a.message_id == draft_id)
        ).first()
        if digest is None:
            raise NotFound("no such attachment")
        conn.execute(attachments_t.delete().where(a.id == attachment_id))
    if digest.sha256 is not None:
        store.delete_unreferenced_blobs(db, blobs, {digest.sha256})


# --- sending -------------------------------------------------------------------------


def draft_to_send(conn: sa.Connection, user_id: str, draft_id: str) -> DraftToSend:
    """The draft, locked for the sending transaction; NotFound if it is not one."""
    stmt = sa.select(*_COLUMNS).where(_is_draft(user_id, draft_id))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFound("no such draft")
    count, total = _usage(conn, draft_id)
    return DraftToSend(
        row.id, user_id, row.channel, tuple(_split(row.recipient)), row.subject, row.text,
        count, total,
    )  # fmt: skip


def move_to_sent(
    conn: sa.Connection,
    draft: DraftToSend,
    *,
    sender: str,
    channel: str,
    conversation: str,
) -> None:
    """The draft becomes a pending outbound message (within the caller's transaction,
    after its checks): folder ``sent``, status ``pending``, external id
    ``pending:<id>`` until the provider's replaces it."""
    conn.execute(
        messages_t.update()
        .where(_is_draft(draft.user_id, draft.id))
        .values(
            folder=Folder.SENT.value,
            status=PENDING,
            external_id=f"pending:{draft.id}",
            sender=sender,
            channel=channel,
            received_at=_now(),
            reason=REASON_SENT,
            conversation=conversation,
        )
    )
