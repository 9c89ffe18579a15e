"""Group commit: many inbound messages share one transaction and one fsync.

A request handler awaits :meth:`GroupCommitter.submit`; one writer thread takes
everything queued, runs the caller's ``work`` function on the whole batch inside
one transaction, commits, and only then resolves each waiting future. So an
acknowledgement always follows a durable commit, while the cost of the commit
(and of SQLAlchemy's per-statement overhead) is shared by the batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
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
    loop: asyncio.AbstractEventLoop


_STOP = object()


class GroupCommitter(Generic[T, R]):
    """Runs ``work(conn, items) -> results`` for batches of up to ``max_batch`` items.

    If a batch fails, its items are retried one per transaction, so one poisonous
    item fails alone. A failure is delivered to the submitter as
    :class:`StoreUnavailable` (the original is logged, never shown to a client).
    """

    def __init__(
        self, engine: Engine, work: Work[T, R], *, max_batch: int = 256, name: str = "group-commit"
    ) -> None:
        self._engine = engine
        self._work = work
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._thread.start()

    async def submit(self, item: T) -> R:
        if self._closed:
            raise WriterClosed("the writer has been stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put(_Pending(item, future, loop))
        # Shielded: a client that disconnects must not cancel a commit under way; the
        # message is stored either way and a retry is answered from the stored row.
        return await asyncio.shield(future)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish everything already submitted, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Pending[T, R]] = [first]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            self._process(batch)

    def _process(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = self._transact([p.item for p in batch])
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            for pending in batch:
                try:
                    (result,) = self._transact([pending.item])
                except Exception as one_exc:  # noqa: BLE001 - reported to its submitter
                    self._fail(pending, one_exc)
                else:
                    self._resolve([(pending, result)])
            return
        self._resolve(list(zip(batch, results, strict=True)))

    def _transact(self, items: list[T]) -> Sequence[R]:
        with self._engine.begin() as conn:
            results = self._work(conn, items)
        self.batches += 1
        self.items += len(items)
        return results

    def _resolve(self, pairs: list[tuple[_Pending[T, R], R]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending[T, R], R]]] = {}
        for pending, result in pairs:
            by_loop.setdefault(pending.loop, []).append((pending, result))
        for loop, group in by_loop.items():
            # One wake-up of the event loop per batch, not per message.
            loop.call_soon_threadsafe(_set_results, group)

    def _fail(self, pending: _Pending[T, R], exc: BaseException) -> None:
        log.error("store write failed: %s", type(exc).__name__, exc_info=exc)
        error = StoreUnavailable("the message could not be stored")
        pending.loop.call_soon_threadsafe(_set_exception, pending.future, error)


def _set_results(group: list[tuple[_Pending[T, R], R]]) -> None:
    for pending, result in group:
        if not pending.future.done():
            pending.future.set_result(result)


def _set_exception(future: asyncio.Future[R], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
