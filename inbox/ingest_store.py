"""Batch statements for the ingest hot path: route, look up trust, insert idempotently.

This is the one place that speaks SQL through the DBAPI cursor instead of
SQLAlchemy: it runs for every inbound message, and SQLAlchemy's per-statement
compile/bind overhead (~50-100 µs) costs more than SQLite's own work (~5 µs per
row). The statements are plain, portable SQL; the two dialects differ only in
the placeholder and in PostgreSQL's row lock. Everything else uses SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from inbox.ids import new_id
from inbox.message import AttachmentStatus, Channel, Inbound


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


_MESSAGE_COLUMNS = (
    "id, user_id, bridge, external_id, direction, channel, folder, sender, recipient, "
    "subject, text, html, received_at, read, reason, auth, provider_meta, raw_id, conversation"
)
_ATTACHMENT_COLUMNS = (
    "id, message_id, user_id, filename, content_type, size, status, sha256, remote_url, "
    "error, created_at"
)


class _Dialect:
    """Placeholder style and value adaptation for one DBAPI driver."""

    def __init__(self, name: str) -> None:
        self.postgres = name == "postgresql"
        self.mark = "%s" if self.postgres else "?"

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def when(self, value: datetime) -> Any:
        if self.postgres:
            return value
        # The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC).
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def flag(self, value: bool) -> Any:
        return value if self.postgres else int(value)


def _cursor(conn: sa.Connection) -> tuple[Any, _Dialect]:
    # The driver connection shares the SQLAlchemy connection's open transaction.
    raw = conn.connection.driver_connection
    return raw.cursor(), _Dialect(conn.dialect.name)  # type: ignore[union-attr]


class Routes(dict[str, str]):
    """Recipient address -> user id (absent: unroutable); ``suspended`` holds the ids
    among them whose account is suspended (their inbound is held)."""

    suspended: frozenset[str] = frozenset()


def lookup_routes(conn: sa.Connection, recipients: Iterable[str]) -> Routes:
    """Map each recipient address to the user it routes to (absent: unroutable).

    On PostgreSQL the users' rows are share-locked for the transaction, so a
    concurrent quarantine release or trust change for the same user (which takes
    ``FOR UPDATE``) is ordered strictly before or after this batch.
    """
    wanted = sorted(set(recipients))
    if not wanted:
        return Routes()
    cur, d = _cursor(conn)
    # The suspension comes with the route from the row already read: no extra query.
    sql = (
        "SELECT ua.address, ua.user_id, u.suspended_at IS NOT NULL FROM user_addresses ua "
        "JOIN users u ON u.id = ua.user_id "
        f"WHERE ua.address IN ({d.marks(len(wanted))})"
    )
    if d.postgres:
        sql += " FOR SHARE OF u"
    cur.execute(sql, wanted)
    routes = Routes()
    suspended: set[str] = set()
    for address, user_id, is_suspended in cur.fetchall():
        routes[address] = user_id
        if is_suspended:
            suspended.add(user_id)
    routes.suspended = frozenset(suspended)
    return routes


def lookup_trust(
    conn: sa.Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Map (user id, sender address) to ``trusted`` / ``blocked`` where an entry exists."""
    wanted = set(pairs)
    if not wanted:
        return {}
    users = sorted({u for u, _ in wanted})
    senders = sorted({a for _, a in wanted})
    cur, d = _cursor(conn)
    cur.execute(
        "SELECT user_id, address, verdict FROM trust_entries "
        f"WHERE user_id IN ({d.marks(len(users))}) AND address IN ({d.marks(len(senders))})",
        [*users, *senders],
    )
    return {
        (user_id, address): verdict
        for user_id, address, verdict in cur.fetchall()
        if (user_id, address) in wanted
    }


