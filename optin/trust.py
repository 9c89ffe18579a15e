"""The user's trust list: trusted and blocked senders, by canonical address."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from inbox.addresses import (
    Address,
    EmailDomain,
    parse_email,
    parse_email_domain,
    parse_phone,
    parse_sender_id,
)
from inbox.db import Database
from inbox.errors import NotFound
from inbox.models import trust_entries_t, users_t
from inbox.store import MAX_PAGE, Page, decode_cursor, encode_cursor
from optin.decide import TrustVerdict
from optin.errors import TrustEntryNotFound

_IN_CHUNK = 500


class Source:
    MANUAL = "manual"
    CONTACTS = "contacts"
    SENT_TO = "sent_to"
    SMS_COMMAND = "sms_command"
    RELEASE = "release"


#: What a trust entry names: a phone number, an SMS sender id, an email address or a
#: whole email domain (``@example.com``).
TrustTarget = Address | EmailDomain


def parse_entry(text: str, region: str) -> TrustTarget:
    """Parse what a person typed as a sender to trust or block: a phone number in any
    common spelling (``region`` for numbers without a country code), an email address,
    ``@example.com`` for a whole domain, or an SMS sender id (``short:12345``,
    ``alpha:MYBANK``). Raises ``inbox.AddressError`` saying why when it is none."""
    candidate = text.strip()
    if candidate.startswith("@"):
        return parse_email_domain(candidate)
    if "@" in candidate:
        return parse_email(candidate)
    if candidate.lower().startswith(("short:", "alpha:")):
        return parse_sender_id(candidate)
    return parse_phone(candidate, region)


def kind_of(address: str) -> str:
    """``phone``, ``email``, ``domain`` or ``sender_id``."""
    if address.startswith("@"):
        return "domain"
    if "@" in address:
        return "email"
    if address.startswith(("short:", "alpha:")):
        return "sender_id"
    return "phone"


@dataclass(frozen=True, slots=True)
class TrustRecord:
    address: str
    verdict: TrustVerdict
    source: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": kind_of(self.address),
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


def add_if_absent(conn: sa.Connection, user_id: str, addresses: Iterable[str], source: str) -> int:
    """Trust each address that has no entry yet (within the caller's transaction);
    an existing entry, trusted or blocked, is left as it is. Returns how many were
    added. For automatic sources (contacts, sent-to), which must never undo a block."""
    wanted = sorted(set(addresses))
    if not wanted:
        return 0
    existing: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        existing.update(
            conn.execute(
                sa.select(trust_entries_t.c.address).where(
                    trust_entries_t.c.user_id == user_id, trust_entries_t.c.address.in_(chunk)
                )
            ).scalars()
        )
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": user_id,
            "address": address,
            "verdict": str(TrustVerdict.TRUSTED),
            "source": source,
            "created_at": now,
        }
        for address in wanted
        if address not in existing
    ]
    if rows:
        conn.execute(trust_entries_t.insert(), rows)
    return len(rows)


def note_sent_to(db: Database, user_id: str, address: Address) -> bool:
    """Auto-trust: the user sent a message to ``address``, so mail from it is wanted.
    Never overrides an entry the user made. Returns True when an entry was added."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        return add_if_absent(conn, user_id, [address], Source.SENT_TO) == 1


def add(
    db: Database,
    user_id: str,
    address: TrustTarget,
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


def remove(db: Database, user_id: str, address: TrustTarget) -> None:
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


def list_page(
    db: Database,
    user_id: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    verdict: TrustVerdict | None = None,
) -> Page:
    """One page of the user's entries in address order, as JSON objects."""
    limit = max(1, min(limit, MAX_PAGE))
    kind = f"trust:{verdict or 'all'}"
    stmt = (
        sa.select(trust_entries_t)
        .where(trust_entries_t.c.user_id == user_id)
        .order_by(trust_entries_t.c.address)
        .limit(limit + 1)
    )
    if verdict is not None:
        stmt = stmt.where(trust_entries_t.c.verdict == str(verdict))
    if cursor:
        stmt = stmt.where(trust_entries_t.c.address > decode_cursor(cursor, kind, 254))
    with db.read.connect() as conn:
        rows = list(conn.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        TrustRecord(r.address, TrustVerdict(r.verdict), r.source, r.created_at).as_json()
        for r in rows
    ]
    return Page(items=items, next=encode_cursor(kind, rows[-1].address) if more else None)
