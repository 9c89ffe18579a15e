"""Durable-file helpers shared by the stores that keep files (blobs, the webhook
spool, export archives)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` durable: a file created, renamed or removed
    in it survives a power loss only once this returns."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_untouched_since(paths: Iterable[Path], cutoff: float) -> int:
    """Delete those of ``paths`` last modified before ``cutoff`` (a Unix time): files a
    killed writer left behind, since a writer at work keeps its file's time recent.
    Returns how many were deleted; one already gone is skipped."""
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
