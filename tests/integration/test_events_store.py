"""The events table on SQLite and PostgreSQL: written in the transaction of the change
it announces, read per user in id order, where a resuming stream starts, retention,
and (PostgreSQL) one user's events committing in id order."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from gateway.retention import run_retention
from inbox import events, store
from inbox.addresses import E164
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database
from inbox.models import events_t
from inbox.outbound import apply_status, insert_outbound_sms, mark_failed, mark_handed_over
from optin import screener
from tests.integration.helpers import block_sender, inbound, make_user, run_batch, trust_sender

ADA_NUMBER = "+14155550199"
BOB_NUMBER = "+14155550198"
FRIEND = "+14155550111"
STRANGER = "+14155550122"


def _ada(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=ADA_NUMBER)


def _bob(db: Database) -> str:
    return make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")


def _all(db: Database, user_id: str) -> list[events.Event]:
    return events.list_after(db, user_id, 0, 10_000)


def _record(db: Database, user_id: str, n: int = 1) -> list[int]:
    with db.write.begin() as conn:
        events.insert(
            conn,
            [
                events.NewEvent(user_id, events.MESSAGE_DELETED, {"message_id": f"m{i}"})
                for i in range(n)
            ],
        )
    return [e.id for e in _all(db, user_id)][-n:]


def test_an_ingested_message_is_announced_with_its_id_folder_and_channel(db: Database) -> None:
    ada = _ada(db)
    trust_sender(db, ada, FRIEND)
    admitted, held = run_batch(db, [inbound("SM1", sender=FRIEND), inbound("SM2", sender=STRANGER)])
    found = _all(db, ada)
    assert [(e.kind, e.data) for e in found] == [
        (
            events.MESSAGE_CREATED,
            {
                "message_id": admitted.message_id,
                "folder": "inbox",
                "channel": "sms",
                "direction": "inbound",
            },
        ),
        (
            events.MESSAGE_CREATED,
            {
                "message_id": held.message_id,
                "folder": "quarantine",
                "channel": "sms",
                "direction": "inbound",
            },
        ),
    ]
    assert admitted.user_id == ada and held.user_id == ada


def test_a_provider_retry_and_a_blocked_sender_announce_nothing(db: Database) -> None:
    ada = _ada(db)
    block_sender(db, ada, STRANGER)
    run_batch(db, [inbound("SM1")])
    (retry, blocked) = run_batch(db, [inbound("SM1"), inbound("SM3", sender=STRANGER)])
    assert retry.duplicate and retry.user_id is None and blocked.user_id is None
    assert len(_all(db, ada)) == 1


def test_an_event_is_rolled_back_with_its_change(db: Database) -> None:
    ada = _ada(db)

    def change_that_fails() -> None:
        with db.write.begin() as conn:
            events.record(conn, ada, events.MESSAGE_DELETED, {"message_id": "m1"})
            raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        change_that_fails()
    assert _all(db, ada) == []


def test_events_are_listed_per_user_in_id_order_after_an_id(db: Database) -> None:
    ada, bob = _ada(db), _bob(db)
    ids = _record(db, ada, 3)
    _record(db, bob, 2)
    assert [e.id for e in events.list_after(db, ada, ids[0], 10)] == ids[1:]
    assert [e.id for e in events.list_after(db, ada, 0, 2)] == ids[:2]
    assert all(e.data["message_id"].startswith("m") for e in _all(db, bob))
    assert set(e.id for e in _all(db, bob)).isdisjoint(ids)


def test_outbound_creation_and_status_changes_are_announced(db: Database) -> None:
    ada = _ada(db)
    with db.write.begin() as conn:
        sent = insert_outbound_sms(conn, ada, E164(FRIEND), "hello")
        mark_handed_over(conn, sent.message_id, "SM" + "a" * 32, "queued")
        apply_status(conn, "SM" + "a" * 32, "delivered", None)
        apply_status(conn, "SM" + "a" * 32, "sent", None)  # late: not applied, not announced
        failed = insert_outbound_sms(conn, ada, E164(FRIEND), "again")
        mark_failed(conn, failed.message_id, 30003, "unreachable")
    assert [(e.kind, e.data.get("status")) for e in _all(db, ada)] == [
        (events.MESSAGE_CREATED, None),
        (events.MESSAGE_STATUS, "queued"),
        (events.MESSAGE_STATUS, "delivered"),
        (events.MESSAGE_CREATED, None),
        (events.MESSAGE_STATUS, "failed"),
    ]
    assert _all(db, ada)[0].data == {
        "message_id": sent.message_id,
        "folder": "sent",
        "channel": "sms",
        "direction": "outbound",
    }


def test_screener_decisions_read_and_delete_are_announced(db: Database, tmp_path: Path) -> None:
    ada = _ada(db)
    (held,) = run_batch(db, [inbound("SM1", sender=STRANGER)])
    decided = screener.allow(db, ada, [STRANGER])
    screener.undo(db, ada, window_seconds=60)
    assert held.message_id is not None
    store.set_read(db, ada, held.message_id, True)
    store.delete_message(db, DirectoryBlobStore(tmp_path / "blobs"), ada, held.message_id)
    assert [(e.kind, e.data) for e in _all(db, ada)][1:] == [
        (
            events.SCREENER_CHANGED,
            {"action": "allow", "decision_id": decided.decision_id, "messages": 1},
        ),
        (
            events.SCREENER_CHANGED,
            {"action": "undo", "decision_id": decided.decision_id, "messages": 1},
        ),
        (events.MESSAGE_UPDATED, {"message_id": held.message_id, "read": True}),
        (events.MESSAGE_DELETED, {"message_id": held.message_id}),
    ]


def test_oversized_event_data_is_refused(db: Database) -> None:
    ada = _ada(db)
    with pytest.raises(ValueError, match="over"), db.write.begin() as conn:
        events.record(conn, ada, events.MESSAGE_DELETED, {"message_id": "x" * 2000})
    assert _all(db, ada) == []


def test_a_new_stream_starts_after_the_users_newest_event(db: Database) -> None:
    ada, bob = _ada(db), _bob(db)
    ids = _record(db, ada, 2)
    _record(db, bob, 1)  # a later id of someone else does not move Ada's start
    assert events.start(db, ada, None, 100) == events.Start(ids[-1], False)
    assert events.start(db, _bob_without_events(db), None, 100) == events.Start(0, False)


def _bob_without_events(db: Database) -> str:
    return make_user(db, phone="+442079460960", sms_number="+14155550197", first="Cy")


def test_a_resuming_stream_starts_right_after_its_last_event(db: Database) -> None:
    ada = _ada(db)
    ids = _record(db, ada, 3)
    assert events.start(db, ada, ids[0], 100) == events.Start(ids[0], False)


def test_a_stream_too_far_behind_is_reset_to_the_newest_event(db: Database) -> None:
    ada = _ada(db)
    ids = _record(db, ada, 4)
    assert events.start(db, ada, ids[0], 2) == events.Start(ids[-1], True)
    assert events.start(db, ada, ids[1], 2) == events.Start(ids[1], False)


def test_an_id_beyond_the_table_or_before_what_was_kept_resets(db: Database) -> None:
    ada = _ada(db)
    ids = _record(db, ada, 3)
    assert events.start(db, ada, ids[-1] + 1000, 100) == events.Start(ids[-1], True)
    with db.write.begin() as conn:
        conn.execute(events_t.delete().where(events_t.c.id <= ids[1]))
    # ids[0] is gone and the client was at it: it may have missed ids[1].
    assert events.start(db, ada, ids[0], 100) == events.Start(ids[-1], True)
    assert events.start(db, ada, ids[1], 100) == events.Start(ids[1], False)


def test_purge_deletes_old_events_but_keeps_the_newest_row(db: Database) -> None:
    ada = _ada(db)
    ids = _record(db, ada, 3)
    later = datetime.now(UTC) + timedelta(hours=25)
    assert events.purge(db, keep_hours=24) == 0
    assert events.purge(db, keep_hours=24, now=later) == 2
    assert [e.id for e in _all(db, ada)] == [ids[-1]]
    # So that SQLite (no AUTOINCREMENT) never hands out an id a live stream has passed.
    assert _record(db, ada, 1)[0] > ids[-1]


def test_the_retention_job_purges_old_events(settings: Settings, db: Database) -> None:
    ada = _ada(db)
    _record(db, ada, 3)
    later = datetime.now(UTC) + timedelta(hours=settings.events.keep_hours + 1)
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    assert run_retention(settings, db, blobs, now=later).events_deleted == 2


def test_purge_works_in_batches(db: Database) -> None:
    ada = _ada(db)
    _record(db, ada, 7)
    later = datetime.now(UTC) + timedelta(hours=25)
    assert events.purge(db, keep_hours=24, now=later, batch=2) == 6


def test_users_after_lists_each_users_newest_new_id(db: Database) -> None:
    ada, bob = _ada(db), _bob(db)
    first = _record(db, ada, 1)[0]
    ada_ids = _record(db, ada, 2)
    bob_ids = _record(db, bob, 1)
    assert events.users_after(db, first) == {ada: ada_ids[-1], bob: bob_ids[-1]}
    assert events.newest_id(db) == max(ada_ids[-1], bob_ids[-1])


def test_postgresql_commits_one_users_events_in_id_order(pg_url: str) -> None:
    """A second transaction writing events of the same user waits for the first to
    commit, so a reader never sees a larger id of that user before a smaller one."""
    from config import DatabaseSettings
    from inbox.db import open_database
    from inbox.migrate import upgrade

    db = open_database(DatabaseSettings(url=pg_url))
    upgrade(db)
    try:
        ada = _ada(db)
        first = db.write.connect()
        trans = first.begin()
        events.record(first, ada, events.MESSAGE_DELETED, {"message_id": "m1"})
        done = threading.Event()

        def second() -> None:
            with db.write.begin() as conn:
                events.record(conn, ada, events.MESSAGE_DELETED, {"message_id": "m2"})
            done.set()

        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # waiting for the first transaction's lock
        trans.commit()
        first.close()
        worker.join(timeout=10)
        assert done.is_set()
        found = _all(db, ada)
        assert [e.data["message_id"] for e in found] == ["m1", "m2"]
        assert found[0].id < found[1].id
    finally:
        db.dispose()


def test_postgresql_events_of_different_users_do_not_wait_on_each_other(pg_url: str) -> None:
    from config import DatabaseSettings
    from inbox.db import open_database
    from inbox.migrate import upgrade

    db = open_database(DatabaseSettings(url=pg_url))
    upgrade(db)
    try:
        ada, bob = _ada(db), _bob(db)
        with db.write.connect() as first:
            trans = first.begin()
            events.record(first, ada, events.MESSAGE_DELETED, {"message_id": "m1"})
            started = time.monotonic()
            with db.write.begin() as conn:
                events.record(conn, bob, events.MESSAGE_DELETED, {"message_id": "m2"})
            assert time.monotonic() - started < 2.0
            trans.commit()
        with db.read.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(events_t)).scalar() == 2
    finally:
        db.dispose()
