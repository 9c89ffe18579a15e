"""Leases: one holder at a time across processes (SQLite file and PostgreSQL), so
that periodic jobs run once per period however many gateway processes there are."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from config import Settings
from gateway.retention import RETENTION_LEASE, run_retention_if_elected
from inbox import leases
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database
from inbox.models import leases_t

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=90)


def test_the_first_holder_takes_a_new_lease(db: Database) -> None:
    assert leases.try_lease(db, "job", "a", TTL, now=T0)
    assert leases.holder_of(db, "job", now=T0) == "a"


def test_another_holder_is_refused_while_the_lease_runs(db: Database) -> None:
    leases.try_lease(db, "job", "a", TTL, now=T0)
    assert not leases.try_lease(db, "job", "b", TTL, now=T0 + TTL - timedelta(seconds=1))
    assert leases.holder_of(db, "job", now=T0) == "a"


def test_the_holder_renews_its_own_lease(db: Database) -> None:
    leases.try_lease(db, "job", "a", TTL, now=T0)
    assert leases.try_lease(db, "job", "a", TTL, now=T0 + timedelta(seconds=60))
    # Renewed: still a's after the first term would have ended.
    assert not leases.try_lease(db, "job", "b", TTL, now=T0 + TTL + timedelta(seconds=1))


def test_an_expired_lease_passes_to_the_next_holder(db: Database) -> None:
    leases.try_lease(db, "job", "a", TTL, now=T0)
    assert leases.try_lease(db, "job", "b", TTL, now=T0 + TTL)
    assert leases.holder_of(db, "job", now=T0 + TTL) == "b"
    assert not leases.try_lease(db, "job", "a", TTL, now=T0 + TTL)


def test_a_released_lease_is_free_at_once(db: Database) -> None:
    leases.try_lease(db, "job", "a", TTL, now=T0)
    leases.release(db, "job", "a")
    assert leases.holder_of(db, "job", now=T0) is None
    assert leases.try_lease(db, "job", "b", TTL, now=T0)


def test_only_the_holder_can_release(db: Database) -> None:
    leases.try_lease(db, "job", "a", TTL, now=T0)
    leases.release(db, "job", "b")
    assert leases.holder_of(db, "job", now=T0) == "a"


def test_leases_of_different_names_are_independent(db: Database) -> None:
    assert leases.try_lease(db, "one", "a", TTL, now=T0)
    assert leases.try_lease(db, "two", "b", TTL, now=T0)


def _race(db: Database, holders: int, now: datetime) -> list[str]:
    winners: list[str] = []
    start = threading.Barrier(holders)

    def attempt(name: str) -> None:
        start.wait()
        if leases.try_lease(db, "job", name, TTL, now=now):
            winners.append(name)

    threads = [threading.Thread(target=attempt, args=(f"h{i}",)) for i in range(holders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners


def test_concurrent_first_takers_get_exactly_one_winner(db: Database) -> None:
    assert len(_race(db, 8, T0)) == 1


def test_concurrent_takers_of_an_expired_lease_get_exactly_one_winner(db: Database) -> None:
    leases.try_lease(db, "job", "old", TTL, now=T0)
    winners = _race(db, 8, T0 + 2 * TTL)
    assert len(winners) == 1 and winners[0] != "old"


def test_retention_runs_in_one_process_per_period(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    period = timedelta(seconds=settings.optin.retention_interval_s)
    first = run_retention_if_elected(settings, db, blobs, "gw-1", now=T0)
    second = run_retention_if_elected(settings, db, blobs, "gw-2", now=T0)
    assert first is not None and second is None
    # Next period: the holder runs again, the other still does not.
    assert run_retention_if_elected(settings, db, blobs, "gw-1", now=T0 + period) is not None
    assert run_retention_if_elected(settings, db, blobs, "gw-2", now=T0 + period) is None
    assert leases.holder_of(db, RETENTION_LEASE, now=T0 + period) == "gw-1"


def test_retention_passes_to_another_process_when_its_holder_stops(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    period = timedelta(seconds=settings.optin.retention_interval_s)
    run_retention_if_elected(settings, db, blobs, "gw-1", now=T0)
    # gw-1 died: no renewal. Within two periods gw-2 takes over.
    assert run_retention_if_elected(settings, db, blobs, "gw-2", now=T0 + 2 * period) is not None


def test_a_released_lease_leaves_no_row(db: Database) -> None:
    leases.try_lease(db, "export:exp_1", "a", TTL, now=T0)
    leases.release(db, "export:exp_1", "a")
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(leases_t)).scalar_one() == 0
