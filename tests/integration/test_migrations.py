"""Migrations: the schema they build is the schema the models describe, on both engines,
and concurrent upgrades serialise."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import inbox.models  # noqa: F401 - registers the tables
from config import Settings
from inbox.db import Database, open_database
from inbox.migrate import head_revision, is_current, upgrade


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.write.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": False}), SQLModel.metadata
        )
    assert diff == []


def test_upgrade_is_idempotent(db: Database) -> None:
    assert upgrade(db) == head_revision()
    assert is_current(db)


def test_concurrent_upgrades_of_a_fresh_database_both_succeed(settings: Settings) -> None:
    errors: list[BaseException] = []
    revisions: list[str] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        database = open_database(settings.database)
        try:
            barrier.wait()
            revisions.append(upgrade(database))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert revisions == [head_revision()] * 3
