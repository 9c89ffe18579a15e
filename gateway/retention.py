"""Retention: what the periodic job deletes, shared by `optmsg serve` and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from config import Settings
from inbox import raw_store
from inbox.blobs import BlobStore
from inbox.db import Database
from optin import screener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    expired: int  # held messages older than quarantine_days
    purged: int  # blocked messages whose undo window passed
    raw_deleted: int = 0  # processed raw emails no message refers to

    def as_json(self) -> dict[str, int]:
        return {"expired": self.expired, "purged": self.purged, "raw_deleted": self.raw_deleted}


def run_retention(
    settings: Settings, db: Database, blobs: BlobStore, now: datetime | None = None
) -> RetentionResult:
    expired = screener.expire_held(
        db, blobs, quarantine_days=settings.optin.quarantine_days, now=now
    )
    purged = screener.purge_decisions(
        db, blobs, window_seconds=settings.optin.undo_seconds, now=now
    )
    with db.write.begin() as conn:
        raw = raw_store.delete_unreferenced(conn)
    if expired or purged or raw:
        log.info(
            "retention: %d held messages expired, %d blocked messages purged, "
            "%d raw emails no message refers to deleted",
            expired,
            purged,
            raw,
        )
    return RetentionResult(expired, purged, raw)
