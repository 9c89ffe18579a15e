"""Account, token and message operations used by the CLI and the client API.

Every read or change of a user's data takes the ``user_id`` it is scoped to;
another user's object is reported as :class:`NotFound`, exactly like a missing one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from inbox import raw_store
from inbox.addresses import E164, EmailAddress, region_of
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import Conflict, InboxError, NotFound
from inbox.ids import new_id
from inbox.message import AttachmentStatus, Folder
from inbox.models import (
    api_tokens_t,
    attachments_t,
    messages_t,
    raw_messages_t,
    user_addresses_t,
    users_t,
)

TOKEN_PREFIX = "optmsg_"  # noqa: S105 - a public prefix, not a secret
MAX_PAGE = 200
#: The folders a user sees (``discarded`` holds blocked mail until the undo window ends).
VISIBLE_FOLDERS = (Folder.INBOX, Folder.QUARANTINE, Folder.SENT)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    first_name: str
    last_name: str
    date_of_birth: date
    phone: str
    region: str
    created_at: datetime
    addresses: tuple[str, ...] = ()
    suspended_at: datetime | None = None
    referral_code: str | None = None

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "date_of_birth": self.date_of_birth.isoformat(),
            "phone": self.phone,
            "region": self.region,
            "addresses": list(self.addresses),
            "created_at": self.created_at.isoformat(),
            "suspended": self.suspended,
            "referral_code": self.referral_code,
        }


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None


class InvalidCursor(InboxError, ValueError):
    """Raised when a pagination cursor was not produced by this server for this query."""


class AttachmentUnavailable(InboxError):
    """The attachment exists but has no content to download: its media is still being
    fetched (``pending``) or could not be (``failed``)."""

    def __init__(self, status: str) -> None:
        self.status = status
        if status == AttachmentStatus.PENDING:
            detail = "the attachment is still being fetched (status pending); try again later"
        else:
            detail = f"the attachment could not be fetched (status {status}); it has no content"
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """A stored attachment's bytes (None when the client has them, see
    :func:`read_attachment`) and the metadata it was stored with (unsanitised)."""

    filename: str | None
    content_type: str
    sha256: str
    data: bytes | None


def _now() -> datetime:
    return datetime.now(UTC)


# --- users -----------------------------------------------------------------------------


def create_user(
    db: Database,
    *,
    first_name: str,
    last_name: str,
    date_of_birth: date,
    phone: E164,
    sms_number: E164 | None = None,
    email_address: EmailAddress | None = None,
) -> UserRecord:
    """Create an account. ``sms_number``/``email_address`` are the OptMsg addresses
    that route inbound traffic to it; each routes to at most one user."""
    for label, value, limit in (("first name", first_name, 100), ("last name", last_name, 100)):
        if not value.strip():
            raise InboxError(f"{label} must not be empty")
        if len(value) > limit or any(ord(c) < 32 for c in value):
            raise InboxError(f"{label} is too long or has control characters")
    if date_of_birth > date.today():
        raise InboxError("date of birth is in the future")
    user_id = new_id("usr")
    now = _now()
    addresses = [(a, k) for a, k in ((sms_number, "sms"), (email_address, "email")) if a]
    try:
        with db.write.begin() as conn:
            if conn.execute(sa.select(users_t.c.id).where(users_t.c.phone == phone)).first():
                raise Conflict(f"a user with phone {phone} already exists")
            for address, _ in addresses:
                if conn.execute(
                    sa.select(user_addresses_t.c.user_id).where(
                        user_addresses_t.c.address == address
                    )
                ).first():
                    raise Conflict(f"{address} already routes to another user")
            conn.execute(
                users_t.insert().values(
                    id=user_id,
                    first_name=first_name.strip(),
                    last_name=last_name.strip(),
                    date_of_birth=date_of_birth,
                    phone=phone,
                    region=region_of(phone),
                    created_at=now,
                )
            )
            for address, kind in addresses:
                conn.execute(
                    user_addresses_t.insert().values(
                        address=address, user_id=user_id, kind=kind, created_at=now
                    )
                )
    except sa.exc.IntegrityError:
        raise Conflict("that phone number or address is already in use") from None
    return get_user(db, user_id)


def _user_from_row(row: Any, addresses: Sequence[str]) -> UserRecord:
    return UserRecord(
        id=row.id,
        first_name=row.first_name,
        last_name=row.last_name,
        date_of_birth=row.date_of_birth,
        phone=row.phone,
        region=row.region,
        created_at=row.created_at,
        addresses=tuple(addresses),
        suspended_at=row.suspended_at,
        referral_code=row.referral_code,
    )


def get_user(db: Database, user_id: str) -> UserRecord:
    with db.read.connect() as conn:
        row = conn.execute(sa.select(users_t).where(users_t.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id}")
        addrs = conn.execute(
            sa.select(user_addresses_t.c.address)
            .where(user_addresses_t.c.user_id == user_id)
            .order_by(user_addresses_t.c.address)
        ).scalars()
        return _user_from_row(row, list(addrs))


def list_users(db: Database) -> list[UserRecord]:
    with db.read.connect() as conn:
        addr_rows = conn.execute(
            sa.select(user_addresses_t.c.user_id, user_addresses_t.c.address).order_by(
                user_addresses_t.c.address
            )
        )
        by_user: dict[str, list[str]] = {}
        for r in addr_rows:
            by_user.setdefault(r.user_id, []).append(r.address)
        rows = conn.execute(sa.select(users_t).order_by(users_t.c.id))
        return [_user_from_row(r, by_user.get(r.id, [])) for r in rows]


def delete_user(db: Database, blobs: BlobStore, user_id: str) -> None:
    """Delete the account and everything of it: rows in every table (by cascade) and
    blobs no other user's attachment still references."""
    with db.write.begin() as conn:
        if conn.execute(sa.select(users_t.c.id).where(users_t.c.id == user_id)).first() is None:
            raise NotFound(f"no user {user_id}")
        digests = set(
            conn.execute(
                sa.select(attachments_t.c.sha256).where(
                    attachments_t.c.user_id == user_id, attachments_t.c.sha256.is_not(None)
                )
            ).scalars()
        )
        conn.execute(users_t.delete().where(users_t.c.id == user_id))
        # The raw emails of their (now deleted) messages go too, unless another
        # user's message still refers to one.
        raw_store.delete_unreferenced(conn)
    delete_unreferenced_blobs(db, blobs, digests)


