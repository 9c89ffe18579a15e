"""Apply alembic migrations; safe to run from several processes at once.

SQLite: the migration runs inside one ``BEGIN IMMEDIATE`` transaction, so a second
process waits for the write lock and then finds the schema at head. WAL mode is
persistent in the file, so it is set here once rather than by every connection
(two processes racing to set it on a new file can fail with "database is locked").
PostgreSQL: a transaction-level advisory lock serialises concurrent upgrades.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from inbox.db import Database

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x6F70746D7367  # "optmsg"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def _set_wal(db: Database) -> None:
    deadline = time.monotonic() + 30
    while True:
        # A raw DBAPI connection: SQLAlchemy would wrap the PRAGMA in a transaction,
        # inside which SQLite refuses to change the journal mode.
        raw = db.write.raw_connection()
        try:
            cur = raw.cursor()
            mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            cur.close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            raw.close()


def upgrade(db: Database) -> str:
    """Bring the schema to head; returns the revision now current."""
    if db.is_sqlite:
        _set_wal(db)
    cfg = _alembic_config()
    with db.write.begin() as conn:
        if not db.is_sqlite:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        return current_revision_on(conn) or ""


def current_revision_on(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations are installed: the package is incomplete")
    return head


def is_current(db: Database) -> bool:
    with db.read.connect() as conn:
        return current_revision_on(conn) == head_revision()
