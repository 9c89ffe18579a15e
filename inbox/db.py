"""Engines for the store: one for reads, one for writes.

SQLite (WAL) serialises writers; a write transaction that starts as a reader and
upgrades later can fail with SQLITE_BUSY_SNAPSHOT no matter the busy timeout, so
every write transaction begins ``IMMEDIATE`` (takes the write lock up front, waiting
up to the busy timeout). Reads use a separate engine with deferred transactions so
that they never queue behind the writer. PostgreSQL uses one engine for both.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import DatabaseSettings


@dataclass(frozen=True)
class Database:
    """The store's engines. ``write`` is also the engine migrations run on."""

    url: str
    read: Engine
    write: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.write.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.read.dispose()
        if self.write is not self.read:
            self.write.dispose()


def sqlalchemy_url(url: str) -> str:
    """Map the operator-facing URL onto the driver we ship (psycopg 3 for PostgreSQL)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    return None if path in ("", ":memory:") else Path(path)


def _sqlite_engine(
    url: str, settings: DatabaseSettings, begin: str, *, autocheckpoint: bool = True
) -> Engine:
    engine = sa.create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        # The most recently used connection first: its page cache is the warm one
        # (each SQLite connection has its own).
        pool_use_lifo=True,
        connect_args={"timeout": settings.busy_timeout_ms / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed (and so acknowledged) message survives power loss, not only
        # a process crash. Group commit pays for the extra fsync.
        cur.execute("PRAGMA synchronous = FULL")
        # A page cache that holds the hot indexes (64 MiB) and reads through mmap: the
        # ingest path inserts into four b-trees per message, and page misses turn into
        # read() calls on the event loop.
        cur.execute("PRAGMA cache_size = -65536")
        cur.execute("PRAGMA mmap_size = 268435456")
        if not autocheckpoint:
            # The committing connection would otherwise copy the WAL into the database
            # (and fsync it) inside a commit every 1000 pages, stalling every webhook
            # waiting on that commit; checkpoint() runs it beside the writer instead.
            cur.execute("PRAGMA wal_autocheckpoint = 0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Straight to the driver: SQLAlchemy's execution path (events, result
        # objects) costs more than the statement, once per write batch.
        driver = conn.connection.driver_connection
        try:
            driver.execute(begin)  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            # Callers handle SQLAlchemy's exceptions (a busy lock is retried).
            raise sa.exc.DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc

    return engine


# libpq options: a database that is down must fail a store within seconds, so that a
# webhook is spooled well inside Twilio's 15 s timeout (gateway.spool_replay).
# connect_timeout bounds a connect to a host that does not answer; tcp_user_timeout
# (ms) a send nobody acknowledges; the keepalives a connection whose peer vanished
# while we waited for a reply (5 s idle + 2 probes 2 s apart).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 3,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
}


def open_database(settings: DatabaseSettings, *, background_checkpoint: bool = False) -> Database:
    """Open the engines. ``background_checkpoint``: SQLite's WAL is folded back into
    the database by periodic :func:`checkpoint` calls, not by the committing writer
    (long-running servers); short-lived commands keep SQLite's automatic checkpoint."""
    url = sqlalchemy_url(settings.url)
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        write = _sqlite_engine(
            url, settings, "BEGIN IMMEDIATE", autocheckpoint=not background_checkpoint
        )
        read = _sqlite_engine(url, settings, "BEGIN")
        return Database(url=url, read=read, write=write)
    engine = sa.create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        connect_args=PG_CONNECT_ARGS,
    )
    return Database(url=url, read=engine, write=engine)


def checkpoint(db: Database) -> None:
    """SQLite: copy committed WAL frames into the database without blocking writers
    (PASSIVE). A no-op on PostgreSQL."""
    if not db.is_sqlite:
        return
    raw = db.read.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        raw.close()


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime: every time is stored in UTC, and
    SQLite hands it back naive."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
