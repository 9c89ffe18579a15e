"""The webhook spool at run time: durable appends from webhook handlers, replay when
the database answers again.

A Twilio webhook answered ``5xx`` is a message Twilio drops (it retries only
connection failures and timeouts, and only with the ``#rc=``/``#rp=`` overrides).
So when the store cannot take a verified webhook - it raised ``StoreUnavailable``
or did not answer within ``[spool] store_timeout_s`` - the handler appends the
already verified form to this process's spool (inbox.spool), waits for the fsync,
and answers ``200``. The :class:`Replayer` feeds spooled records through the same
bridge code and ingest pipeline, in order; storing is idempotent on
(bridge, MessageSid), so a crash between a commit and the removal of its segment
replays without duplicates. While records wait, new webhooks are spooled behind
them (first in, first out), so a STOP spooled during an outage is never overtaken
by a START stored directly after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridges.base import CommandRunner, Ingest
from bridges.errors import BridgeError
from bridges.twilio import StatusUpdate, TwilioBridge, VerifiedSms
from config import SpoolSettings
from gateway.metrics import Metrics
from inbox.errors import SpoolError, SpoolFull, StoreUnavailable
from inbox.message import Outcome
from inbox.spool import Spool

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# A record that fails this many replay passes in a row while the database answers
# is not waiting for the database: it goes to dead.log instead of blocking every
# record behind it. Passes are replay_interval_s apart, so a short disturbance the
# liveness probe does not see (a deadlock, a failover) does not dead-letter it.
MAX_ATTEMPTS = 3
SMS, STATUS = "sms", "status"
# How often, in records, the spool's pending count is brought up to date during a drain.
_PROGRESS_EVERY = 64


@dataclass(frozen=True, slots=True)
class SpooledSms:
    pairs: tuple[tuple[str, str], ...]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SpooledStatus:
    update: StatusUpdate


Spooled = SpooledSms | SpooledStatus


def encode_sms(verified: VerifiedSms) -> bytes:
    """The verified form and its arrival time: enough to parse it again, nothing that
    needs the signing secret."""
    doc = {
        "v": FORMAT_VERSION,
        "kind": SMS,
        "bridge": "twilio",
        "received_at": verified.received_at.isoformat(),
        "pairs": [list(p) for p in verified.pairs],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def encode_status(update: StatusUpdate) -> bytes:
    doc = {
        "v": FORMAT_VERSION,
        "kind": STATUS,
        "bridge": "twilio",
        "sid": update.sid,
        "status": update.status,
        "error_code": update.error_code,
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes) -> Spooled:
    """Raises SpoolError for a record this version cannot read."""
    try:
        doc = json.loads(payload)
        if doc["v"] != FORMAT_VERSION or doc["bridge"] != "twilio":
            raise SpoolError(f"unknown spool record version {doc['v']!r}/{doc['bridge']!r}")
        if doc["kind"] == SMS:
            pairs = tuple((str(k), str(v)) for k, v in doc["pairs"])
            return SpooledSms(pairs, datetime.fromisoformat(doc["received_at"]))
        if doc["kind"] == STATUS:
            code = doc["error_code"]
            return SpooledStatus(
                StatusUpdate(
                    str(doc["sid"]), str(doc["status"]), None if code is None else int(code)
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolError(f"unreadable spool record ({type(exc).__name__})") from None
    raise SpoolError(f"unknown spool record kind {doc['kind']!r}")


class WebhookSpool:
    """This process's spool. Created with the app, opened when it starts (taking an
    instance slot under ``[spool] dir``), closed when it stops. Appends that arrive
    together share one write and one fsync."""

    def __init__(self, settings: SpoolSettings) -> None:
        self.settings = settings
        self._spool: Spool | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Store attempts that outlived store_timeout_s and were spooled: they may
        # still commit (a command in a pool thread, a message in the committer).
        self._stragglers: set[asyncio.Future[Any]] = set()

    @property
    def spool(self) -> Spool | None:
        return self._spool

    @property
    def pending(self) -> int:
        return self._spool.pending if self._spool is not None else 0

    @property
    def full(self) -> bool:
        return self._spool is not None and self._spool.bytes_used >= self.settings.max_bytes

    async def open(self) -> None:
        """Take a slot (SpoolBusy when none is free)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        loop = asyncio.get_running_loop()
        self._spool = await loop.run_in_executor(
            self._thread, Spool.open, self.settings.dir, self.settings.max_bytes
        )
        if self._spool.pending:
            log.warning(
                "spool %s holds %d message(s) from a previous run; replaying them",
                self._spool.path,
                self._spool.pending,
            )
        else:
            log.info("spool %s opened", self._spool.path)

    def track_straggler(self, attempt: asyncio.Future[Any]) -> None:
        """Remember a timed-out store attempt whose message was spooled: replay waits
        for it, so that a late commit of it can never land after a spooled record
        that came behind it (a BLOCK committing after the TRUST sent later)."""
        if attempt.done():
            return
        self._stragglers.add(attempt)
        attempt.add_done_callback(self._straggler_done)

    def _straggler_done(self, attempt: asyncio.Future[Any]) -> None:
        self._stragglers.discard(attempt)
        if not attempt.cancelled():
            # Its outcome no longer matters (the spooled copy is the one that counts);
            # taking the exception keeps asyncio from reporting it as never retrieved.
            attempt.exception()

    async def settle_stragglers(self) -> None:
        """Wait until every timed-out store attempt has finished, one way or another."""
        if self._stragglers:
            await asyncio.wait(set(self._stragglers))

    async def add(self, payload: bytes) -> None:
        """Returns once the record is on disk. Raises SpoolFull, or SpoolError when it
        could not be written."""
        if self._spool is None:
            raise SpoolError("the spool is not open")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(self._spool), name="spool-writer")
        await future

    async def _flush(self, spool: Spool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._queue[:]
                self._queue.clear()
                try:
                    written = await loop.run_in_executor(
                        self._thread, spool.append, [p for p, _ in batch]
                    )
                except Exception as exc:  # noqa: BLE001 - every waiter must get an answer
                    log.error("spool append failed: %s", exc)
                    written = -1
                for i, (_, future) in enumerate(batch):
                    if future.done():
                        continue
                    if i < written:
                        future.set_result(None)
                    elif written >= 0:
                        future.set_exception(SpoolFull("the spool is full"))
                    else:
                        future.set_exception(SpoolError("the spool could not be written"))
        finally:
            self._flusher = None

    async def seal(self) -> None:
        """Close the segment being appended to, after every append queued before."""
        if self._spool is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._spool.seal)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None


