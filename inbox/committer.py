"""Group commit: many inbound messages share one transaction and one fsync.

Request handlers await :meth:`GroupCommitter.submit`. A drain task on the event
loop takes everything queued, runs the caller's ``work`` function on the whole
batch inside one transaction, commits, and only then resolves each waiting
future. An acknowledgement therefore always follows a durable commit, while the
cost of the commit (and of per-statement overhead) is shared by the batch;
whatever arrives during a commit forms the next batch.

Where each step runs is a measured choice (docs/architecture.md, "group commit").
On SQLite the statements run *on the event loop*: they are CPU work on local
pages, and on a thread every ``sqlite3`` call releases the GIL and must win it
back from the busy loop. The commit (one fdatasync) runs on a thread so that the
loop keeps reading requests meanwhile — committing on the loop measured 35 %
slower, because the loop then idles during every fsync and batches shrink.
Waiting for a lock held by another process (``BEGIN IMMEDIATE`` under contention)
also goes to the thread. PostgreSQL statements wait on the network, so there the
whole transaction runs on the thread (``inline=False``), in one hop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inbox.errors import StoreUnavailable, WriterClosed

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

Work = Callable[[sa.Connection, Sequence[T]], Sequence[R]]


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class GroupCommitter(Generic[T, R]):
    """Runs ``work(conn, items) -> results`` for batches of up to ``max_batch`` items.

    If a batch fails, its items are retried one per transaction, so one poisonous
    item fails alone. A failure reaches the submitter as :class:`StoreUnavailable`
    (the original is logged, never shown to a client). Use from one event loop.
    """

    def __init__(
        self,
        engine: Engine,
        work: Work[T, R],
        *,
        max_batch: int = 256,
        inline: bool | None = None,
        lock_timeout: float = 10.0,
        write_lock: asyncio.Lock | None = None,
        name: str = "group-commit",
        on_commit: Callable[[Sequence[R]], None] | None = None,
    ) -> None:
        self._engine = engine
        # Called on the event loop with a committed batch's results, before its
        # submitters resume (live notifications); it must not block or raise.
        self._on_commit = on_commit
        self._lock_timeout = lock_timeout
        # Committers of one process that write to the same SQLite file share this
        # lock and take turns on the loop; without it they would meet at SQLite's
        # write lock and the loser would poll for it (measured: half the batches of
        # two busy committers waited, up to 50 ms each).
        self._write_lock = write_lock if write_lock is not None else asyncio.Lock()
        self._conn: sa.Connection | None = None
        self._work = work
        self._max_batch = max_batch
        self._inline = engine.dialect.name == "sqlite" if inline is None else inline
        self._name = name
        self._pending: list[_Pending[T, R]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._closed = False
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        if self._inline:
            # One long-lived connection: no pool checkout per batch. It never waits
            # for the lock inside SQLite (that would block the event loop); a busy
            # BEGIN is retried on the thread instead (_begin_waiting).
            self._conn = self._engine.connect()
            driver = self._conn.connection.driver_connection
            driver.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]

    async def submit(self, item: T) -> R:
        if self._closed or self._thread is None:
            raise WriterClosed("the writer is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name=self._name)
        # If this request is cancelled (client gone) only its future is cancelled: the
        # item is committed all the same and a retry is answered from the stored row.
        return await future

    async def stop(self) -> None:
        """Commit everything already submitted, then release the thread."""
        self._closed = True
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._process(batch)
        finally:
            self._drainer = None

    async def _process(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = await self._transact([p.item for p in batch])
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            for pending in batch:
                try:
                    (result,) = await self._transact([pending.item])
                except Exception as one_exc:  # noqa: BLE001 - reported to its submitter
                    _fail(pending, one_exc)
                else:
                    _resolve(pending, result)
            return
        for pending, result in zip(batch, results, strict=True):
            _resolve(pending, result)

    async def _transact(self, items: list[T]) -> Sequence[R]:
        if self._inline:
            async with self._write_lock:
                results = await self._transact_inline(items)
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._thread, self._transact_blocking, items)
        self.batches += 1
        self.items += len(items)
        if self._on_commit is not None:
            try:
                self._on_commit(results)
            except Exception:  # the batch is committed whatever happens here
                log.exception("after-commit hook failed")
        return results

    async def _transact_inline(self, items: list[T]) -> Sequence[R]:
        """SQLite: the statements run on the event loop; the commit (an fsync) runs on
        the thread so that the loop keeps reading requests meanwhile, which then form
        the next batch."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None:
            raise WriterClosed("the writer is not running")
        try:
            trans = conn.begin()
        except sa.exc.OperationalError as exc:
            if not _is_locked(exc):
                raise
            trans = await loop.run_in_executor(self._thread, self._begin_waiting, conn)
        try:
            results = self._work(conn, items)
        except BaseException:
            _end(trans, commit=False)
            raise
        await loop.run_in_executor(self._thread, _end, trans, True)
        return results

    def _transact_blocking(self, items: list[T]) -> Sequence[R]:
        conn, trans = self._begin()
        try:
            results = self._work(conn, items)
        except BaseException:
            _finish(conn, trans, False)
            raise
        _finish(conn, trans, True)
        return results

    def _begin(self) -> tuple[sa.Connection, sa.RootTransaction]:
        conn = self._engine.connect()
        try:
            return conn, conn.begin()
        except BaseException:
            conn.close()
            raise

    def _begin_waiting(self, conn: sa.Connection) -> sa.RootTransaction:
        """Another process holds the write lock (the CLI, a migration): poll for it
        here, off the event loop, for up to the lock timeout."""
        deadline = time.monotonic() + self._lock_timeout
        pause = 0.001
        while True:
            try:
                return conn.begin()
            except sa.exc.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _is_locked(exc: sa.exc.OperationalError) -> bool:
    return "locked" in str(exc.orig) or "busy" in str(exc.orig)


def _end(trans: sa.RootTransaction, commit: bool) -> None:
    """Commit or roll back; a failed commit (disk full) is rolled back so that the
    long-lived connection is clean for the next batch."""
    if commit:
        try:
            trans.commit()
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
    elif trans.is_active:
        trans.rollback()


def _finish(conn: sa.Connection, trans: sa.RootTransaction, commit: bool) -> None:
    """Commit (or roll back) and return the connection to the pool, in one hop."""
    try:
        if commit:
            trans.commit()
        elif trans.is_active:
            trans.rollback()
    finally:
        conn.close()


def _resolve(pending: _Pending[T, R], result: R) -> None:
    if not pending.future.done():
        pending.future.set_result(result)


def _fail(pending: _Pending[T, R], exc: BaseException) -> None:
    log.error("store write failed: %s", type(exc).__name__, exc_info=exc)
    if not pending.future.done():
        pending.future.set_exception(StoreUnavailable("the message could not be stored"))
