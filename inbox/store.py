"""Account, token and message operations used by the CLI and the client API.

Every read or change of a user's data takes the ``user_id`` it is scoped to;
another user's object is reported as :class:`NotFound`, exactly like a missing one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from inbox import events, raw_store
from inbox.addresses import E164, EmailAddress, region_of
from inbox.blobs import BlobStore
from inbox.db import Database, as_utc
from inbox.errors import Conflict, InboxError, NotFound
from inbox.ids import new_id
from inbox.message import AttachmentStatus, Folder
from inbox.models import (
    api_tokens_t,
    attachments_t,
    exports_t,
    messages_t,
    raw_messages_t,
    user_addresses_t,
    users_t,
    verifications_t,
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


def add_address(db: Database, user_id: str, address: E164 | EmailAddress, kind: str) -> UserRecord:
    """Route ``address`` (an OptMsg SMS number, kind "sms", or email address, kind
    "email") to an existing user: how an operator gives an account that signed up
    by itself its number or address. An address routes to at most one user."""
    if kind not in ("sms", "email"):
        raise InboxError(f"unknown address kind {kind!r}: sms or email")
    try:
        with db.write.begin() as conn:
            if conn.execute(sa.select(users_t.c.id).where(users_t.c.id == user_id)).first() is None:
                raise NotFound(f"no user {user_id}")
            owner = conn.execute(
                sa.select(user_addresses_t.c.user_id).where(user_addresses_t.c.address == address)
            ).scalar()
            if owner == user_id:
                return get_user(db, user_id)
            if owner is not None:
                raise Conflict(f"{address} already routes to another user")
            conn.execute(
                user_addresses_t.insert().values(
                    address=address, user_id=user_id, kind=kind, created_at=_now()
                )
            )
    except sa.exc.IntegrityError:
        raise Conflict(f"{address} already routes to another user") from None
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


def delete_user(
    db: Database, blobs: BlobStore, user_id: str, *, exports_dir: Path | None = None
) -> None:
    """Delete the account and everything of it: rows in every table (by cascade, and
    the sign-up codes of its number, which carry no user id), blobs no other user's
    attachment still references, and its export archives (in ``exports_dir``)."""
    with db.write.begin() as conn:
        phone = conn.execute(sa.select(users_t.c.phone).where(users_t.c.id == user_id)).scalar()
        if phone is None:
            raise NotFound(f"no user {user_id}")
        export_ids = list(
            conn.execute(sa.select(exports_t.c.id).where(exports_t.c.user_id == user_id)).scalars()
        )
        conn.execute(verifications_t.delete().where(verifications_t.c.phone == phone))
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
    if exports_dir is not None:
        from inbox.export import delete_archives  # inbox.export imports this module

        delete_archives(exports_dir, export_ids)


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
    with db.write.begin() as conn:
        if conn.execute(sa.select(users_t.c.id).where(users_t.c.id == user_id)).first() is None:
            raise NotFound(f"no user {user_id}")
        return issue_token(conn, user_id, name, _now())


def issue_token(conn: sa.Connection, user_id: str, name: str, now: datetime) -> tuple[str, str]:
    """Insert a new token of an existing user in the caller's transaction; returns
    (token id, token)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = new_id("tok")
    conn.execute(
        api_tokens_t.insert().values(
            id=token_id,
            user_id=user_id,
            token_hash=hash_token(token),
            name=name[:100],
            created_at=now,
        )
    )
    return token_id, token


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """Who a bearer token belongs to, and when it was last recorded as used."""

    user_id: str
    token_id: str
    last_used_at: datetime | None
    # The account is suspended by an operator: every API request is refused.
    suspended: bool = False


# Every API request runs this, so it is built once. The suspension comes with the
# token (one indexed join, no second query).
_TOKEN_OWNER = (
    sa.select(
        api_tokens_t.c.user_id,
        api_tokens_t.c.id,
        api_tokens_t.c.last_used_at,
        users_t.c.suspended_at,
    )
    .join_from(api_tokens_t, users_t, users_t.c.id == api_tokens_t.c.user_id)
    .where(api_tokens_t.c.token_hash == sa.bindparam("digest"))
)


_SQLITE_OWNER_OF_HASH = (
    "SELECT t.user_id, t.id, t.last_used_at, u.suspended_at FROM api_tokens AS t "
    "JOIN users AS u ON u.id = t.user_id WHERE t.token_hash = ?"
)


