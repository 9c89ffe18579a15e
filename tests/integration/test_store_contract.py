"""The store's contract, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.pipeline import IngestPipeline
from inbox import store
from inbox.addresses import E164, parse_phone
from inbox.blobs import DirectoryBlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database
from inbox.errors import Conflict, NotFound
from inbox.message import Folder, Inbound, IngestResult, Outcome
from inbox.models import attachments_t, messages_t, trust_entries_t
from optin import NotQuarantined, TrustVerdict, deny, release, trust
from optin.decide import Policy
from tests.integration.helpers import inbound, make_user, run_batch

USER_NUMBER = "+14155550199"


def count(db: Database, table: sa.Table, **where: str) -> int:
    stmt = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        stmt = stmt.where(table.c[column] == value)
    with db.read.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def test_insert_is_idempotent_on_bridge_and_external_id(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    (first,) = run_batch(db, [inbound("SM1", text="first")])
    (again,) = run_batch(db, [inbound("SM1", text="retry with other text")])
    assert first.outcome is Outcome.QUARANTINED and not first.duplicate
    assert again.duplicate and again.message_id == first.message_id
    assert count(db, messages_t) == 1


def test_same_key_twice_in_one_batch_is_stored_once(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    a, b = run_batch(db, [inbound("SM2"), inbound("SM2")])
    assert a.message_id == b.message_id
    assert (a.duplicate, b.duplicate) == (False, True)
    assert count(db, messages_t) == 1


def test_batch_mixing_new_and_stored_keys_inserts_only_the_new_ones(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    (stored,) = run_batch(db, [inbound("SM20", text="first")])
    a, retry, b = run_batch(db, [inbound("SM21"), inbound("SM20"), inbound("SM22")])
    assert (a.duplicate, retry.duplicate, b.duplicate) == (False, True, False)
    assert retry.message_id == stored.message_id
    assert len({a.message_id, b.message_id, stored.message_id}) == 3
    assert count(db, messages_t) == 3


def test_unroutable_recipient_stores_nothing(db: Database) -> None:
    (result,) = run_batch(db, [inbound("SM3", to="+14155550777")])
    assert result.outcome is Outcome.UNROUTABLE
    assert count(db, messages_t) == 0


def test_fifty_concurrent_posts_of_one_sid_store_exactly_one_row(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    barrier = threading.Barrier(50)
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def post() -> None:
        barrier.wait()
        try:
            results.extend(run_batch(db, [inbound("SMsame")]))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 50
    assert len({r.message_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert count(db, messages_t) == 1


async def test_group_committer_stores_concurrent_submissions_once(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    committer: GroupCommitter[Inbound, IngestResult] = GroupCommitter(
        db.write, IngestPipeline(Policy()).process, max_batch=16
    )
    committer.start()
    try:
        sids = [f"SM{i % 100}" for i in range(400)]
        results = await asyncio.gather(*(committer.submit(inbound(s)) for s in sids))
    finally:
        await committer.stop()
    assert count(db, messages_t) == 100
    assert len({r.message_id for r in results}) == 100
    assert committer.batches < 400  # batched, not one transaction per message


def test_trust_entry_is_one_per_number_whatever_the_spelling(db: Database) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    for spelling in ("(415) 555-0100", "+1 415 555 0100", "415.555.0100", "tel:+14155550100"):
        trust.add(db, user_id, parse_phone(spelling, "US"))
    assert [e.address for e in trust.list_entries(db, user_id)] == ["+14155550100"]


def test_opt_in_applies_to_the_very_next_message(db: Database) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    (before,) = run_batch(db, [inbound("SMa", sender="+14155550100")])
    trust.add(db, user_id, E164("+14155550100"))
    (after,) = run_batch(db, [inbound("SMb", sender="+14155550100")])
    assert (before.outcome, after.outcome) == (Outcome.QUARANTINED, Outcome.ADMITTED)


def test_release_trusts_sender_and_moves_all_their_held_messages(db: Database) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    other_id = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    held = run_batch(
        db,
        [
            inbound("SM1", sender="+14155550111"),
            inbound("SM2", sender="+14155550111"),
            inbound("SM3", sender="+14155550122"),
            inbound("SM4", sender="+14155550111", to="+14155550198"),
        ],
    )
    result = release(db, user_id, held[0].message_id or "")
    assert (result.sender, result.messages) == ("+14155550111", 2)
    inbox = store.list_messages(db, user_id, Folder.INBOX).items
    assert sorted(m["id"] for m in inbox) == sorted([held[0].message_id, held[1].message_id])
    assert len(store.list_messages(db, user_id, Folder.QUARANTINE).items) == 1
    # Another user's held message from the same sender is untouched.
    assert len(store.list_messages(db, other_id, Folder.QUARANTINE).items) == 1
    assert trust.get(db, user_id, "+14155550111").verdict is TrustVerdict.TRUSTED


def test_release_of_another_users_message_is_not_found(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    other_id = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    (held,) = run_batch(db, [inbound("SM1")])
    with pytest.raises(NotFound):
        release(db, other_id, held.message_id or "")
    assert count(db, trust_entries_t) == 0


def test_release_of_inbox_message_is_refused(db: Database) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    trust.add(db, user_id, E164("+14155550111"))
    (admitted,) = run_batch(db, [inbound("SM1")])
    with pytest.raises(NotQuarantined):
        release(db, user_id, admitted.message_id or "")


def test_deny_blocks_sender_and_deletes_their_held_messages(db: Database, tmp_path: Path) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    held = run_batch(db, [inbound("SM1"), inbound("SM2"), inbound("SM3", sender="+14155550122")])
    result = deny(db, DirectoryBlobStore(tmp_path), user_id, held[0].message_id or "")
    assert (result.verdict, result.messages) == (TrustVerdict.BLOCKED, 2)
    assert count(db, messages_t) == 1
    (later,) = run_batch(db, [inbound("SM9")])
    assert later.outcome is Outcome.DROPPED
    assert count(db, messages_t) == 1


def test_duplicate_phone_or_address_is_a_conflict(db: Database) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    with pytest.raises(Conflict):
        make_user(db, phone="+442079460958", sms_number="+14155550198")
    with pytest.raises(Conflict):
        make_user(db, phone="+442079460957", sms_number=USER_NUMBER)


def test_deleting_a_user_removes_their_rows_everywhere(db: Database, tmp_path: Path) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    keep_id = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    trust.add(db, user_id, E164("+14155550111"))
    store.create_token(db, user_id)
    run_batch(db, [inbound("SM1"), inbound("SM2", to="+14155550198")])
    store.delete_user(db, DirectoryBlobStore(tmp_path), user_id)
    with db.read.connect() as conn:
        for table in (messages_t, attachments_t, trust_entries_t):
            if "user_id" in table.c:
                leftover = conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user_id)
                ).scalar_one()
                assert leftover == 0, table.name
    assert count(db, messages_t, user_id=keep_id) == 1
    with pytest.raises(NotFound):
        store.get_user(db, user_id)


async def test_group_committer_waits_for_a_lock_held_by_another_process(
    sqlite_url: str, tmp_path: Path
) -> None:
    import sqlite3

    from config import DatabaseSettings
    from inbox.db import open_database
    from inbox.migrate import upgrade

    db = open_database(DatabaseSettings(url=sqlite_url), background_checkpoint=True)
    upgrade(db)
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    committer: GroupCommitter[Inbound, IngestResult] = GroupCommitter(
        db.write, IngestPipeline(Policy()).process, lock_timeout=5
    )
    committer.start()
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        pending = asyncio.ensure_future(committer.submit(inbound("SMlocked")))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waiting for the lock, not failing
        other.execute("COMMIT")
        result = await asyncio.wait_for(pending, 5)
        assert result.outcome is Outcome.QUARANTINED
        (after,) = await asyncio.gather(committer.submit(inbound("SMafter")))
        assert after.outcome is Outcome.QUARANTINED
    finally:
        other.close()
        await committer.stop()
        db.dispose()
    assert count_rows(sqlite_url) == 2


def count_rows(sqlite_url: str) -> int:
    import sqlite3

    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
