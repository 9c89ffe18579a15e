"""The user's trust list: trusted and blocked senders, by canonical address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from inbox.addresses import Address
from inbox.db import Database
from inbox.errors import NotFound
from inbox.models import trust_entries_t, users_t
from optin.decide import TrustVerdict
from optin.errors import TrustEntryNotFound


class Source:
    MANUAL = "manual"
    CONTACTS = "contacts"
    SENT_TO = "sent_to"
    SMS_COMMAND = "sms_command"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class TrustRecord:
    address: str
    verdict: TrustVerdict
    source: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "verdict": str(self.verdict),
            "source": self.source,
            "created_at": self.created_at.isoformat(),
        }


def lock_user(conn: sa.Connection, user_id: str) -> None:
    """Lock the user's row (PostgreSQL) so that ingest batches for this user, which
    share-lock it, see this change entirely or not at all; raise NotFound if absent."""
    stmt = sa.select(users_t.c.id).where(users_t.c.id == user_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    if conn.execute(stmt).first() is None:
        raise NotFound(f"no user {user_id}")


def set_entry(
    conn: sa.Connection, user_id: str, address: str, verdict: TrustVerdict, source: str
) -> None:
    """Insert or replace the user's entry for ``address`` (within the caller's transaction)."""
    values = {
        "user_id": user_id,
        "address": address,
        "verdict": str(verdict),
        "source": source,
        "created_at": datetime.now(UTC),
    }
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        trust_entries_t
    )
    stmt = insert.values(**values).on_conflict_do_update(
        index_elements=["user_id", "address"],
        set_={"verdict": values["verdict"], "source": source, "created_at": values["created_at"]},
    )
    conn.execute(stmt)


def add(
    db: Database,
    user_id: str,
    address: Address,
    verdict: TrustVerdict = TrustVerdict.TRUSTED,
    source: str = Source.MANUAL,
) -> TrustRecord:
    """Trust (or block) ``address`` for the user; the same address twice is one entry."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        set_entry(conn, user_id, address, verdict, source)
    return get(db, user_id, address)


def get(db: Database, user_id: str, address: str) -> TrustRecord:
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(trust_entries_t).where(
                trust_entries_t.c.user_id == user_id, trust_entries_t.c.address == address
            )
        ).first()
    if row is None:
        raise TrustEntryNotFound(f"{address} is not on the list")
    return TrustRecord(row.address, TrustVerdict(row.verdict), row.source, row.created_at)


def remove(db: Database, user_id: str, address: Address) -> None:
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        deleted = conn.execute(
            trust_entries_t.delete().where(
                trust_entries_t.c.user_id == user_id, trust_entries_t.c.address == address
            )
        ).rowcount
    if not deleted:
        raise TrustEntryNotFound(f"{address} is not on the list")


def list_entries(db: Database, user_id: str) -> list[TrustRecord]:
    with db.read.connect() as conn:
        if conn.execute(sa.select(users_t.c.id).where(users_t.c.id == user_id)).first() is None:
            raise NotFound(f"no user {user_id}")
        rows = conn.execute(
            sa.select(trust_entries_t)
            .where(trust_entries_t.c.user_id == user_id)
            .order_by(trust_entries_t.c.address)
        )
        return [
            TrustRecord(r.address, TrustVerdict(r.verdict), r.source, r.created_at) for r in rows
        ]
