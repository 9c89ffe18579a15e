"""Retention: what the periodic job deletes, shared by `optmsg serve` and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config import Settings
from gateway.jobs import EXPORT_TIME_LIMIT_MS
from inbox import events, export, leases, privacy_retention, raw_store
from inbox.blobs import BlobStore, purge_stale_temps
from inbox.db import Database
from optin import screener

log = logging.getLogger(__name__)

# A blob write takes well under a second; a temp file this old was abandoned.
BLOB_TEMP_AGE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    expired: int  # held messages older than quarantine_days
    purged: int  # blocked messages whose undo window passed
    raw_deleted: int = 0  # processed raw emails no message refers to
    ips_erased: int = 0  # auth log entries whose IP was older than privacy.ip_log_days
    exports_deleted: int = 0  # expired archives (file and row)
    verifications_deleted: int = 0  # sign-in codes used or expired over a day ago
    events_deleted: int = 0  # live-update events older than events.keep_hours
    flags_expired: int = 0  # abuse flags last seen over privacy.abuse_keep_days ago
    blob_temps_deleted: int = 0  # blob files left half-written by a crash

    def as_json(self) -> dict[str, int]:
        return {
            "expired": self.expired,
            "purged": self.purged,
            "raw_deleted": self.raw_deleted,
            "ips_erased": self.ips_erased,
            "exports_deleted": self.exports_deleted,
            "verifications_deleted": self.verifications_deleted,
            "events_deleted": self.events_deleted,
            "flags_expired": self.flags_expired,
            "blob_temps_deleted": self.blob_temps_deleted,
        }


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
    flags = privacy_retention.expire_flags(db, keep_days=settings.privacy.abuse_keep_days, now=now)
    ips = privacy_retention.purge_ips(db, keep_days=settings.privacy.ip_log_days, now=now)
    exports = export.purge_expired(
        db,
        export.exports_dir(Path(settings.storage.blob_dir)),
        ttl=timedelta(hours=settings.privacy.export_ttl_hours),
        build_time_limit=timedelta(milliseconds=EXPORT_TIME_LIMIT_MS),
        now=now,
    )
    codes = privacy_retention.purge_verifications(db, now=now)
    old_events = events.purge(db, keep_hours=settings.events.keep_hours, now=now)
    temps = purge_stale_temps(
        Path(settings.storage.blob_dir),
        older_than=BLOB_TEMP_AGE,
        now=now or datetime.now(UTC),
    )
    if temps:
        log.info("retention: %d blob files left half-written by a crash deleted", temps)
    if ips or exports or codes or flags:
        log.info(
            "retention: %d abuse flags expired, %d IP addresses erased from the auth log, "
            "%d expired exports deleted, %d old verification codes deleted",
            flags,
            ips,
            exports,
            codes,
        )
    if expired or purged or raw:
        log.info(
            "retention: %d held messages expired, %d blocked messages purged, "
            "%d raw emails no message refers to deleted",
            expired,
            purged,
            raw,
        )
    if old_events:
        log.info(
            "retention: %d live-update events older than the resume window deleted", old_events
        )
    return RetentionResult(expired, purged, raw, ips, exports, codes, old_events, flags, temps)


#: The lease that elects which gateway process runs retention in a period.
RETENTION_LEASE = "retention"
#: The holder renews every period; a lease this many periods long outlives one late
#: renewal but passes to another process soon after its holder dies.
LEASE_PERIODS = 1.5


def run_retention_if_elected(
    settings: Settings, db: Database, blobs: BlobStore, holder: str, now: datetime | None = None
) -> RetentionResult | None:
    """Run retention if ``holder`` holds (or now takes) the retention lease; None when
    another process does this period's run. Every gateway process calls this each
    ``optin.retention_interval_s``; one of them does the work."""
    ttl = timedelta(seconds=settings.optin.retention_interval_s * LEASE_PERIODS)
    if not leases.try_lease(db, RETENTION_LEASE, holder, ttl, now=now):
        return None
    return run_retention(settings, db, blobs, now=now)
