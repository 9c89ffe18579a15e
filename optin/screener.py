"""The screener: a user's quarantine grouped by sender, decided one card at a time.

Allow trusts the sender and moves their held messages to the inbox; Block blocks the
sender and discards their held messages; Later is doing nothing. Each decision is
recorded so that the user can undo the latest one for ``undo_seconds``; blocked mail
is deleted for good only once that window has passed (:func:`purge_decisions`). Held
messages expire after ``quarantine_days`` (:func:`expire_held`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from inbox import events
from inbox.addresses import E164, format_phone
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.ids import new_id
from inbox.message import Folder
from inbox.models import attachments_t, messages_t, screener_decisions_t, trust_entries_t
from inbox.store import MAX_PAGE, Page, decode_cursor, delete_unreferenced_blobs, encode_cursor
from optin.decide import TrustVerdict
from optin.errors import NothingToUndo
from optin.trust import Source, kind_of, lock_user, set_entry

REASON_RELEASED = "released from quarantine: sender now trusted"
MAX_SENDERS = 500  # per bulk decision
PREVIEW_CHARS = 160
_IN_CHUNK = 500

_HELD = str(Folder.QUARANTINE)
_DISCARDED = str(Folder.DISCARDED)


class Action:
    ALLOW = "allow"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """What one allow or block did; ``messages`` counts the held messages it moved."""

    decision_id: str
    action: str
    senders: tuple[str, ...]
    messages: int

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "action": self.action,
            "senders": list(self.senders),
            "messages": self.messages,
        }


@dataclass(frozen=True, slots=True)
class UndoResult:
    action: str
    senders: tuple[str, ...]
    messages: int

    def as_json(self) -> dict[str, Any]:
        return {"undone": self.action, "senders": list(self.senders), "messages": self.messages}


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive (they are stored as UTC).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def display_name(sender: str, region: str) -> str:
    """The sender as a person reads it: a phone number formatted for the user's region,
    a short code or sender id without its prefix, an email address as it is."""
    kind = kind_of(sender)
    if kind == "phone":
        return format_phone(E164(sender), region)
    if kind == "sender_id":
        prefix, _, rest = sender.partition(":")
        return f"short code {rest}" if prefix == "short" else rest
    return sender


def _preview(text: str | None) -> str:
    collapsed = " ".join((text or "").split())
    if len(collapsed) <= PREVIEW_CHARS:
        return collapsed
    return collapsed[: PREVIEW_CHARS - 1] + "…"


def _summary(row: Any) -> dict[str, Any]:
    return {
        "message_id": row.id,
        "received_at": _aware(row.received_at).isoformat(),
        "subject": row.subject,
        "preview": _preview(row.text),
    }


def cards(
    db: Database,
    user_id: str,
    *,
    region: str,
    quarantine_days: int,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """One page of screener cards, the sender with the newest held message first.

    A card: the sender (canonical and as displayed), how many messages are held, the
    first and the latest (id, time, subject, preview), why the latest was held, and
    when the first will expire.
    """
    limit = max(1, min(limit, MAX_PAGE))
    m = messages_t.c
    newest = sa.func.max(m.id)
    stmt = (
        sa.select(
            m.sender,
            sa.func.count().label("held"),
            sa.func.min(m.id).label("first_id"),
            newest.label("latest_id"),
        )
        .where(m.user_id == user_id, m.folder == _HELD)
        .group_by(m.sender)
        .order_by(newest.desc())
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.having(newest < decode_cursor(cursor, "screener"))
    with db.read.connect() as conn:
        groups = list(conn.execute(stmt))
        more = len(groups) > limit
        groups = groups[:limit]
        wanted = {g.first_id for g in groups} | {g.latest_id for g in groups}
        rows: dict[str, Any] = {}
        ids = sorted(wanted)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            for row in conn.execute(
                sa.select(m.id, m.subject, m.text, m.reason, m.received_at, m.channel).where(
                    m.user_id == user_id, m.id.in_(chunk)
                )
            ):
                rows[row.id] = row
    keep = timedelta(days=quarantine_days)
    items = []
    for g in groups:
        first, latest = rows[g.first_id], rows[g.latest_id]
        items.append(
            {
                "sender": g.sender,
                "kind": kind_of(g.sender),
                "display": display_name(g.sender, region),
                "count": int(g.held),
                "channel": latest.channel,
                "reason": latest.reason,
                "first": _summary(first),
                "latest": _summary(latest),
                "expires_at": (_aware(first.received_at) + keep).isoformat(),
            }
        )
    return Page(items=items, next=encode_cursor("screener", groups[-1].latest_id) if more else None)


def _check_senders(senders: Sequence[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(senders))
    if not unique:
        raise ValueError("name at least one sender")
    if len(unique) > MAX_SENDERS:
        raise ValueError(f"at most {MAX_SENDERS} senders per decision")
    return unique


def _previous_entry(conn: sa.Connection, user_id: str, sender: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(trust_entries_t).where(
            trust_entries_t.c.user_id == user_id, trust_entries_t.c.address == sender
        )
    ).first()
    if row is None:
        return None
    return {
        "verdict": row.verdict,
        "source": row.source,
        "created_at": _aware(row.created_at).isoformat(),
    }


def _held_by_reason(conn: sa.Connection, user_id: str, sender: str) -> dict[str, list[str]]:
    by_reason: dict[str, list[str]] = {}
    for message_id, reason in conn.execute(
        sa.select(messages_t.c.id, messages_t.c.reason).where(
            messages_t.c.user_id == user_id,
            messages_t.c.sender == sender,
            messages_t.c.folder == _HELD,
        )
    ):
        by_reason.setdefault(reason, []).append(message_id)
    return by_reason


def _decide(db: Database, user_id: str, senders: Sequence[str], action: str) -> DecisionResult:
    unique = _check_senders(senders)
    verdict = TrustVerdict.TRUSTED if action == Action.ALLOW else TrustVerdict.BLOCKED
    source = Source.RELEASE if action == Action.ALLOW else Source.MANUAL
    now = datetime.now(UTC)
    record: list[dict[str, Any]] = []
    moved = 0
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        for sender in unique:
            held = _held_by_reason(conn, user_id, sender)
            if not held:
                # Only a card can be decided: this also keeps one user from learning
                # anything about senders that never wrote to them.
                raise NotFound(f"no held messages from {sender}")
            record.append(
                {
                    "sender": sender,
                    "previous": _previous_entry(conn, user_id, sender),
                    "moved": held,
                }
            )
            set_entry(conn, user_id, sender, verdict, source)
            update = messages_t.update().where(
                messages_t.c.user_id == user_id,
                messages_t.c.sender == sender,
                messages_t.c.folder == _HELD,
            )
            if action == Action.ALLOW:
                update = update.values(folder=str(Folder.INBOX), reason=REASON_RELEASED)
            else:
                update = update.values(folder=_DISCARDED)
            moved += conn.execute(update).rowcount
        decision_id = new_id("dec")
        conn.execute(
            screener_decisions_t.insert().values(
                id=decision_id,
                user_id=user_id,
                action=action,
                payload=json.dumps({"senders": record}, separators=(",", ":")),
                created_at=now,
                undone=False,
            )
        )
        events.record(
            conn,
            user_id,
            events.SCREENER_CHANGED,
            {"action": action, "decision_id": decision_id, "messages": moved},
        )
    return DecisionResult(decision_id, action, unique, moved)


def allow(db: Database, user_id: str, senders: Sequence[str]) -> DecisionResult:
    """Trust each sender and move all their held messages to the inbox, in one
    transaction. NotFound when a sender has no held messages (nothing is changed)."""
    return _decide(db, user_id, senders, Action.ALLOW)


def block(db: Database, user_id: str, senders: Sequence[str]) -> DecisionResult:
    """Block each sender and discard all their held messages, in one transaction; the
    messages are deleted once the undo window has passed."""
    return _decide(db, user_id, senders, Action.BLOCK)


def _restore_entry(
    conn: sa.Connection, user_id: str, sender: str, previous: dict[str, Any] | None
) -> None:
    t = trust_entries_t
    if previous is None:
        conn.execute(t.delete().where(t.c.user_id == user_id, t.c.address == sender))
        return
    set_entry(conn, user_id, sender, TrustVerdict(previous["verdict"]), previous["source"])
    conn.execute(
        t.update()
        .where(t.c.user_id == user_id, t.c.address == sender)
        .values(created_at=datetime.fromisoformat(previous["created_at"]))
    )


def undo(
    db: Database, user_id: str, *, window_seconds: int, now: datetime | None = None
) -> UndoResult:
    """Undo the user's latest decision if it is younger than ``window_seconds``: the
    trust entries are as they were, the messages it moved are held again (those the
    user has deleted since stay deleted). NothingToUndo otherwise."""
    cutoff = _now(now) - timedelta(seconds=window_seconds)
    d = screener_decisions_t.c
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        row = conn.execute(
            sa.select(screener_decisions_t)
            .where(d.user_id == user_id)
            .order_by(d.id.desc())
            .limit(1)
        ).first()
        if row is None or row.undone or _aware(row.created_at) < cutoff:
            raise NothingToUndo("there is no recent screener decision to undo")
        from_folder = str(Folder.INBOX) if row.action == Action.ALLOW else _DISCARDED
        restored = 0
        senders = []
        for entry in json.loads(row.payload)["senders"]:
            senders.append(entry["sender"])
            _restore_entry(conn, user_id, entry["sender"], entry["previous"])
            for reason, ids in entry["moved"].items():
                for start in range(0, len(ids), _IN_CHUNK):
                    restored += conn.execute(
                        messages_t.update()
                        .where(
                            messages_t.c.user_id == user_id,
                            messages_t.c.folder == from_folder,
                            messages_t.c.id.in_(ids[start : start + _IN_CHUNK]),
                        )
                        .values(folder=_HELD, reason=reason)
                    ).rowcount
        conn.execute(screener_decisions_t.update().where(d.id == row.id).values(undone=True))
        events.record(
            conn,
            user_id,
            events.SCREENER_CHANGED,
            {"action": "undo", "decision_id": row.id, "messages": restored},
        )
    return UndoResult(row.action, tuple(senders), restored)


def _delete_messages(
    db: Database, blobs: BlobStore, where: sa.ColumnElement[bool], batch: int
) -> int:
    """Delete the messages matching ``where`` (attachments and blobs too), ``batch`` per
    transaction so that ingest never waits long for the write lock."""
    deleted = 0
    while True:
        with db.write.begin() as conn:
            ids = list(conn.execute(sa.select(messages_t.c.id).where(where).limit(batch)).scalars())
            if not ids:
                return deleted
            digests = set(
                conn.execute(
                    sa.select(attachments_t.c.sha256).where(
                        attachments_t.c.message_id.in_(ids), attachments_t.c.sha256.is_not(None)
                    )
                ).scalars()
            )
            deleted += conn.execute(messages_t.delete().where(messages_t.c.id.in_(ids))).rowcount
        delete_unreferenced_blobs(db, blobs, digests)


def expire_held(
    db: Database,
    blobs: BlobStore,
    *,
    quarantine_days: int,
    now: datetime | None = None,
    batch: int = 500,
) -> int:
    """Delete held messages older than ``quarantine_days`` (every user); returns how many."""
    cutoff = _now(now) - timedelta(days=quarantine_days)
    where = sa.and_(messages_t.c.folder == _HELD, messages_t.c.received_at < cutoff)
    return _delete_messages(db, blobs, where, batch)


def purge_decisions(
    db: Database,
    blobs: BlobStore,
    *,
    window_seconds: int,
    now: datetime | None = None,
    batch: int = 500,
) -> int:
    """Forget decisions that can no longer be undone; the messages a block discarded
    are deleted then. Returns how many messages were deleted."""
    cutoff = _now(now) - timedelta(seconds=window_seconds)
    d = screener_decisions_t.c
    with db.read.connect() as conn:
        old = list(conn.execute(sa.select(screener_decisions_t).where(d.created_at < cutoff)))
    deleted = 0
    for row in old:
        if row.action == Action.BLOCK and not row.undone:
            ids = [
                message_id
                for entry in json.loads(row.payload)["senders"]
                for group in entry["moved"].values()
                for message_id in group
            ]
            for start in range(0, len(ids), batch):
                where = sa.and_(
                    messages_t.c.user_id == row.user_id,
                    messages_t.c.folder == _DISCARDED,
                    messages_t.c.id.in_(ids[start : start + batch]),
                )
                deleted += _delete_messages(db, blobs, where, batch)
        with db.write.begin() as conn:
            conn.execute(screener_decisions_t.delete().where(d.id == row.id))
    return deleted
