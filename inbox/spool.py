"""A durable local spool: append-only segment files of checksummed records.

The gateway writes a verified webhook here when the database cannot take it, and
acknowledges the provider only after the record is on disk (``fdatasync``). A
replayer later reads the records back in order, stores them, and removes each
segment once every record in it is stored (docs/architecture.md, "webhook spool").

Layout: ``<dir>/instance-<N>/`` is one process's spool, held with an exclusive
``flock`` on its ``lock`` file for as long as the process runs, so two processes
never append to the same files; a process takes the lowest free slot. The kernel
drops the lock when the process dies, even by ``kill -9``, so the next process to
open the directory takes the slot - and replays what is in it. Segments are
``seg-<number>.log``; records that can never be stored go to ``dead.log``.

A record is ``b"OMS1"``, the payload's length and its CRC-32 (big-endian 32-bit
each), then the payload. A crash in the middle of an append leaves a short or
unchecked record at the very end of the segment: it was never acknowledged and is
ignored. A record that fails its checksum with more data after it is corruption:
the rest of the segment is copied to ``corrupt-<segment>`` for the operator and
reported, never guessed at.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inbox.errors import SpoolBusy, SpoolError, SpoolFull
from inbox.files import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"OMS1"
_HEADER = struct.Struct(">4sII")
HEADER_BYTES = _HEADER.size
# A segment is read back whole; past this size appends start a new one.
SEGMENT_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_INSTANCES = 64
_SEGMENT = re.compile(r"^seg-(\d{12})\.log$")
LOCK_NAME = "lock"
DEAD_NAME = "dead.log"


def encode_record(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise SpoolError(f"a spool record is limited to {MAX_RECORD_BYTES} bytes")
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class SegmentRead:
    """The records of one segment in order. ``torn``: the last record was cut short by
    a crash (never acknowledged; ignored). ``corrupt_at``: offset of a record that
    failed its checksum with data after it; nothing from there on is returned."""

    records: tuple[bytes, ...]
    torn: bool
    corrupt_at: int | None


def decode_segment(data: bytes) -> SegmentRead:
    records: list[bytes] = []
    pos = 0
    size = len(data)
    while pos < size:
        if size - pos < HEADER_BYTES:
            return SegmentRead(tuple(records), True, None)
        magic, length, crc = _HEADER.unpack_from(data, pos)
        end = pos + HEADER_BYTES + length
        if magic != MAGIC or length > MAX_RECORD_BYTES:
            # A header that is not one: torn if nothing follows what could have been
            # a half-written record, otherwise corruption.
            if magic != MAGIC and not data[pos:].strip(b"\0"):
                return SegmentRead(tuple(records), True, None)
            return SegmentRead(tuple(records), False, pos)
        if end > size:
            return SegmentRead(tuple(records), True, None)
        payload = data[pos + HEADER_BYTES : end]
        if zlib.crc32(payload) != crc:
            if end == size:
                # The last write of a crashed process: its fsync never returned.
                return SegmentRead(tuple(records), True, None)
            return SegmentRead(tuple(records), False, pos)
        records.append(payload)
        pos = end
    return SegmentRead(tuple(records), False, None)


def _try_lock(slot: Path) -> int | None:
    """The open, exclusively locked lock file of ``slot``, or None if another process
    holds it."""
    slot.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(slot / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    # For the operator reading the directory: which process has it.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Spool:
    """One locked instance directory. Thread-safe: appends come from the webhook
    writer's thread, reads and removals from the replayer's."""

    def __init__(self, slot: Path, lock_fd: int, max_bytes: int) -> None:
        self.path = slot
        self.max_bytes = max_bytes
        self._lock_fd: int | None = lock_fd
        self._mutex = threading.Lock()
        self._counts: dict[Path, int] = {}
        self._sizes: dict[Path, int] = {}
        self._replayed: dict[Path, int] = {}
        self._active: Path | None = None
        self._active_fd: int | None = None
        self._next = 1
        # Kept as plain numbers, read without the mutex: the event loop asks for them
        # on every webhook and must never wait behind an append's fsync.
        self._pending = 0
        self._bytes = 0
        for segment in self.segments():
            read = decode_segment(segment.read_bytes())
            self._counts[segment] = len(read.records)
            self._sizes[segment] = segment.stat().st_size
            self._pending += len(read.records)
            self._bytes += self._sizes[segment]
            self._next = max(self._next, _number(segment) + 1)

    @classmethod
    def open(cls, root: Path, max_bytes: int, *, max_instances: int = MAX_INSTANCES) -> Spool:
        """Take the lowest free instance slot under ``root`` (SpoolBusy if none)."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for n in range(max_instances):
                slot = root / f"instance-{n}"
                fd = _try_lock(slot)
                if fd is not None:
                    return cls(slot, fd, max_bytes)
        except OSError as exc:
            raise SpoolBusy(f"spool directory {root} cannot be used: {exc.strerror}") from exc
        raise SpoolBusy(
            f"all {max_instances} instance slots of spool directory {root} are locked by "
            "running processes; give this process its own [spool] dir"
        )

    @classmethod
    def adopt_orphans(cls, root: Path, max_bytes: int, *, exclude: Path) -> list[Spool]:
        """Slots under ``root`` with records that no running process holds (their
        process died and none took the slot since): locked for the caller to replay,
        then close."""
        found: list[Spool] = []
        if not root.is_dir():
            return found
        for slot in sorted(root.glob("instance-*")):
            if slot == exclude or not any(_SEGMENT.match(p.name) for p in slot.iterdir()):
                continue
            fd = _try_lock(slot)
            if fd is not None:
                found.append(cls(slot, fd, max_bytes))
        return found

    # -- state ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records appended and not yet replayed."""
        return self._pending

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def segments(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if _SEGMENT.match(p.name))

    # -- appending -----------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> int:
        """Write the records that fit under ``max_bytes``, in order, and make them
        durable. Returns how many were written (the rest did not fit)."""
        with self._mutex:
            used = self._bytes
            encoded: list[bytes] = []
            for payload in payloads:
                record = encode_record(payload)
                if used + len(record) > self.max_bytes:
                    break
                used += len(record)
                encoded.append(record)
            if not encoded:
                return 0
            fd, segment = self._active_segment()
            data = b"".join(encoded)
            before = self._sizes[segment]
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fdatasync(fd)
            except OSError:
                # A disk-full half record must not sit in front of the next append.
                try:
                    os.ftruncate(fd, before)
                    os.lseek(fd, before, os.SEEK_SET)
                except OSError:
                    self._close_active()
                raise
            self._sizes[segment] = before + len(data)
            self._counts[segment] += len(encoded)
            self._bytes += len(data)
            self._pending += len(encoded)
            if self._sizes[segment] >= SEGMENT_BYTES:
                self._close_active()
            return len(encoded)

    def _active_segment(self) -> tuple[int, Path]:
        if self._active_fd is not None and self._active is not None:
            return self._active_fd, self._active
        segment = self.path / f"seg-{self._next:012d}.log"
        self._next += 1
        fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        # The new name must survive a crash as well as the records in it.
        fsync_dir(self.path)
        self._active, self._active_fd = segment, fd
        self._counts[segment] = 0
        self._sizes[segment] = 0
        return fd, segment

    def _close_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active = self._active_fd = None

    def seal(self) -> None:
        """Stop appending to the current segment, so that the replayer may read it."""
        with self._mutex:
            self._close_active()

    # -- replaying -----------------------------------------------------------

    def sealed(self) -> list[Path]:
        with self._mutex:
            return [p for p in sorted(self._counts) if p != self._active]

    def read(self, segment: Path) -> SegmentRead:
        read = decode_segment(segment.read_bytes())
        if read.corrupt_at is not None:
            aside = self.path / f"corrupt-{segment.name}"
            with segment.open("rb") as src:
                src.seek(read.corrupt_at)
                aside.write_bytes(src.read())
            log.error(
                "spool segment %s: record at byte %d fails its checksum; the rest of the "
                "segment is kept in %s and was not replayed",
                segment,
                read.corrupt_at,
                aside,
            )
        with self._mutex:
            # What was counted at open may include records that a reread now refuses.
            self._pending += len(read.records) - self._counts[segment]
            self._counts[segment] = len(read.records)
        return read

    def mark_replayed(self, segment: Path, count: int) -> None:
        with self._mutex:
            self._pending -= count - self._replayed.get(segment, 0)
            self._replayed[segment] = count

    def remove(self, segment: Path) -> None:
        """Every record of ``segment`` is stored: drop it for good."""
        with self._mutex:
            if segment == self._active:
                raise SpoolError("the segment being appended to cannot be removed")
            segment.unlink(missing_ok=True)
            fsync_dir(self.path)
            self._pending -= self._counts.pop(segment, 0) - self._replayed.pop(segment, 0)
            self._bytes -= self._sizes.pop(segment, 0)

    def dead_letter(self, payload: bytes) -> None:
        """Keep a record that cannot be stored for the operator, outside the queue."""
        path = self.path / DEAD_NAME
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                # requeue_dead_letters renames the file away under this lock: a
                # descriptor opened before that must not write into the file taken.
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, path):
                    continue
                os.write(fd, encode_record(payload))
                os.fdatasync(fd)
                return
            finally:
                os.close(fd)

    def close(self) -> None:
        """Release the slot (its records stay for the next process)."""
        with self._mutex:
            self._close_active()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@dataclass(frozen=True, slots=True)