def insert_messages(conn: sa.Connection, new: Sequence[NewMessage]) -> list[StoredRef]:
    """Insert messages (and their attachment rows) unless (bridge, external id) exists.

    Returns one :class:`StoredRef` per input, in order. Inputs that repeat a key
    already in the table, or earlier in the same batch, resolve to the stored row
    with ``inserted=False``; safe under concurrent writers through the unique index.
    """
    if not new:
        return []
    cur, d = _cursor(conn)
    now = d.when(datetime.now(UTC))
    insert_message = (
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({d.marks(19)}) "
        "ON CONFLICT (bridge, external_id) DO NOTHING"
    )
    by_key: dict[tuple[str, str], StoredRef] = {}
    first_index: dict[tuple[str, str], int] = {}
    missing: list[tuple[str, str]] = []
    attachment_rows: list[tuple[Any, ...]] = []
    for i, item in enumerate(new):
        msg = item.inbound
        key = (msg.bridge, msg.external_id)
        if key in first_index:
            continue
        first_index[key] = i
        message_id = new_id("msg")
        cur.execute(
            insert_message,
            (
                message_id,
                item.user_id,
                msg.bridge,
                msg.external_id,
                "inbound",
                msg.channel.value,
                item.folder,
                msg.sender,
                msg.recipient,
                msg.subject,
                msg.text,
                msg.html,
                d.when(msg.received_at),
                d.flag(False),
                item.reason,
                _auth_json(msg),
                orjson.dumps(dict(msg.provider_meta)).decode("utf-8")
                if msg.provider_meta
                else None,
                msg.raw_id,
                # SMS/MMS: the counterpart, who is the sender of what comes in; an
                # email without a thread key from its bridge belongs to none.
                msg.conversation
                if msg.conversation is not None or msg.channel is Channel.EMAIL
                else msg.sender,
            ),
        )
        if cur.rowcount != 1:
            missing.append(key)
            continue
        by_key[key] = StoredRef(message_id, item.folder, item.reason, True)
        for att in msg.attachments:
            stored = att.content is not None
            attachment_rows.append(
                (
                    new_id("att"),
                    message_id,
                    item.user_id,
                    att.filename,
                    att.content_type,
                    len(att.content) if att.content is not None else None,
                    (AttachmentStatus.STORED if stored else AttachmentStatus.PENDING).value,
                    hashlib.sha256(att.content).hexdigest() if att.content is not None else None,
                    att.remote_url,
                    None,
                    now,
                )
            )
    if attachment_rows:
        cur.executemany(
            f"INSERT INTO attachments ({_ATTACHMENT_COLUMNS}) VALUES ({d.marks(11)})",
            attachment_rows,
        )
    if missing:
        by_key.update(_existing(cur, d, missing))
    out: list[StoredRef] = []
    for i, item in enumerate(new):
        key = (item.inbound.bridge, item.inbound.external_id)
        ref = by_key[key]
        if first_index[key] != i and ref.inserted:
            ref = StoredRef(ref.message_id, ref.folder, ref.reason, False)
        out.append(ref)
    return out


def _existing(
    cur: Any, d: _Dialect, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], StoredRef]:
    by_bridge: dict[str, list[str]] = {}
    for bridge, external_id in keys:
        by_bridge.setdefault(bridge, []).append(external_id)
    found: dict[tuple[str, str], StoredRef] = {}
    for bridge, external_ids in by_bridge.items():
        cur.execute(
            "SELECT external_id, id, folder, reason FROM messages "
            f"WHERE bridge = {d.mark} AND external_id IN ({d.marks(len(external_ids))})",
            [bridge, *external_ids],
        )
        for external_id, message_id, folder, reason in cur.fetchall():
            found[(bridge, external_id)] = StoredRef(message_id, folder, reason, False)
    return found


def _auth_json(msg: Inbound) -> str | None:
    if msg.auth is None:
        return None
    a = msg.auth
    return json.dumps(
        {"spf": str(a.spf), "dkim": str(a.dkim), "dmarc": str(a.dmarc), "aligned": a.aligned}
    )


def record_opt_outs(conn: sa.Connection, changes: Sequence[tuple[str, str, bool]]) -> None:
    """Apply (user id, counterpart, opted out?) in order: STOP inserts, START deletes."""
    if not changes:
        return
    cur, d = _cursor(conn)
    now = d.when(datetime.now(UTC))
    for user_id, address, opted_out in changes:
        if opted_out:
            cur.execute(
                "INSERT INTO sms_opt_outs (user_id, address, created_at) "
                f"VALUES ({d.marks(3)}) ON CONFLICT (user_id, address) DO NOTHING",
                (user_id, address, now),
            )
        else:
            cur.execute(
                f"DELETE FROM sms_opt_outs WHERE user_id = {d.mark} AND address = {d.mark}",
                (user_id, address),
            )
