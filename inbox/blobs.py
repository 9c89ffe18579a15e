"""Content-addressed blob store: attachments live in files named by their SHA-256.

A small interface so that an object store can replace the directory later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from inbox.files import delete_untouched_since, fsync_dir

# Prefix of a blob being written; one left behind was cut short by a crash.
TEMP_PREFIX = ".tmp-"


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def open(self, digest: str) -> BinaryIO: ...
    def delete(self, digest: str) -> None: ...
    def exists(self, digest: str) -> bool: ...


class DirectoryBlobStore:
    """Blobs under ``root/ab/cd/abcd…``; writes are atomic (temp file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        # Directories made here, outermost first: their entries must be durable too.
        created = [d for d in (self.root, path.parent.parent, path.parent) if not d.is_dir()]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory is: a message row committed
        # after put() returns must not refer to a blob a power loss can take back.
        for directory in [*(d.parent for d in created), path.parent]:
            fsync_dir(directory)
        return digest

    def get(self, digest: str) -> bytes:
        return self._path(digest).read_bytes()

    def open(self, digest: str) -> BinaryIO:
        """The blob for reading in chunks (an export copies large files this way)."""
        return self._path(digest).open("rb")

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)


def purge_stale_temps(root: Path, *, older_than: timedelta, now: datetime) -> int:
    """Delete blob temp files last written more than ``older_than`` ago: their write
    was cut short by a crash (kill -9, power loss) and nothing refers to them. A write
    in progress keeps its file's modification time recent."""
    if not root.is_dir():
        return 0
    return delete_untouched_since(
        root.glob(f"??/??/{TEMP_PREFIX}*"), (now - older_than).timestamp()
    )
