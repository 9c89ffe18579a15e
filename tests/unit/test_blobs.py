"""The directory blob store (inbox.blobs) on real files: atomic, durable writes and
the clean-up of writes a crash cut short."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox.blobs import TEMP_PREFIX, DirectoryBlobStore, purge_stale_temps


def test_a_blob_is_stored_under_its_digest_with_no_temp_file_left(tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    digest = blobs.put(b"attachment bytes")
    assert blobs.get(digest) == b"attachment bytes"
    files = [p.relative_to(tmp_path / "blobs") for p in (tmp_path / "blobs").rglob("*")]
    assert sorted(str(f) for f in files if f.name.startswith(TEMP_PREFIX)) == []
    assert Path(digest[:2], digest[2:4], digest) in files


def test_a_new_blob_makes_its_directory_entries_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy on the real fsync (it still runs): which directories were synced.
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    root = tmp_path / "blobs"
    root.mkdir()
    digest = DirectoryBlobStore(root).put(b"x")
    leaf = root / digest[:2] / digest[2:4]
    # The file, then the new directories' parents (outermost first), then its own.
    assert synced[1:] == [str(root), str(root / digest[:2]), str(leaf)]
    synced.clear()
    DirectoryBlobStore(root).put(b"x")  # already stored: nothing written or synced
    assert synced == []


def test_stale_temp_files_are_purged_and_fresh_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    leaf = root / "ab" / "cd"
    leaf.mkdir(parents=True)
    stale, fresh = leaf / f"{TEMP_PREFIX}killed", leaf / f"{TEMP_PREFIX}writing"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    blob = leaf / ("abcd" + "0" * 60)
    blob.write_bytes(b"a stored blob, however old, is not a temp file")
    os.utime(blob, (old, old))
    removed = purge_stale_temps(root, older_than=timedelta(hours=1), now=datetime.now(UTC))
    assert removed == 1
    assert not stale.exists() and fresh.exists() and blob.exists()


def test_purging_a_missing_blob_directory_is_a_no_op(tmp_path: Path) -> None:
    assert purge_stale_temps(tmp_path / "none", older_than=timedelta(0), now=datetime.now(UTC)) == 0
