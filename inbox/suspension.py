"""Account suspension by an operator ("breach of terms").

A suspended account keeps its data but cannot use the client API (403), cannot
send, and its inbound messages are held in quarantine with :data:`HELD_REASON`
instead of reaching the inbox. The operator can still export its data, and
unsuspending restores everything as it was (held messages stay in quarantine for
the user to review, like any other held message).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from inbox import store
from inbox.db import Database
from inbox.errors import NotFound
from inbox.models import users_t

HELD_REASON = "held: account suspended"


def set_suspended(
    db: Database, user_id: str, suspended: bool, now: datetime | None = None
) -> store.UserRecord:
    """Suspend (keeping the first suspension's time if it already is) or unsuspend;
    NotFound for an unknown user. Returns the user as it is now."""
    u = users_t.c
    with db.write.begin() as conn:
        if conn.execute(sa.select(u.id).where(u.id == user_id)).first() is None:
            raise NotFound(f"no user {user_id}")
        stmt = users_t.update().where(u.id == user_id)
        if suspended:
            when = now or datetime.now(UTC)
            stmt = stmt.where(u.suspended_at.is_(None)).values(suspended_at=when)
        else:
            stmt = stmt.values(suspended_at=None)
        conn.execute(stmt)
    return store.get_user(db, user_id)


def is_suspended(conn: sa.Connection, user_id: str) -> bool:
    """Whether the user is suspended (False for no such user), in the caller's
    transaction: every path that sends on a user's behalf asks this first."""
    found = conn.execute(
        sa.select(users_t.c.id).where(users_t.c.id == user_id, users_t.c.suspended_at.is_not(None))
    ).first()
    return found is not None
