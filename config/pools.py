"""How many database connections a process needs at once, and the start-up check that
its pool can open that many.

Each SQLAlchemy engine keeps ``database.pool_size`` connections and may open
``database.max_overflow`` more; a thread that finds none free waits
``database.pool_timeout_s`` and then fails its work. So a process whose threads can
hold more connections at once than the pool allows stalls under load, and the cause
is far from the symptom. We refuse to start instead, naming the key to change.

Who holds a connection:

- a gateway (``optmsg serve``): its read threads (``database.pool_size`` of them, one
  connection each while they run), the event loop (SQLite's inline reads, see
  ``database.inline_reads``), one connection per group committer held for the life
  of the process (the inbound writer; with SMTP also the raw-mail spool and its
  "done" marker), with SMTP the email threads that parse and read raw mail back,
  and, unless ``--no-worker``, ``worker.threads`` job threads;
- a worker (``optmsg worker``): ``worker.threads`` job threads.

On PostgreSQL all of them share one engine. SQLite has a read and a write engine of
the same size, so the same check is conservative there.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import ConfigError
from config.settings import Settings

# Group committers of a gateway, each holding one connection (gateway.app, gateway.mail).
INGEST_WRITERS = 1
SMTP_WRITERS = 2
# gateway.mail's thread pool for parsing and reading raw email (uses this constant).
EMAIL_DB_THREADS = 4


@dataclass(frozen=True, slots=True)
class PoolNeed:
    """Connections one process may hold at once, by who holds them."""

    role: str
    read_threads: int
    event_loop: int
    writers: int
    email_threads: int
    job_threads: int

    @property
    def total(self) -> int:
        return (
            self.read_threads
            + self.event_loop
            + self.writers
            + self.email_threads
            + self.job_threads
        )

    def describe(self) -> str:
        parts = [
            f"{self.read_threads} read threads (database.pool_size)" if self.read_threads else "",
            f"{self.event_loop} event loop" if self.event_loop else "",
            f"{self.writers} writers" if self.writers else "",
            f"{self.email_threads} email threads" if self.email_threads else "",
            f"{self.job_threads} job threads (worker.threads)" if self.job_threads else "",
        ]
        return " + ".join(p for p in parts if p)


def gateway_need(settings: Settings, *, worker: bool) -> PoolNeed:
    """What ``optmsg serve`` holds; ``worker``: it runs jobs in-process too."""
    smtp = settings.smtp.enabled
    return PoolNeed(
        role="optmsg serve" if worker else "optmsg serve --no-worker",
        read_threads=settings.database.pool_size,
        event_loop=1,
        writers=INGEST_WRITERS + (SMTP_WRITERS if smtp else 0),
        email_threads=EMAIL_DB_THREADS if smtp else 0,
        job_threads=settings.worker.threads if worker else 0,
    )


def worker_need(settings: Settings) -> PoolNeed:
    """What ``optmsg worker`` holds."""
    return PoolNeed(
        role="optmsg worker",
        read_threads=0,
        event_loop=0,
        writers=0,
        email_threads=0,
        job_threads=settings.worker.threads,
    )


def pool_capacity(settings: Settings) -> int:
    """Connections one engine may open at once."""
    return settings.database.pool_size + settings.database.max_overflow


def check_pool(settings: Settings, need: PoolNeed) -> None:
    """Raise :class:`ConfigError` (key ``database.max_overflow``) when ``need`` is more
    than the pool can open."""
    capacity = pool_capacity(settings)
    if need.total <= capacity:
        return
    raise ConfigError(
        "database.max_overflow",
        f"{need.role} may hold {need.total} database connections at once "
        f"({need.describe()}) but database.pool_size + database.max_overflow allow "
        f"{capacity}; set database.max_overflow to at least "
        f"{need.total - settings.database.pool_size} or lower worker.threads",
    )