def delete_unreferenced_blobs(db: Database, blobs: BlobStore, digests: set[str]) -> None:
    """Delete the blobs among ``digests`` that no attachment row references any more
    (content-addressed: another message, or another user, may share one)."""
    if not digests:
        return
    with db.read.connect() as conn:
        still_used = set(
            conn.execute(
                sa.select(attachments_t.c.sha256).where(attachments_t.c.sha256.in_(sorted(digests)))
            ).scalars()
        )
    for digest in digests - still_used:
        blobs.delete(digest)


# --- tokens ----------------------------------------------------------------------------


def hash_token(token: str) -> str:
    # Tokens are 256-bit random values, so a fast hash is enough at rest: there is
    # nothing to brute-force that a slow password hash would protect.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(db: Database, user_id: str, name: str = "cli") -> tuple[str, str]:
    """Issue a bearer token; returns (token id, token). Only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = new_id("tok")
    with db.write.begin() as conn:
        if conn.execute(sa.select(users_t.c.id).where(users_t.c.id == user_id)).first() is None:
            raise NotFound(f"no user {user_id}")
        conn.execute(
            api_tokens_t.insert().values(
                id=token_id,
                user_id=user_id,
                token_hash=hash_token(token),
                name=name[:100],
                created_at=_now(),
            )
        )
    return token_id, token


def user_for_token(db: Database, token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(api_tokens_t.c.user_id).where(api_tokens_t.c.token_hash == digest)
        ).first()
    # The lookup is by the token's hash, so it reveals nothing about the token itself.
    return str(row.user_id) if row is not None else None


# --- messages --------------------------------------------------------------------------


def encode_cursor(kind: str, last: str) -> str:
    """An opaque cursor for keyset paging: what the list is, and its last key."""
    raw = json.dumps([kind, last], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, max_length: int = 64) -> str:
    """The last key from a cursor of ``kind``; InvalidCursor if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidCursor("the cursor is not one this server issued") from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(x, str) for x in data)
        or len(data[1]) > max_length
    ):
        raise InvalidCursor("the cursor is not one this server issued")
    if data[0] != kind:
        raise InvalidCursor("the cursor belongs to another list")
    return str(data[1])