def _sqlite_row(db: Database, sql: str, params: tuple[Any, ...]) -> Any:
    """The first row of a read on a pooled SQLite connection, straight on the driver
    (for the hottest small reads: SQLAlchemy's execution path costs more than they do)."""
    raw = db.read.raw_connection()
    try:
        return raw.execute(sql, params).fetchone()
    finally:
        raw.close()


def token_owner(db: Database, token: str) -> TokenOwner | None:
    """The owner of a live token, or None for anything else (malformed, unknown,
    revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    if db.is_sqlite:
        # Every API request asks this: plain SQL on the driver (see _sqlite_page).
        row = _sqlite_row(db, _SQLITE_OWNER_OF_HASH, (digest,))
        if row is None:
            return None
        user_id, token_id, last_used_at, suspended_at = row
        return TokenOwner(
            str(user_id),
            str(token_id),
            _utc(datetime.fromisoformat(last_used_at)) if last_used_at else None,
            suspended=suspended_at is not None,
        )
    with db.read.connect() as conn:
        row = conn.execute(_TOKEN_OWNER, {"digest": digest}).first()
    if row is None:
        return None
    return TokenOwner(
        str(row.user_id),
        str(row.id),
        _utc(row.last_used_at),
        suspended=row.suspended_at is not None,
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def touch_tokens(db: Database, uses: Mapping[str, datetime]) -> None:
    """Record when each token was last used, all in one transaction (the gateway
    collects uses in memory and writes them now and then: a write per API request
    would cost the read paths most of their speed). A time never moves backwards."""
    if not uses:
        return
    t = api_tokens_t.c
    with db.write.begin() as conn:
        conn.execute(
            api_tokens_t.update()
            .where(
                t.id == sa.bindparam("token_id"),
                sa.or_(t.last_used_at.is_(None), t.last_used_at < sa.bindparam("used_at")),
            )
            .values(last_used_at=sa.bindparam("used_at")),
            [{"token_id": k, "used_at": v} for k, v in uses.items()],
        )


def _token_json(row: Any, current: str | None) -> dict[str, Any]:
    created, used = _utc(row.created_at), _utc(row.last_used_at)
    return {
        "id": row.id,
        "device": row.name,
        "created_at": created.isoformat() if created else None,
        "last_used_at": used.isoformat() if used else None,
        "current": row.id == current,
    }


def list_tokens(
    db: Database, user_id: str, *, limit: int, cursor: str | None, current: str | None = None
) -> Page:
    """The user's tokens (one per signed-in device), newest first; ``current`` marks
    the one the request came with."""
    t = api_tokens_t.c
    query = sa.select(t.id, t.name, t.created_at, t.last_used_at).where(t.user_id == user_id)
    if cursor is not None:
        query = query.where(t.id < decode_cursor(cursor, "tokens"))
    with db.read.connect() as conn:
        rows = list(conn.execute(query.order_by(t.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [_token_json(r, current) for r in rows],
        encode_cursor("tokens", rows[-1].id) if more else None,
    )


def token_user(db: Database, token_id: str) -> str:
    """The owner of a token (for operators); NotFound when there is no such token."""
    with db.read.connect() as conn:
        user_id = conn.execute(
            sa.select(api_tokens_t.c.user_id).where(api_tokens_t.c.id == token_id)
        ).scalar()
    if user_id is None:
        raise NotFound(f"no token {token_id}")
    return str(user_id)


def revoke_token(db: Database, user_id: str, token_id: str) -> None:
    """Delete one of the user's tokens; NotFound for another user's or a missing one."""
    with db.write.begin() as conn:
        deleted = conn.execute(
            api_tokens_t.delete().where(
                api_tokens_t.c.id == token_id, api_tokens_t.c.user_id == user_id
            )
        ).rowcount
    if not deleted:
        raise NotFound("no such token")


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


class _DriverValue(sa.types.TypeDecorator[Any]):
    """A column read exactly as the driver returns it (no result processing)."""

    impl = sa.types.NullType
    cache_ok = True


def _iso_utc(value: datetime | str) -> str:
    """RFC 3339 UTC ("...Z") of a stored time. SQLite's column is read as its stored
    text (see MESSAGE_COLUMNS): "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, turned into the
    same text ``datetime.isoformat`` gives, without parsing it."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " ":
            text = value.replace(" ", "T", 1)
            return (text[:-7] if text.endswith(".000000") else text) + "Z"
        value = datetime.fromisoformat(value)  # any other stored form: parse it
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def message_json(row: Sequence[Any], attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """A row of :data:`MESSAGE_COLUMNS` as the API's message object."""
    (
        id_,
        folder,
        channel,
        bridge,
        direction,
        sender,
        recipient,
        subject,
        text,
        html,
        received_at,
        read,
        reason,
        auth,
        status,
        error_code,
    ) = row
    return {
        "id": id_,
        "folder": folder,
        "channel": channel,
        "bridge": bridge,
        "direction": direction,
        "sender": sender,
        "recipient": recipient,
        "subject": subject,
        "text": text,
        "html": html,
        "received_at": _iso_utc(received_at),
        "read": bool(read),
        "reason": reason,
        "auth": orjson.loads(auth) if auth else None,
        "status": status,
        "error_code": error_code,
        "attachments": attachments,
    }


#: The columns of a message as the API shows it, in :func:`message_json`'s order.
#: ``received_at`` comes as the driver gives it: SQLite's stored text is formatted
#: directly rather than parsed into a datetime and formatted again (a list page does
#: this 50 times per request).
MESSAGE_COLUMNS = (
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
    sa.type_coerce(messages_t.c.received_at, _DriverValue()).label("received_at"),
    messages_t.c.read,
    messages_t.c.reason,
    messages_t.c.auth,
    messages_t.c.status,
    messages_t.c.error_code,
)

_ATTACHMENT_COLUMNS = (
    attachments_t.c.id,
    attachments_t.c.message_id,
    attachments_t.c.filename,
    attachments_t.c.content_type,
    attachments_t.c.size,
    attachments_t.c.status,
    attachments_t.c.error,
)

# One statement for any number of ids (an expanding parameter), built once.
_ATTACHMENTS_OF = sa.select(*_ATTACHMENT_COLUMNS).where(
    attachments_t.c.message_id.in_(sa.bindparam("ids", expanding=True))
)


def attachments_for(conn: sa.Connection, message_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each message's attachments (metadata only), in id order."""
    out: dict[str, list[dict[str, Any]]] = {mid: [] for mid in message_ids}
    if not message_ids:
        return out
    # Sorted here: most pages have none or a few, and SQL would sort in a temp b-tree.
    rows = sorted(conn.execute(_ATTACHMENTS_OF, {"ids": message_ids}), key=lambda r: str(r[0]))
    for row in rows:
        out[row[1]].append(_attachment_json(row))
    return out


def _attachment_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``_ATTACHMENT_COLUMNS`` (message_id second) as the API shows it."""
    id_, _message_id, filename, content_type, size, status, error = row
    return {
        "id": id_,
        "filename": filename,
        "content_type": content_type,
        "size": size,
        "status": status,
        "error": error,
    }


def _list_kind(folder: Folder, unread: bool | None) -> str:
    # The cursor names the list it pages: a folder, and the read filter if any (an
    # unfiltered folder keeps its plain name, so cursors issued before stay valid).
    if unread is None:
        return str(folder)
    return f"{folder}?unread={'true' if unread else 'false'}"


@functools.cache
def _list_statement(unread: bool | None, after_cursor: bool) -> sa.Select[Any]:
    # Built once per shape: composing a select costs about as much as running it.
    m = messages_t.c
    stmt = (
        sa.select(*MESSAGE_COLUMNS)
        .where(m.user_id == sa.bindparam("user_id"), m.folder == sa.bindparam("folder"))
        .order_by(m.id.desc())
        .limit(sa.bindparam("limit"))
    )
    if unread is not None:
        stmt = stmt.where(m.read == (not unread))
    if after_cursor:
        stmt = stmt.where(m.id < sa.bindparam("before"))
    return stmt


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
    before = decode_cursor(cursor, kind) if cursor else None
    if db.is_sqlite:
        rows, atts = _sqlite_page(db, user_id, folder, limit + 1, unread, before)
    else:
        params: dict[str, Any] = {"user_id": user_id, "folder": str(folder), "limit": limit + 1}
        if before is not None:
            params["before"] = before
        with db.read.connect() as conn:
            rows = list(conn.execute(_list_statement(unread, before is not None), params))
            atts = attachments_for(conn, [r[0] for r in rows[:limit]])
    more = len(rows) > limit
    rows = rows[:limit]
    items = [message_json(r, atts[r[0]]) for r in rows]
    return Page(items=items, next=encode_cursor(kind, rows[-1][0]) if more else None)


# The list is the client API's busiest read. On SQLite it runs as plain SQL on the
# driver: SQLAlchemy's statement execution and row processing cost about twice the
# query itself here (measured with bench/messages_api.py). The SQLAlchemy statement
# above is the same query for PostgreSQL; tests run both.
_SQLITE_LIST = (
    "SELECT id, folder, channel, bridge, direction, sender, recipient, subject, text, "
    "html, received_at, read, reason, auth, status, error_code FROM messages "
    "WHERE user_id = ? AND folder = ?{read}{before} ORDER BY id DESC LIMIT ?"
)
_SQLITE_ATTACHMENTS = (
    "SELECT id, message_id, filename, content_type, size, status, error FROM attachments "
    "WHERE message_id IN ({marks})"
)


def _sqlite_page(
    db: Database,
    user_id: str,
    folder: Folder,
    limit: int,
    unread: bool | None,
    before: str | None,
) -> tuple[list[Any], dict[str, list[dict[str, Any]]]]:
    sql = _SQLITE_LIST.format(
        read="" if unread is None else " AND read = ?",
        before="" if before is None else " AND id < ?",
    )
    params: list[Any] = [user_id, str(folder)]
    if unread is not None:
        params.append(0 if unread else 1)
    if before is not None:
        params.append(before)
    params.append(limit)
    raw = db.read.raw_connection()
    try:
        # The driver runs in autocommit mode here (no BEGIN): each statement reads
        # its own snapshot, and an attachment is committed with its message.
        rows = raw.execute(sql, params).fetchall()
        ids = [r[0] for r in rows[: limit - 1]]
        atts: dict[str, list[dict[str, Any]]] = {mid: [] for mid in ids}
        if ids:
            found = raw.execute(
                _SQLITE_ATTACHMENTS.format(marks=",".join("?" * len(ids))), ids
            ).fetchall()
            for row in sorted(found):
                atts[row[1]].append(_attachment_json(row))
    finally:
        raw.close()
    return rows, atts


def _visible_message(user_id: str, message_id: str) -> sa.ColumnElement[bool]:
    """The user's message, unless it is in ``discarded`` (which no user operation sees)."""
    return sa.and_(
        messages_t.c.id == message_id,
        messages_t.c.user_id == user_id,
        messages_t.c.folder != str(Folder.DISCARDED),
    )


def _read_message(conn: sa.Connection, user_id: str, message_id: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(*MESSAGE_COLUMNS).where(_visible_message(user_id, message_id))
    ).first()
    if row is None:
        raise NotFound("no such message")
    atts = attachments_for(conn, [row.id])
    return message_json(row, atts[row.id])


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
        events.record(
            conn, user_id, events.MESSAGE_UPDATED, {"message_id": message_id, "read": read}
        )
        return _read_message(conn, user_id, message_id)


@dataclass(frozen=True, slots=True)
class DeletedMessage:
    """What :func:`delete_message` deleted: enough for the caller to find the
    provider's copy (``external_id`` is the provider's id on ``bridge``), no content."""

    bridge: str
    external_id: str
    direction: str


def delete_message(db: Database, blobs: BlobStore, user_id: str, message_id: str) -> DeletedMessage:
    """Delete the message, its attachment rows, the raw email it was parsed from once
    no message is left of it, and then the blobs no attachment references any more."""
    a = attachments_t.c
    m = messages_t.c
    with db.write.begin() as conn:
        row = conn.execute(
            sa.select(m.raw_id, m.bridge, m.external_id, m.direction).where(
                _visible_message(user_id, message_id)
            )
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
        events.record(conn, user_id, events.MESSAGE_DELETED, {"message_id": message_id})
    # After the commit: a blob is deleted only once no committed row can point to it.
    delete_unreferenced_blobs(db, blobs, digests)
    return DeletedMessage(row.bridge, row.external_id, row.direction)


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


# Built once: one lookup per SMTP RCPT, and building the statement cost more than
# running it.
_ROUTE = sa.select(user_addresses_t.c.address).where(
    user_addresses_t.c.address == sa.bindparam("address")
)


_SQLITE_ROUTE = "SELECT address FROM user_addresses WHERE address = ?"


def route_address(db: Database, address: str) -> str | None:
    """The canonical form of ``address`` if it routes inbound traffic to a user.
    A single primary-key read (the SMTP layer may run it on the event loop)."""
    if db.is_sqlite:
        # One per SMTP RCPT: plain SQL on the driver, as token_owner.
        row = _sqlite_row(db, _SQLITE_ROUTE, (address,))
        return str(row[0]) if row is not None else None
    with db.read.connect() as conn:
        found = conn.execute(_ROUTE, {"address": address}).scalar()
    return str(found) if found is not None else None
