"""Named leases in the database: one holder at a time across every process that
shares the store, so that a periodic job (retention, the IP purge, quarantine
expiry) runs once per period however many gateway processes there are.

A holder takes a free or expired lease, or renews its own, with one conditional
UPDATE: on PostgreSQL a second process's UPDATE waits for the first to commit and
then finds the lease taken; on SQLite writers are serialised anyway. A holder that
dies stops renewing and the lease passes to another process when it expires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from inbox.db import Database, as_utc
from inbox.models import leases_t


def try_lease(
    db: Database, name: str, holder: str, ttl: timedelta, now: datetime | None = None
) -> bool:
    """Whether ``holder`` holds lease ``name`` until ``now + ttl`` after this call
    (taken, renewed, or refused because another holder's lease has not expired)."""
    now = now or datetime.now(UTC)
    expires = now + ttl
    lease = leases_t.c
    with db.write.begin() as conn:
        taken = conn.execute(
            leases_t.update()
            .where(
                lease.name == name,
                sa.or_(lease.holder == holder, lease.expires_at <= now),
            )
            .values(holder=holder, expires_at=expires)
        ).rowcount
        if taken:
            return True
        exists = conn.execute(sa.select(lease.name).where(lease.name == name)).first()
        if exists is not None:
            return False
    # First use of this lease: whoever inserts the row first holds it.
    try:
        with db.write.begin() as conn:
            conn.execute(leases_t.insert().values(name=name, holder=holder, expires_at=expires))
    except sa.exc.IntegrityError:
        return False
    return True


def release(db: Database, name: str, holder: str) -> None:
    """Give the lease up at once (a process shutting down, a job done), if ``holder``
    has it. The row goes too, so that one-off leases (one per export) leave nothing."""
    lease = leases_t.c
    with db.write.begin() as conn:
        conn.execute(leases_t.delete().where(lease.name == name, lease.holder == holder))


def holder_of(db: Database, name: str, now: datetime | None = None) -> str | None:
    """The current holder of lease ``name``, or None when it is free or expired."""
    now = now or datetime.now(UTC)
    lease = leases_t.c
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(lease.holder, lease.expires_at).where(lease.name == name)
        ).first()
    if row is None:
        return None
    expires = as_utc(row.expires_at)
    return str(row.holder) if expires > now else None