def _message_json(row: Any, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "folder": row.folder,
        "channel": row.channel,
        "bridge": row.bridge,
        "direction": row.direction,
        "sender": row.sender,
        "recipient": row.recipient,
        "subject": row.subject,
        "text": row.text,
        "html": row.html,
        "received_at": row.received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "read": bool(row.read),
        "reason": row.reason,
        "auth": json.loads(row.auth) if row.auth else None,
        "status": row.status,
        "error_code": row.error_code,
        "attachments": attachments,
    }


_MESSAGE_COLUMNS = [
    messages_t.c.id,
    messages_t.c.folder,
    messages_t.c.channel,
    messages_t.c.bridge,
    messages_t.c.direction,
    messages_t.c.sender,
    messages_t.c.recipient,
    messages_t.c.subject,
    messages_t.c.text,
    messages_t.c.html,
    messages_t.c.received_at,
    messages_t.c.read,
    messages_t.c.reason,
    messages_t.c.auth,
    messages_t.c.status,
    messages_t.c.error_code,
]


def _attachments_for(
    conn: sa.Connection, message_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {mid: [] for mid in message_ids}
    if not message_ids:
        return out
    rows = conn.execute(
        sa.select(
            attachments_t.c.id,
            attachments_t.c.message_id,
            attachments_t.c.filename,
            attachments_t.c.content_type,
            attachments_t.c.size,
            attachments_t.c.status,
            attachments_t.c.error,
        )
        .where(attachments_t.c.message_id.in_(message_ids))
        .order_by(attachments_t.c.id)
    )
    for r in rows:
        out[r.message_id].append(
            {
                "id": r.id,
                "filename": r.filename,
                "content_type": r.content_type,
                "size": r.size,
                "status": r.status,
                "error": r.error,
            }
        )
    return out


def _list_kind(folder: Folder, unread: bool | None) -> str:
    # The cursor names the list it pages: a folder, and the read filter if any (an
    # unfiltered folder keeps its plain name, so cursors issued before stay valid).
    if unread is None:
        return str(folder)
    return f"{folder}?unread={'true' if unread else 'false'}"


def list_messages(
    db: Database,
    user_id: str,
    folder: Folder,
    *,
    limit: int = 50,
    cursor: str | None = None,
    unread: bool | None = None,
) -> Page:
    """Newest first; only unread (``unread=True``) or read (``False``) messages when
    asked. ``next`` is an opaque cursor for the following page of the same list, or None."""
    if folder not in VISIBLE_FOLDERS:
        raise NotFound(f"no folder {folder}")
    limit = max(1, min(limit, MAX_PAGE))
    kind = _list_kind(folder, unread)
    stmt = (
        sa.select(*_MESSAGE_COLUMNS)
        .where(messages_t.c.user_id == user_id, messages_t.c.folder == str(folder))
        .order_by(messages_t.c.id.desc())
        .limit(limit + 1)
    )
    if unread is not None:
        stmt = stmt.where(messages_t.c.read == (not unread))
    if cursor:
        stmt = stmt.where(messages_t.c.id < decode_cursor(cursor, kind))
    with db.read.connect() as conn:
        rows = list(conn.execute(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        atts = _attachments_for(conn, [r.id for r in rows])
    items = [_message_json(r, atts[r.id]) for r in rows]
    return Page(items=items, next=encode_cursor(kind, rows[-1].id) if more else None)


def _visible_message(user_id: str, message_id: str) -> sa.ColumnElement[bool]:
    """The user's message, unless it is in ``discarded`` (which no user operation sees)."""
    return sa.and_(
        messages_t.c.id == message_id,
        messages_t.c.user_id == user_id,
        messages_t.c.folder != str(Folder.DISCARDED),
    )


def _read_message(conn: sa.Connection, user_id: str, message_id: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(*_MESSAGE_COLUMNS).where(_visible_message(user_id, message_id))
    ).first()
    if row is None:
        raise NotFound("no such message")
    atts = _attachments_for(conn, [row.id])
    return _message_json(row, atts[row.id])


def get_message(db: Database, user_id: str, message_id: str) -> dict[str, Any]:
    with db.read.connect() as conn:
        return _read_message(conn, user_id, message_id)


def set_read(db: Database, user_id: str, message_id: str, read: bool) -> dict[str, Any]:
    """Mark the message read or unread; returns it as :func:`get_message` does."""
    with db.write.begin() as conn:
        changed = conn.execute(
            messages_t.update().where(_visible_message(user_id, message_id)).values(read=read)
        ).rowcount
        if not changed:
            raise NotFound("no such message")
        return _read_message(conn, user_id, message_id)


def delete_message(db: Database, blobs: BlobStore, user_id: str, message_id: str) -> None:
    """Delete the message, its attachment rows, the raw email it was parsed from once
    no message is left of it, and then the blobs no attachment references any more."""
    a = attachments_t.c
    with db.write.begin() as conn:
        row = conn.execute(
            sa.select(messages_t.c.raw_id).where(_visible_message(user_id, message_id))
        ).first()
        if row is None:
            raise NotFound("no such message")
        digests = set(
            conn.execute(
                sa.select(a.sha256).where(
                    a.message_id == message_id, a.user_id == user_id, a.sha256.is_not(None)
                )
            ).scalars()
        )
        conn.execute(attachments_t.delete().where(a.message_id == message_id, a.user_id == user_id))
        conn.execute(
            messages_t.delete().where(
                messages_t.c.id == message_id, messages_t.c.user_id == user_id
            )
        )
        if row.raw_id is not None:
            _delete_raw_if_unused(conn, row.raw_id)
    # After the commit: a blob is deleted only once no committed row can point to it.
    delete_unreferenced_blobs(db, blobs, digests)


def _delete_raw_if_unused(conn: sa.Connection, raw_id: str) -> None:
    # One email to several recipients is one raw row behind several messages (maybe of
    # several users): it goes with the last of them. A pending row is still being
    # parsed into messages, and stays.
    raw = raw_messages_t.c
    conn.execute(
        raw_messages_t.delete().where(
            raw.id == raw_id,
            raw.state == raw_store.DONE,
            ~sa.exists().where(messages_t.c.raw_id == raw_id),
        )
    )


def read_attachment(
    db: Database,
    blobs: BlobStore,
    user_id: str,
    message_id: str,
    attachment_id: str,
    *,
    unless: Collection[str] = (),
) -> AttachmentContent:
    """The content of one attachment of the user's message. NotFound when either is not
    the user's, the attachment is not the message's, or the message is discarded;
    AttachmentUnavailable when it has no content (pending or failed). The blob is not
    read (``data`` is None) when its digest, or ``*``, is in ``unless`` (the client's
    If-None-Match)."""
    a = attachments_t.c
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(a.filename, a.content_type, a.status, a.sha256)
            .join_from(attachments_t, messages_t, a.message_id == messages_t.c.id)
            .where(
                a.id == attachment_id,
                a.message_id == message_id,
                a.user_id == user_id,
                _visible_message(user_id, message_id),
            )
        ).first()
    if row is None:
        raise NotFound("no such attachment")
    if row.status != AttachmentStatus.STORED or row.sha256 is None:
        raise AttachmentUnavailable(str(row.status))
    return AttachmentContent(
        filename=row.filename,
        content_type=row.content_type,
        sha256=row.sha256,
        data=None if row.sha256 in unless or "*" in unless else blobs.get(row.sha256),
    )


def owner_of_message(db: Database, message_id: str) -> str:
    """The user a message belongs to: for operator commands that name only a message."""
    with db.read.connect() as conn:
        user_id = conn.execute(
            sa.select(messages_t.c.user_id).where(messages_t.c.id == message_id)
        ).scalar()
    if user_id is None:
        raise NotFound(f"no message {message_id}")
    return str(user_id)


def route_address(db: Database, address: str) -> str | None:
    """The canonical form of ``address`` if it routes inbound traffic to a user."""
    with db.read.connect() as conn:
        found = conn.execute(
            sa.select(user_addresses_t.c.address).where(user_addresses_t.c.address == address)
        ).scalar()
    return str(found) if found is not None else None