class _Unreplayable(Exception):
    """Raised when a spooled record can never be stored (unreadable, or refused by the
    bridge's checks): it goes to dead.log at once."""


class Replayer:
    """Stores spooled records once the database answers, oldest first, and removes
    each segment when all of it is stored. Also takes over the slots of processes
    that died without anyone taking their slot since."""

    def __init__(
        self,
        *,
        spool: WebhookSpool,
        bridge: TwilioBridge,
        ingest: Ingest,
        commands: CommandRunner | None,
        apply_status: Callable[[StatusUpdate], Awaitable[None]],
        database_up: Callable[[], Awaitable[bool]],
        metrics: Metrics,
    ) -> None:
        self._spool = spool
        self._settings = spool.settings
        self._bridge = bridge
        self._ingest = ingest
        self._commands = commands
        self._apply_status = apply_status
        self._database_up = database_up
        self._metrics = metrics
        # Progress through a segment survives a failed pass (the database went away
        # again) but not the process: a restart replays the segment from its start.
        self._progress: dict[Path, int] = {}
        self._attempts: dict[tuple[Path, int], int] = {}

    async def run(self) -> None:
        """Replay at start, then every ``replay_interval_s`` while the app runs."""
        while True:
            try:
                await self.replay_all()
            except (OSError, SpoolError):
                log.exception("spool replay failed; will retry")
            await asyncio.sleep(self._settings.replay_interval_s)

    async def replay_all(self) -> bool:
        """One pass over this process's spool, then orphaned slots. True when
        everything found was stored."""
        own = self._spool.spool
        if own is None:
            return False
        await self._spool.settle_stragglers()
        done = await self._drain(own, self._spool.seal)
        loop = asyncio.get_running_loop()
        orphans = await loop.run_in_executor(
            None,
            lambda: Spool.adopt_orphans(
                self._settings.dir, self._settings.max_bytes, exclude=own.path
            ),
        )
        for orphan in orphans:
            try:
                log.warning(
                    "spool %s was left by a process that died: %d message(s) to replay",
                    orphan.path,
                    orphan.pending,
                )
                done = await self._drain(orphan, None) and done
            finally:
                orphan.close()
                # Another process may drain this slot and a later one reuse its
                # segment names: what was learnt about them here must not outlive it.
                self._forget(orphan.path)
        return done

    def _forget(self, slot: Path) -> None:
        for segment in [p for p in self._progress if p.parent == slot]:
            del self._progress[segment]
        for key in [k for k in self._attempts if k[0].parent == slot]:
            del self._attempts[key]

    async def _drain(self, spool: Spool, seal: Callable[[], Awaitable[None]] | None) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            # Off the loop: the spool's mutex may be held through an append's fsync.
            sealed = await loop.run_in_executor(None, spool.sealed)
            if not sealed:
                if not spool.pending or seal is None:
                    return True
                # What waits is in the segment being appended to: close it, read it.
                await seal()
                sealed = await loop.run_in_executor(None, spool.sealed)
                if not sealed:
                    return True
            for segment in sealed:
                if not await self._drain_segment(spool, segment):
                    return False
                await loop.run_in_executor(None, spool.remove, segment)
                self._progress.pop(segment, None)

    async def _drain_segment(self, spool: Spool, segment: Path) -> bool:
        loop = asyncio.get_running_loop()
        read = await loop.run_in_executor(None, spool.read, segment)
        if read.torn:
            log.warning(
                "spool segment %s ends in a record cut short by a crash (never "
                "acknowledged); ignored",
                segment,
            )
        if read.corrupt_at is not None:
            self._metrics.spool_dead.inc()
        records = read.records
        i = self._progress.get(segment, 0)
        # One record at a time, in the order they were acknowledged: a STOP and the
        # START after it, or a BLOCK and the TRUST after it, must land in that order,
        # and nothing after a failed record may be stored before it.
        while i < len(records):
            failure = await self._replay_record(records[i])
            if failure is None:
                self._attempts.pop((segment, i), None)
                i += 1
            elif isinstance(failure, _Unreplayable):
                log.error("spooled record %d of %s cannot be stored: %s", i, segment, failure)
                await self._dead_letter(spool, records[i])
                i += 1
            elif isinstance(failure, TimeoutError) or not await self._database_up():
                break
            else:
                key = (segment, i)
                attempts = self._attempts.get(key, 0) + 1
                if attempts < MAX_ATTEMPTS:
                    # Try again on the next pass; the records behind it wait.
                    self._attempts[key] = attempts
                    log.warning(
                        "spooled record %d of %s failed with the database up (%s); "
                        "retrying on the next pass",
                        i,
                        segment,
                        type(failure).__name__,
                    )
                    break
                del self._attempts[key]
                log.error(
                    "spooled record %d of %s failed on %d passes with the database up; moved to %s",
                    i,
                    segment,
                    MAX_ATTEMPTS,
                    spool.path / "dead.log",
                )
                await self._dead_letter(spool, records[i])
                i += 1
            if i % _PROGRESS_EVERY == 0:
                await loop.run_in_executor(None, spool.mark_replayed, segment, i)
        self._progress[segment] = i
        await loop.run_in_executor(None, spool.mark_replayed, segment, i)
        return i >= len(records)

    async def _dead_letter(self, spool: Spool, payload: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, spool.dead_letter, payload)
        self._metrics.spool_dead.inc()

    async def _replay_record(self, payload: bytes) -> Exception | None:
        """None once the record is stored, else why it was not."""
        try:
            await self._replay_one(payload)
        except (_Unreplayable, StoreUnavailable, TimeoutError) as exc:
            return exc
        except Exception as exc:
            # A bug, not the database: retried on later passes, then dead-lettered.
            log.exception("replaying a spooled record failed unexpectedly")
            return exc
        return None

    async def _replay_one(self, payload: bytes) -> None:
        try:
            record = decode(payload)
        except SpoolError as exc:
            raise _Unreplayable(str(exc)) from None
        try:
            # A TimeoutError goes through as it is: the store is slow, not the record.
            async with asyncio.timeout(self._settings.store_timeout_s):
                if isinstance(record, SpooledStatus):
                    await self._apply_status(record.update)
                    self._metrics.spool_replayed.labels("twilio", STATUS).inc()
                    return
                await self._replay_sms(record)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store failed ({type(exc).__name__})") from None

    async def _replay_sms(self, record: SpooledSms) -> None:
        bridge = self._bridge
        try:
            verified = bridge.reparse_sms(record.pairs, record.received_at)
        except BridgeError as exc:
            raise _Unreplayable(str(exc)) from None
        _, result = await bridge.process_sms(verified, self._ingest, self._commands)
        if result.outcome is Outcome.COMMAND:
            log.info("a spooled SMS command ran; its reply cannot be sent any more")
        elif result.outcome is Outcome.UNROUTABLE:
            log.warning("spooled twilio message unroutable: %s", result.reason)
        self._metrics.count_inbound(bridge.name, result.outcome, duplicate=result.duplicate)
        self._metrics.spool_replayed.labels(bridge.name, SMS).inc()
