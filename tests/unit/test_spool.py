"""The spool's file format and slots (inbox.spool), on real files."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridges.twilio import VerifiedSms
from gateway.spool_replay import SpooledSms, decode, encode_sms
from inbox.errors import SpoolBusy, SpoolError, SpoolFull
from inbox.spool import (
    HEADER_BYTES,
    MAGIC,
    Requeued,
    Spool,
    dead_letter_files,
    decode_segment,
    encode_record,
    requeue_dead_letters,
)

MAX = 1024 * 1024


def _records(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    for segment in spool.sealed():
        out.extend(spool.read(segment).records)
    return out


def test_records_come_back_in_order_after_the_spool_is_reopened(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, MAX)
    assert spool.append([b"one", b"two"]) == 2
    assert spool.append([b"three"]) == 1
    spool.close()
    again = Spool.open(tmp_path, MAX)
    assert again.pending == 3
    assert _records(again) == [b"one", b"two", b"three"]


def test_a_record_cut_short_at_the_end_is_ignored(tmp_path: Path) -> None:
    whole = encode_record(b"first") + encode_record(b"second")
    cut = encode_record(b"third, never acknowledged")[:-5]
    read = decode_segment(whole + cut)
    assert read.records == (b"first", b"second")
    assert read.torn and read.corrupt_at is None


def test_a_header_cut_short_at_the_end_is_ignored(tmp_path: Path) -> None:
    read = decode_segment(encode_record(b"first") + MAGIC[:3])
    assert read.records == (b"first",) and read.torn


def test_a_last_record_failing_its_checksum_is_a_torn_write_not_corruption() -> None:
    last = bytearray(encode_record(b"written, not yet synced"))
    last[-1] ^= 0xFF
    read = decode_segment(encode_record(b"first") + bytes(last))
    assert read.records == (b"first",)
    assert read.torn and read.corrupt_at is None


def test_zeros_after_the_last_record_are_a_torn_write() -> None:
    # What a filesystem may show after a crash: the file grew, the data never came.
    read = decode_segment(encode_record(b"first") + b"\0" * 40)
    assert read.records == (b"first",) and read.torn


def test_a_bad_checksum_before_other_records_is_reported_and_set_aside(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, MAX)
    spool.append([b"good", b"rotten", b"after"])
    spool.seal()
    (segment,) = spool.sealed()
    data = bytearray(segment.read_bytes())
    rotten_at = len(encode_record(b"good"))
    data[rotten_at + HEADER_BYTES] ^= 0x01
    segment.write_bytes(bytes(data))

    read = spool.read(segment)

    assert read.records == (b"good",)
    assert read.corrupt_at == rotten_at
    aside = spool.path / f"corrupt-{segment.name}"
    assert aside.read_bytes() == bytes(data[rotten_at:])
    assert spool.pending == 1


def test_the_checksum_is_crc32_of_the_payload() -> None:
    record = encode_record(b"payload")
    assert record[:4] == MAGIC
    assert int.from_bytes(record[8:12], "big") == zlib.crc32(b"payload")


def test_a_full_spool_takes_only_what_fits(tmp_path: Path) -> None:
    record_size = len(encode_record(b"x" * 100))
    spool = Spool.open(tmp_path, max_bytes=record_size * 2)
    assert spool.append([b"x" * 100, b"x" * 100, b"x" * 100]) == 2
    assert spool.append([b"x" * 100]) == 0
    assert spool.pending == 2
    assert spool.bytes_used == record_size * 2


def test_removing_a_replayed_segment_frees_its_bytes(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, MAX)
    spool.append([b"a", b"b"])
    spool.seal()
    (segment,) = spool.sealed()
    spool.mark_replayed(segment, 1)
    assert spool.pending == 1
    spool.remove(segment)
    assert spool.pending == 0 and spool.bytes_used == 0
    assert not segment.exists()


def test_a_second_spool_on_the_same_directory_takes_another_slot(tmp_path: Path) -> None:
    first = Spool.open(tmp_path, MAX)
    second = Spool.open(tmp_path, MAX)
    assert first.path != second.path
    first.append([b"mine"])
    assert second.pending == 0


def test_when_every_slot_is_taken_opening_fails_naming_the_directory(tmp_path: Path) -> None:
    Spool.open(tmp_path, MAX, max_instances=1)
    with pytest.raises(SpoolBusy, match=str(tmp_path)):
        Spool.open(tmp_path, MAX, max_instances=1)


def test_a_killed_process_leaves_its_records_to_the_next_one(tmp_path: Path) -> None:
    # A real process appends, is killed -9 while holding the lock, and the slot
    # (with what it acknowledged) is the next opener's.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from inbox.spool import Spool\n"
        f"s = Spool.open(Path({str(tmp_path)!r}), {MAX})\n"
        "s.append([b'acknowledged'])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=30, check=False)
    assert proc.returncode == -9
    spool = Spool.open(tmp_path, MAX, max_instances=1)
    assert _records(spool) == [b"acknowledged"]


def test_a_dead_process_slot_with_records_is_adopted(tmp_path: Path) -> None:
    live = Spool.open(tmp_path, MAX)
    dead = Spool.open(tmp_path, MAX)
    dead.append([b"left behind"])
    dead.close()
    adopted = Spool.adopt_orphans(tmp_path, MAX, exclude=live.path)
    assert [(s.path, _records(s)) for s in adopted] == [(dead.path, [b"left behind"])]


def test_a_slot_held_by_a_running_process_is_not_adopted(tmp_path: Path) -> None:
    live = Spool.open(tmp_path, MAX)
    running = Spool.open(tmp_path, MAX)
    running.append([b"its own"])
    assert Spool.adopt_orphans(tmp_path, MAX, exclude=live.path) == []


def test_an_empty_slot_is_not_adopted(tmp_path: Path) -> None:
    Spool.open(tmp_path, MAX).close()
    assert Spool.adopt_orphans(tmp_path, MAX, exclude=tmp_path / "x") == []


def test_a_spooled_sms_keeps_its_form_and_arrival_time() -> None:
    when = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)
    pairs = (("From", "+14155550100"), ("Body", "a=b&c é"), ("Body", "twice"))
    record = decode(encode_sms(VerifiedSms(pairs, when, None, "")))
    assert record == SpooledSms(pairs, when)


def test_a_record_of_an_unknown_version_is_refused_not_guessed() -> None:
    with pytest.raises(SpoolError, match="version"):
        decode(b'{"v": 99, "bridge": "twilio", "kind": "sms"}')
    with pytest.raises(SpoolError, match="unreadable"):
        decode(b"not json")


# --- dead letters back into the spool --------------------------------------------------


def _slot_records(slot: Path) -> list[bytes]:
    return [
        r
        for seg in sorted(slot.glob("seg-*.log"))
        for r in decode_segment(seg.read_bytes()).records
    ]


def test_requeue_moves_every_slots_dead_letters_into_a_free_slot(tmp_path: Path) -> None:
    one, two = Spool.open(tmp_path, MAX), Spool.open(tmp_path, MAX)  # two running gateways
    one.dead_letter(b"a")
    one.dead_letter(b"b")
    two.dead_letter(b"c")
    done = requeue_dead_letters(tmp_path, MAX)
    assert (done.records, done.slot, done.kept) == (3, tmp_path / "instance-2", ())
    assert _slot_records(tmp_path / "instance-2") == [b"a", b"b", b"c"]
    assert dead_letter_files(tmp_path) == []
    # The free slot is left for a running gateway to adopt and replay.
    (adopted,) = Spool.adopt_orphans(tmp_path, MAX, exclude=one.path)
    assert adopted.path == tmp_path / "instance-2" and adopted.pending == 3
    for spool in (one, two, adopted):
        spool.close()


def test_requeue_with_no_dead_letters_takes_no_slot(tmp_path: Path) -> None:
    assert requeue_dead_letters(tmp_path, MAX) == Requeued(0, None, ())
    assert not tmp_path.joinpath("instance-0").exists()


def test_a_dead_letter_written_during_requeue_starts_a_new_file(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, MAX)
    spool.dead_letter(b"old")
    dead = spool.path / "dead.log"
    # A writer that opened dead.log just before requeue renamed it waits on the lock,
    # then must notice the file is no longer dead.log.
    fd = os.open(dead, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=spool.dead_letter, args=(b"new",))
    writer.start()
    time.sleep(0.2)  # the writer is blocked on the lock
    taken = dead.with_name("dead.log.requeuing-1")
    os.replace(dead, taken)
    os.close(fd)
    writer.join(timeout=5)
    assert decode_segment(taken.read_bytes()).records == (b"old",)
    assert decode_segment(dead.read_bytes()).records == (b"new",)
    spool.close()


def test_a_damaged_dead_letter_file_is_kept_once_its_readable_records_moved(
    tmp_path: Path,
) -> None:
    spool = Spool.open(tmp_path, MAX)
    for payload in (b"good", b"lost", b"after"):
        spool.dead_letter(payload)
    dead = spool.path / "dead.log"
    data = bytearray(dead.read_bytes())
    data[len(encode_record(b"good")) + HEADER_BYTES] ^= 0xFF  # "lost" fails its checksum
    dead.write_bytes(bytes(data))
    done = requeue_dead_letters(tmp_path, MAX)
    assert done.records == 1
    assert _slot_records(tmp_path / "instance-1") == [b"good"]
    (kept,) = done.kept
    assert kept.name.startswith("dead.log.damaged-") and kept.read_bytes() == bytes(data)
    assert requeue_dead_letters(tmp_path, MAX).records == 0  # damaged files stay put
    spool.close()


def test_dead_letters_that_do_not_fit_stay_dead_letters(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, MAX)
    spool.dead_letter(b"x" * 100)
    spool.dead_letter(b"y" * 100)
    small = 2 * len(encode_record(b"x" * 100)) - 1
    with pytest.raises(SpoolFull, match="do not fit"):
        requeue_dead_letters(tmp_path, small)
    (left,) = dead_letter_files(tmp_path)
    assert left.name.startswith("dead.log.full-")
    assert decode_segment(left.read_bytes()).records == (b"x" * 100, b"y" * 100)
    # Taken again by the next requeue, with room: the one already moved is sent twice
    # and stored once (replay is idempotent by MessageSid).
    assert requeue_dead_letters(tmp_path, MAX).records == 2
    assert dead_letter_files(tmp_path) == []
    spool.close()
