"""The raw email spool: bytes committed before the SMTP ``250``, parsed afterwards.

This is the Postfix cleanup / Action Mailbox pattern: acknowledging needs only a
durable copy, and a message that cannot be parsed is still kept (and
quarantined), never lost. A row stays ``pending`` until the messages parsed from
it are stored; pending rows are processed again after a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from inbox.db import Database
from inbox.errors import NotFound
from inbox.ids import new_id
from inbox.models import messages_t, raw_messages_t

PENDING = "pending"
DONE = "done"


@dataclass(frozen=True, slots=True)
class RawEmail:
    id: str
    received_at: datetime
    peer_ip: str
    helo: str
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    sha256: str


def new_raw(
    *, peer_ip: str, helo: str, mail_from: str, recipients: Sequence[str], data: bytes
) -> RawEmail:
    return RawEmail(
        id=new_id("raw"),
        received_at=datetime.now(UTC),
        peer_ip=peer_ip[:64],
        helo=helo[:255],
        mail_from=mail_from[:320],
        recipients=tuple(recipients),
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def insert_raw_batch(conn: sa.Connection, items: Sequence[RawEmail]) -> list[str]:
    """Group-commit work function: spool a batch of received emails."""
    conn.execute(
        raw_messages_t.insert(),
        [
            {
                "id": r.id,
                "received_at": r.received_at,
                "peer_ip": r.peer_ip,
                "helo": r.helo,
                "mail_from": r.mail_from,
                "recipients": json.dumps(list(r.recipients)),
                "size": len(r.data),
                "sha256": r.sha256,
                "data": r.data,
                "state": PENDING,
                "error": None,
            }
            for r in items
        ],
    )
    return [r.id for r in items]


def pending_ids(
    db: Database, *, after: str = "", older_than: datetime | None = None, limit: int = 1000
) -> list[str]:
    """Pending raw emails in id order, from after ``after``; ``older_than`` leaves out
    those received since (likely still being processed)."""
    stmt = (
        sa.select(raw_messages_t.c.id)
        .where(raw_messages_t.c.state == PENDING, raw_messages_t.c.id > after)
        .order_by(raw_messages_t.c.id)
        .limit(limit)
    )
    if older_than is not None:
        stmt = stmt.where(raw_messages_t.c.received_at < older_than)
    with db.read.connect() as conn:
        return list(conn.execute(stmt).scalars())


def load(db: Database, raw_id: str) -> RawEmail:
    found = _load(db, raw_id, pending_only=False)
    if found is None:
        raise NotFound(f"no raw message {raw_id}")
    return found


def load_pending(db: Database, raw_id: str) -> RawEmail | None:
    """The raw email if it still waits to be processed; None once it was (a sweep's
    list of pending ids can be out of date by the time it gets to one) or is gone."""
    return _load(db, raw_id, pending_only=True)


def _load(db: Database, raw_id: str, *, pending_only: bool) -> RawEmail | None:
    stmt = sa.select(raw_messages_t).where(raw_messages_t.c.id == raw_id)
    if pending_only:
        stmt = stmt.where(raw_messages_t.c.state == PENDING)
    with db.read.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return RawEmail(
        id=row.id,
        received_at=row.received_at,
        peer_ip=row.peer_ip,
        helo=row.helo,
        mail_from=row.mail_from,
        recipients=tuple(json.loads(row.recipients)),
        data=bytes(row.data),
        sha256=row.sha256,
    )


@dataclass(frozen=True, slots=True)
class Processed:
    """The outcome of parsing one raw email: ``data`` replaces the stored bytes when
    an incoming Authentication-Results header claiming our id had to be removed;
    ``auth_results`` is our own header's value; ``error`` says why parsing failed."""

    raw_id: str
    data: bytes | None = None
    auth_results: str | None = None
    error: str | None = None


# Built once (their construction and cache keys cost more than the UPDATE itself);
# the bytes are rewritten only when an incoming header claiming our id was removed.
_MARK_DONE = (
    raw_messages_t.update()
    .where(raw_messages_t.c.id == sa.bindparam("raw_id"))
    .values(state=DONE, error=sa.bindparam("error"), auth_results=sa.bindparam("auth"))
)
_MARK_DONE_REWRITTEN = _MARK_DONE.values(data=sa.bindparam("data"))


def mark_done_batch(conn: sa.Connection, items: Sequence[Processed]) -> list[None]:
    """Group-commit work function: mark raw emails processed."""
    as_is: list[dict[str, object]] = []
    rewritten: list[dict[str, object]] = []
    for item in items:
        values: dict[str, object] = {
            "raw_id": item.raw_id,
            "error": item.error[:500] if item.error else None,
            "auth": item.auth_results,
        }
        if item.data is None:
            as_is.append(values)
        else:
            values["data"] = item.data
            rewritten.append(values)
    if as_is:
        conn.execute(_MARK_DONE, as_is)
    if rewritten:
        conn.execute(_MARK_DONE_REWRITTEN, rewritten)
    return [None] * len(items)


def as_eml(raw: RawEmail, auth_results: str | None) -> bytes:
    """The stored email as an ``.eml`` for export: our Authentication-Results first."""
    if not auth_results:
        return raw.data
    return b"Authentication-Results: " + auth_results.encode("utf-8") + b"\r\n" + raw.data


def delete_unreferenced(conn: sa.Connection) -> int:
    """Delete processed raw emails that no stored message refers to any more: their
    messages were deleted (by the user, by expiry, with the account) or never stored
    (a blocked sender's mail). A raw email is kept only for export of its messages.
    Pending rows are never touched: they are the spool of mail not yet processed."""
    referenced = sa.select(messages_t.c.id).where(messages_t.c.raw_id == raw_messages_t.c.id)
    return int(
        conn.execute(
            raw_messages_t.delete().where(raw_messages_t.c.state == DONE, ~sa.exists(referenced))
        ).rowcount
    )