class Requeued:
    """What :func:`requeue_dead_letters` did: ``records`` moved into ``slot``;
    ``kept`` names dead-letter files left in place because part of them could not
    be read (the readable records before the damage were moved)."""

    records: int
    slot: Path | None
    kept: tuple[Path, ...]


def requeue_dead_letters(root: Path, max_bytes: int) -> Requeued:
    """Move every dead letter under ``root`` back into a spool slot, for replay by a
    running gateway (within its ``replay_interval_s``) or the next one to start.

    Safe beside running gateways: each ``dead.log`` is renamed away under the lock
    its writer takes, so a record dead-lettered meanwhile starts a new file. The
    records are durable in the slot before their file is removed; a crash in
    between leaves them in both (replay is idempotent) and the file is taken again
    next time. A file damaged part-way is kept as ``dead.log.damaged-*`` for the
    operator once its readable records are moved. SpoolFull when the records do not
    fit under ``max_bytes``: those moved stay moved, the file that did not fit is
    kept as ``dead.log.full-*`` and taken again next time.
    """
    dead_files = [p for p in dead_letter_files(root) if ".damaged-" not in p.name]
    if not dead_files:
        return Requeued(0, None, ())
    target = Spool.open(root, max_bytes)
    moved = 0
    kept: list[Path] = []
    try:
        for dead in dead_files:
            taken = _take(dead)
            if taken is None:
                continue
            read = decode_segment(taken.read_bytes())
            if target.append(read.records) < len(read.records):
                os.replace(taken, dead.with_name(f"{DEAD_NAME}.full-{time.time_ns()}"))
                raise SpoolFull(
                    f"the dead letters do not fit in the spool's {max_bytes} bytes; "
                    f"{moved} were requeued, the rest are kept"
                )
            moved += len(read.records)
            if read.corrupt_at is not None:
                damaged = dead.with_name(f"{DEAD_NAME}.damaged-{time.time_ns()}")
                os.replace(taken, damaged)
                kept.append(damaged)
            else:
                taken.unlink()
            fsync_dir(dead.parent)
    finally:
        target.close()
    return Requeued(moved, target.path, tuple(kept))


def dead_letter_files(root: Path) -> list[Path]:
    """Every file under ``root`` holding dead letters: each slot's ``dead.log`` and
    what requeueing left of them (``.full-*``, ``.requeuing-*`` after a crash,
    ``.damaged-*``)."""
    if not root.is_dir():
        return []
    return sorted(root.glob(f"instance-*/{DEAD_NAME}*"))


def _take(dead: Path) -> Path | None:
    """Rename ``dead`` away while holding its writers' lock; the new path, or None if
    it is gone."""
    try:
        fd = os.open(dead, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _same_file(fd, dead):
            return None
        taken = dead.with_name(f"{DEAD_NAME}.requeuing-{time.time_ns()}")
        os.replace(dead, taken)
        return taken
    finally:
        os.close(fd)


def _number(segment: Path) -> int:
    match = _SEGMENT.match(segment.name)
    if match is None:
        raise SpoolError(f"not a spool segment: {segment}")
    return int(match.group(1))
