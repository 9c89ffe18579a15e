"""A user's uploaded address book in the store: import, list, opt in, delete.

Parsing lives in :mod:`optin.contacts`; this module stores what it produced. An import
is one transaction (all of the file's good contacts or none); opting contacts in never
overrides an entry the user made (a blocked number stays blocked); deleting the address
book deletes every contact and, on request, the trust entries that came only from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from inbox.db import Database
from inbox.errors import NotFound
from inbox.ids import looks_like_id, new_id
from inbox.models import contacts_t, trust_entries_t
from inbox.store import MAX_PAGE, Page, decode_cursor, encode_cursor
from optin.contacts import ContactsTooLarge, ImportReport
from optin.trust import Source, add_if_absent, lock_user

_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    report: ImportReport

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.report.format,
            "imported": self.imported,
            "rejected": [
                {
                    "position": r.line_or_index,
                    "name": r.name,
                    "value": r.value,
                    "reason": r.reason,
                }
                for r in self.report.rejected
            ],
        }


def _contact_json(row: Any) -> dict[str, Any]:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return {
        "id": row.id,
        "name": row.name,
        "phones": json.loads(row.phones),
        "emails": json.loads(row.emails),
        "created_at": created.isoformat(),
    }


def import_contacts(
    db: Database, user_id: str, report: ImportReport, *, max_contacts: int
) -> ImportResult:
    """Add the report's contacts to the user's address book, all or nothing.
    ContactsTooLarge when the address book would hold more than ``max_contacts``."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": new_id("con"),
            "user_id": user_id,
            "name": c.name,
            "phones": json.dumps(list(c.phones)),
            "emails": json.dumps(list(c.emails)),
            "created_at": now,
        }
        for c in report.contacts
    ]
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        held = conn.execute(
            sa.select(sa.func.count())
            .select_from(contacts_t)
            .where(contacts_t.c.user_id == user_id)
        ).scalar_one()
        if held + len(rows) > max_contacts:
            raise ContactsTooLarge(
                f"the address book would hold {held + len(rows):,} contacts; "
                f"the limit is {max_contacts:,}",
                max_contacts,
            )
        if rows:
            conn.execute(contacts_t.insert(), rows)
    return ImportResult(len(rows), report)


def list_page(db: Database, user_id: str, *, limit: int = 50, cursor: str | None = None) -> Page:
    """One page of the user's contacts, in the order they were imported."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = (
        sa.select(contacts_t)
        .where(contacts_t.c.user_id == user_id)
        .order_by(contacts_t.c.id)
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.where(contacts_t.c.id > decode_cursor(cursor, "contacts"))
    with db.read.connect() as conn:
        rows = list(conn.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_contact_json(r) for r in rows]
    return Page(items=items, next=encode_cursor("contacts", rows[-1].id) if more else None)


def opt_in(db: Database, user_id: str, contact_ids: Sequence[str] | None = None) -> int:
    """Trust every number and address of the named contacts (all contacts when
    ``contact_ids`` is None). NotFound if an id is not one of the user's contacts,
    and then nothing is trusted. Returns how many trust entries were added."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        stmt = sa.select(contacts_t.c.id, contacts_t.c.phones, contacts_t.c.emails).where(
            contacts_t.c.user_id == user_id
        )
        if contact_ids is None:
            rows = list(conn.execute(stmt))
        else:
            wanted = set(contact_ids)
            if not all(looks_like_id("con", cid) for cid in wanted):
                raise NotFound("no such contact")
            ids = sorted(wanted)
            rows = []
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                rows.extend(conn.execute(stmt.where(contacts_t.c.id.in_(chunk))))
            if len(rows) != len(wanted):
                raise NotFound("no such contact")
        addresses = [a for r in rows for a in (*json.loads(r.phones), *json.loads(r.emails))]
        return add_if_absent(conn, user_id, addresses, Source.CONTACTS)


def delete_all(db: Database, user_id: str, *, untrust: bool = False) -> tuple[int, int]:
    """Delete the whole address book; with ``untrust`` also the trust entries whose
    source is the address book (entries the user made or changed stay). Returns
    (contacts deleted, trust entries deleted)."""
    with db.write.begin() as conn:
        lock_user(conn, user_id)
        contacts = conn.execute(contacts_t.delete().where(contacts_t.c.user_id == user_id))
        entries = 0
        if untrust:
            entries = conn.execute(
                trust_entries_t.delete().where(
                    trust_entries_t.c.user_id == user_id,
                    trust_entries_t.c.source == Source.CONTACTS,
                )
            ).rowcount
    return contacts.rowcount, entries
