"""The events table: what a user's connected clients hear about live.

An event row is written in the same transaction as the change it announces, so that a
client resuming from its last event id (``Last-Event-ID``) never misses a committed
change and never hears of one that was rolled back. Rows carry ids and kinds only
(message id, folder, status, screener action), never message content: a client that
hears of a message fetches it through the API, where its access is checked.

Ordering. Streams read "events of user U with id > the last id sent" and trust that no
smaller id of U can still appear. On SQLite that holds by itself (one writer at a
time, ids allocated under the write lock). On PostgreSQL ids come from a sequence and
transactions commit in any order, so an id could become visible after a larger one
was already sent; :func:`insert` therefore takes a transaction-scoped advisory lock per
user, in a fixed order, right before inserting that user's rows and holds it to the
commit. Two transactions writing events of the same user then allocate and commit
those ids one after the other, and "id > last sent" skips nothing.

Ids are never reused under a live cursor: SQLite (the table has no AUTOINCREMENT)
would reuse the largest id once its row is gone, so :func:`purge` always keeps the
newest row, and a stream starts from its own user's newest id, not from the table's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from inbox.db import Database
from inbox.models import events_t

#: Kinds of event. Clients must ignore kinds they do not know (more will come).
MESSAGE_CREATED = "message.created"  # data: message_id, folder, channel, direction
MESSAGE_STATUS = "message.status"  # data: message_id, status (outbound delivery)
MESSAGE_UPDATED = "message.updated"  # data: message_id, read
MESSAGE_DELETED = "message.deleted"  # data: message_id
SCREENER_CHANGED = "screener.changed"  # data: action (allow|block|undo), messages
KINDS = (MESSAGE_CREATED, MESSAGE_STATUS, MESSAGE_UPDATED, MESSAGE_DELETED, SCREENER_CHANGED)

MAX_DATA_CHARS = 1000  # the data of one event, as JSON; ids and small words only
_INSERT = {
    "sqlite": "INSERT INTO events (user_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
    "postgresql": "INSERT INTO events (user_id, kind, data, created_at) VALUES (%s, %s, %s, %s)",
}


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    user_id: str
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Start:
    """Where a new stream starts. ``cursor``: the id after which it sends events;
    ``reset``: the client must refetch (its position is unknown or too far behind)."""

    cursor: int
    reset: bool


def lock_key(user_id: str) -> int:
    """The advisory lock key of a user's event rows (a signed 64-bit integer)."""
    digest = hashlib.blake2b(b"optmsg.events:" + user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _encode(data: Mapping[str, Any]) -> str:
    # orjson: one event per stored message, on the ingest hot path.
    text = orjson.dumps(dict(data)).decode("utf-8")
    if len(text) > MAX_DATA_CHARS:
        raise ValueError(f"event data over {MAX_DATA_CHARS} characters")
    return text


def insert(conn: sa.Connection, events: Sequence[NewEvent]) -> None:
    """Insert ``events`` in the caller's transaction, in one statement (executemany
    through the DBAPI cursor: this runs on the ingest hot path, once per batch)."""
    if not events:
        return
    raw = conn.connection.driver_connection
    cur = raw.cursor()  # type: ignore[union-attr]
    now = datetime.now(UTC)
    when: Any = now
    if conn.dialect.name == "postgresql":
        # Held to the commit; see the module docstring. Sorted so that two transactions
        # never wait on each other's keys in opposite orders; taken last in the
        # transaction, so a holder waits for nothing but these locks.
        keys = sorted({lock_key(e.user_id) for e in events})
        cur.execute(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY k) s",
            (keys,),
        )
        cur.fetchall()
    else:
        # The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC).
        when = now.replace(tzinfo=None).isoformat(" ", "microseconds")
    cur.executemany(
        _INSERT[conn.dialect.name], [(e.user_id, e.kind, _encode(e.data), when) for e in events]
    )


def record(conn: sa.Connection, user_id: str, kind: str, data: Mapping[str, Any]) -> None:
    """One event, in the caller's transaction."""
    insert(conn, [NewEvent(user_id, kind, data)])


