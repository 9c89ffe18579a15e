"""Batch statements for the ingest hot path: route, look up trust, insert idempotently.

Each function issues one statement for a whole batch, so SQLAlchemy's per-statement
overhead is paid once per group commit rather than once per message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from inbox.ids import new_id
from inbox.message import AttachmentStatus, Inbound
from inbox.models import attachments_t, messages_t, trust_entries_t, user_addresses_t, users_t


@dataclass(frozen=True, slots=True)
class StoredRef:
    """The stored row an (bridge, external id) resolved to."""

    message_id: str
    folder: str
    reason: str
    inserted: bool


@dataclass(frozen=True, slots=True)
class NewMessage:
    user_id: str
    inbound: Inbound
    folder: str
    reason: str


def lookup_routes(conn: sa.Connection, recipients: Iterable[str]) -> dict[str, str]:
    """Map each recipient address to the user it routes to (absent: unroutable).

    On PostgreSQL the users' rows are share-locked for the transaction, so a
    concurrent quarantine release or trust change for the same user (which takes
    ``FOR UPDATE``) is ordered strictly before or after this batch.
    """
    wanted = sorted(set(recipients))
    if not wanted:
        return {}
    stmt = (
        sa.select(user_addresses_t.c.address, user_addresses_t.c.user_id)
        .join(users_t, users_t.c.id == user_addresses_t.c.user_id)
        .where(user_addresses_t.c.address.in_(wanted))
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True, of=users_t)
    return {row.address: row.user_id for row in conn.execute(stmt)}


def lookup_trust(
    conn: sa.Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Map (user id, sender address) to ``trusted`` / ``blocked`` where an entry exists."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    stmt = sa.select(
        trust_entries_t.c.user_id, trust_entries_t.c.address, trust_entries_t.c.verdict
    ).where(sa.tuple_(trust_entries_t.c.user_id, trust_entries_t.c.address).in_(wanted))
    return {(row.user_id, row.address): row.verdict for row in conn.execute(stmt)}


def _insert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    # Both dialects spell INSERT ... ON CONFLICT the same way through SQLAlchemy.
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_messages(conn: sa.Connection, new: Sequence[NewMessage]) -> list[StoredRef]:
    """Insert messages (and their attachment rows) unless (bridge, external id) exists.

    Returns one :class:`StoredRef` per input, in order. Inputs that repeat a key
    already in the table, or earlier in the same batch, resolve to the stored row
    with ``inserted=False``; safe under concurrent writers through the unique index.
    """
    if not new:
        return []
    now = datetime.now(UTC)
    first_index: dict[tuple[str, str], int] = {}
    rows: list[dict[str, object]] = []
    for i, item in enumerate(new):
        key = (item.inbound.bridge, item.inbound.external_id)
        if key in first_index:
            continue
        first_index[key] = i
        msg = item.inbound
        rows.append(
            {
                "id": new_id("msg"),
                "user_id": item.user_id,
                "bridge": msg.bridge,
                "external_id": msg.external_id,
                "direction": "inbound",
                "channel": str(msg.channel),
                "folder": item.folder,
                "sender": msg.sender,
                "recipient": msg.recipient,
                "subject": msg.subject,
                "text": msg.text,
                "html": msg.html,
                "received_at": msg.received_at,
                "read": False,
                "reason": item.reason,
                "auth": _auth_json(msg),
                "provider_meta": json.dumps(dict(msg.provider_meta), ensure_ascii=False)
                if msg.provider_meta
                else None,
            }
        )
    stmt = (
        _insert(conn, messages_t)
        .on_conflict_do_nothing(index_elements=["bridge", "external_id"])
        .returning(messages_t.c.id)
    )
    inserted_ids = {r.id for r in conn.execute(stmt, rows)}
    by_key: dict[tuple[str, str], StoredRef] = {}
    missing: list[tuple[str, str]] = []
    attachment_rows: list[dict[str, object]] = []
    for row in rows:
        key = (str(row["bridge"]), str(row["external_id"]))
        if row["id"] in inserted_ids:
            by_key[key] = StoredRef(str(row["id"]), str(row["folder"]), str(row["reason"]), True)
            item = new[first_index[key]]
            for att in item.inbound.attachments:
                attachment_rows.append(
                    {
                        "id": new_id("att"),
                        "message_id": row["id"],
                        "user_id": item.user_id,
                        "filename": att.filename,
                        "content_type": att.content_type,
                        "size": len(att.content) if att.content is not None else None,
                        "status": str(AttachmentStatus.PENDING),
                        "sha256": None,
                        "remote_url": att.remote_url,
                        "error": None,
                        "created_at": now,
                    }
                )
        else:
            missing.append(key)
    if attachment_rows:
        conn.execute(attachments_t.insert(), attachment_rows)
    if missing:
        existing = conn.execute(
            sa.select(
                messages_t.c.bridge,
                messages_t.c.external_id,
                messages_t.c.id,
                messages_t.c.folder,
                messages_t.c.reason,
            ).where(sa.tuple_(messages_t.c.bridge, messages_t.c.external_id).in_(missing))
        )
        for r in existing:
            by_key[(r.bridge, r.external_id)] = StoredRef(r.id, r.folder, r.reason, False)
    out: list[StoredRef] = []
    for i, item in enumerate(new):
        key = (item.inbound.bridge, item.inbound.external_id)
        ref = by_key[key]
        if first_index[key] != i and ref.inserted:
            ref = StoredRef(ref.message_id, ref.folder, ref.reason, False)
        out.append(ref)
    return out


def _auth_json(msg: Inbound) -> str | None:
    if msg.auth is None:
        return None
    a = msg.auth
    return json.dumps(
        {"spf": str(a.spf), "dkim": str(a.dkim), "dmarc": str(a.dmarc), "aligned": a.aligned}
    )