def message_created(
    user_id: str, message_id: str, folder: str, channel: str, direction: str = "inbound"
) -> NewEvent:
    return NewEvent(
        user_id,
        MESSAGE_CREATED,
        {"message_id": message_id, "folder": folder, "channel": channel, "direction": direction},
    )


def message_status(user_id: str, message_id: str, status: str) -> NewEvent:
    return NewEvent(user_id, MESSAGE_STATUS, {"message_id": message_id, "status": status})


def _row(row: Any) -> Event:
    created = row.created_at
    if created.tzinfo is None:  # SQLite hands datetimes back naive (stored as UTC)
        created = created.replace(tzinfo=UTC)
    return Event(int(row.id), str(row.kind), json.loads(row.data), created)


def list_after(db: Database, user_id: str, after: int, limit: int) -> list[Event]:
    """The user's events with id > ``after``, oldest first, at most ``limit``."""
    e = events_t.c
    with db.read.connect() as conn:
        rows = conn.execute(
            sa.select(e.id, e.kind, e.data, e.created_at)
            .where(e.user_id == user_id, e.id > after)
            .order_by(e.id)
            .limit(limit)
        )
        return [_row(r) for r in rows]


def latest_id(conn: sa.Connection, user_id: str) -> int:
    """The user's newest event id, 0 when there is none."""
    e = events_t.c
    found = conn.execute(sa.select(sa.func.max(e.id)).where(e.user_id == user_id)).scalar()
    return int(found) if found is not None else 0


def start(db: Database, user_id: str, last_event_id: int | None, replay_max: int) -> Start:
    """Where a stream for ``user_id`` starts. Without ``last_event_id``: after the user's
    newest event (only new events are sent). With it: right after it, unless events the
    client has not seen may be gone (its id is older than what retention kept, or newer
    than any id the table holds: another database, or a table emptied since) or more than
    ``replay_max`` are waiting; then the client is told to reset and the stream starts
    after the newest event."""
    e = events_t.c
    with db.read.connect() as conn:
        newest = latest_id(conn, user_id)
        if last_event_id is None:
            return Start(newest, False)
        lo, hi = conn.execute(sa.select(sa.func.min(e.id), sa.func.max(e.id))).one()
        if lo is None or last_event_id < int(lo) - 1 or last_event_id > int(hi):
            return Start(newest, True)
        waiting = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(e.id)
                .where(e.user_id == user_id, e.id > last_event_id)
                .limit(replay_max + 1)
                .subquery()
            )
        ).scalar_one()
        if waiting > replay_max:
            return Start(newest, True)
        return Start(last_event_id, False)


def newest_id(db: Database) -> int:
    """The largest event id of any user, 0 for an empty table."""
    with db.read.connect() as conn:
        found = conn.execute(sa.select(sa.func.max(events_t.c.id))).scalar()
    return int(found) if found is not None else 0


def users_after(db: Database, after: int, limit: int = 10_000) -> dict[str, int]:
    """Users with events of id > ``after`` and their newest such id (for the poll that
    notices events written by other processes: the CLI, workers)."""
    e = events_t.c
    with db.read.connect() as conn:
        rows = conn.execute(
            sa.select(e.user_id, sa.func.max(e.id))
            .where(e.id > after)
            .group_by(e.user_id)
            .limit(limit)
        )
        return {str(user_id): int(newest) for user_id, newest in rows}


def purge(db: Database, *, keep_hours: int, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete events older than ``keep_hours`` (every user), ``batch`` rows per
    transaction, always keeping the newest row (see the module docstring). Returns
    how many were deleted."""
    cutoff = (now if now is not None else datetime.now(UTC)) - timedelta(hours=keep_hours)
    e = events_t.c
    deleted = 0
    while True:
        with db.write.begin() as conn:
            newest = conn.execute(sa.select(sa.func.max(e.id))).scalar()
            if newest is None:
                return deleted
            ids = sa.select(e.id).where(e.created_at < cutoff, e.id < newest).limit(batch)
            n = conn.execute(events_t.delete().where(e.id.in_(ids.scalar_subquery()))).rowcount
        deleted += n
        if n < batch:
            return deleted
