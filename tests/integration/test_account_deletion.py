"""Account deletion removes everything of the user, everywhere, and nothing of anyone
else: every table of the metadata (a table added later is covered without editing
this test), the blob directory, export archives, Redis keys, and queued jobs, on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from sqlmodel import SQLModel

from config import Settings
from gateway import erasure, outbound
from gateway.app import create_app
from gateway.jobs import Jobs
from gateway.keys import BLOBS
from gateway.openapi import openapi_document
from inbox import export, store
from inbox.addresses import E164, EmailAddress
from inbox.blobs import BlobStore, DirectoryBlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.message import Channel, InboundAttachment
from inbox.models import users_t
from tests.conftest import make_settings, missing_service
from tests.integration.openapi_check import checked_call
from tests.integration.privacy_data import (
    PHOTO,
    SHARED,
    Seeded,
    build_export,
    inbound,
    receive,
    seed_everything,
)

Client = TestClient[Any, Any]
ADA = {"phone": "+442079460957", "sms_number": "+14155550199", "email_address": "ada@optmsg.test"}
BOB = {"phone": "+14155550150", "sms_number": "+14155550198", "email_address": "bob@optmsg.test"}
CONFIRM = {"confirm": "delete my account"}


def new_user(db: Database, who: dict[str, str], first: str) -> str:
    return store.create_user(
        db,
        first_name=first,
        last_name="Tester",
        date_of_birth=date(1990, 1, 1),
        phone=E164(who["phone"]),
        sms_number=E164(who["sms_number"]),
        email_address=EmailAddress(who["email_address"]),
    ).id


def user_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """The columns that reference users.id, or hold a user id by name."""
    return [
        c
        for c in table.columns
        if any(fk.column.table.name == "users" for fk in c.foreign_keys)
        or (table.name == "users" and c.name == "id")
        or c.name == "user_id"
    ]


def dump(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table in the metadata."""
    out: dict[str, list[dict[str, Any]]] = {}
    with db.read.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).mappings()
            out[table.name] = [dict(r) for r in rows]
    return out


def rows_of(data: dict[str, list[dict[str, Any]]], seeded: Seeded) -> dict[str, int]:
    """Per table, the rows that are the user's: a user column holds their id, or any
    text value mentions their id, phone number or OptMsg addresses."""
    marks = (seeded.user_id, seeded.phone, seeded.sms_number, seeded.email_address)
    found: dict[str, int] = {}
    for table in SQLModel.metadata.sorted_tables:
        columns = [c.name for c in user_columns(table)]
        count = 0
        for row in data[table.name]:
            if any(row[c] == seeded.user_id for c in columns) or any(
                isinstance(v, str) and any(m in v for m in marks) for v in row.values()
            ):
                count += 1
        found[table.name] = count
    return found


def blob_file(blob_dir: Path, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    return blob_dir / digest[:2] / digest[2:4] / digest


def files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, names in os.walk(root) for f in names}


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(settings))


def seed_two(db: Database, blobs: BlobStore, blob_dir: Path) -> tuple[Seeded, Seeded]:
    """Ada with data in every table and an export; Bob with his own data, one file of
    which (SHARED) Ada has too."""
    ada = seed_everything(db, blobs, new_user(db, ADA, "Ada"), **ADA)
    bob = seed_everything(db, blobs, new_user(db, BOB, "Bob"), ip="198.51.100.9", **BOB)
    ada.export_id = build_export(db, blobs, blob_dir, ada.user_id)
    bob.export_id = build_export(db, blobs, blob_dir, bob.user_id)
    store.create_token(db, ada.user_id, "web")
    return ada, bob


async def test_delete_account_leaves_nothing_of_the_user_in_any_table_or_file(
    settings: Settings, db: Database, client: Client
) -> None:
    blobs = client.app[BLOBS]
    blob_dir = Path(settings.storage.blob_dir)
    ada, bob = seed_two(db, blobs, blob_dir)
    before = dump(db)
    mine = rows_of(before, ada)
    # Every table that can hold a user's rows has some of Ada's: a new table that
    # this seed does not fill makes this fail, rather than pass without checking it.
    user_tables = {t.name for t in SQLModel.metadata.sorted_tables if user_columns(t)}
    assert {name for name, count in mine.items() if count} >= user_tables, mine
    theirs_before = rows_of(before, bob)
    files_before = files_under(blob_dir)

    token = store.create_token(db, ada.user_id, "phone")[1]
    reply = await checked_call(
        client, openapi_document(), "DELETE", "/account", token=token, json=CONFIRM
    )
    assert reply.status == 204

    after = dump(db)
    assert {name: n for name, n in rows_of(after, ada).items() if n} == {}
    assert rows_of(after, bob) == theirs_before
    # Only Ada's rows went: every table's other rows are untouched.
    for table in SQLModel.metadata.sorted_tables:
        kept = [r for r in before[table.name] if r in after[table.name]]
        assert len(after[table.name]) == len(kept), table.name
    files_after = files_under(blob_dir)
    gone = files_before - files_after
    assert export.archive_path(export.exports_dir(blob_dir), ada.export_id) in gone
    assert blob_file(blob_dir, SHARED) in files_after  # Bob's message still has it
    assert blob_file(blob_dir, PHOTO) in files_after  # Bob got the same photo too
    assert export.archive_path(export.exports_dir(blob_dir), bob.export_id) in files_after
    assert gone == {export.archive_path(export.exports_dir(blob_dir), ada.export_id)}


async def test_a_half_written_archive_of_the_user_is_deleted_with_the_account(
    settings: Settings, db: Database, client: Client
) -> None:
    exports = export.exports_dir(Path(settings.storage.blob_dir))
    exports.mkdir(parents=True, exist_ok=True)
    ada, bob = new_user(db, ADA, "Ada"), new_user(db, BOB, "Bob")
    # What a build killed mid-way (kill -9, OOM) leaves: a temporary file per export.
    temps = {}
    for who in (ada, bob):
        export_id = export.request_export(db, who).id
        temps[who] = exports / f"{export.temp_prefix(export_id)}k1ll3d.zip"
        temps[who].write_bytes(b"PK half an archive")
    token = store.create_token(db, ada, "phone")[1]
    reply = await checked_call(
        client, openapi_document(), "DELETE", "/account", token=token, json=CONFIRM
    )
    assert reply.status == 204
    assert not temps[ada].exists()
    assert temps[bob].exists()


async def test_a_blob_only_the_deleted_user_had_is_deleted(
    settings: Settings, db: Database, client: Client
) -> None:
    blobs = client.app[BLOBS]
    blob_dir = Path(settings.storage.blob_dir)
    ada, _ = seed_two(db, blobs, blob_dir)
    mine = b"only Ada ever had this file"
    receive(
        db,
        blobs,
        inbound(
            ADA["sms_number"],
            "mine",
            channel=Channel.MMS,
            attachments=(InboundAttachment("text/plain", "a.txt", content=mine),),
        ),
    )
    assert blob_file(blob_dir, mine).exists()
    erasure.delete_account(settings, db, blobs, ada.user_id)
    assert not blob_file(blob_dir, mine).exists()
    assert blob_file(blob_dir, SHARED).exists()


@pytest.mark.parametrize(
    "body",
    [None, {}, {"confirm": "yes"}, {"confirm": True}, {"confirm": "delete my account", "x": 1}],
)
async def test_delete_account_without_the_confirmation_is_400_and_deletes_nothing(
    db: Database, client: Client, body: Any
) -> None:
    user_id = new_user(db, ADA, "Ada")
    token = store.create_token(db, user_id)[1]
    reply = await checked_call(
        client, openapi_document(), "DELETE", "/account", token=token, json=body
    )
    assert reply.status == 400
    assert store.get_user(db, user_id).id == user_id


async def test_after_deletion_the_token_is_refused(db: Database, client: Client) -> None:
    user_id = new_user(db, ADA, "Ada")
    token = store.create_token(db, user_id)[1]
    doc = openapi_document()
    assert (
        await checked_call(client, doc, "DELETE", "/account", token=token, json=CONFIRM)
    ).status == 204
    reply = await checked_call(client, doc, "GET", "/messages", token=token)
    assert reply.status == 401


def test_deleting_an_unknown_user_is_not_found(settings: Settings, db: Database) -> None:
    blobs = DirectoryBlobStore(Path(settings.storage.blob_dir))
    for bad in ("usr_" + "0" * 32, "nope", "usr_*"):
        with pytest.raises(NotFound):
            erasure.delete_account(settings, db, blobs, bad)


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        missing_service("Redis", "nothing listens on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


def test_the_users_redis_keys_go_and_others_stay(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    import redis

    from inbox.db import open_database
    from inbox.migrate import upgrade

    settings = make_settings(tmp_path, db_url, redis={"url": redis_url})
    db = open_database(settings.database)
    upgrade(db)
    client = redis.Redis.from_url(redis_url)
    ada, bob = new_user(db, ADA, "Ada"), new_user(db, BOB, "Bob")
    try:
        for user in (ada, bob):
            for name in ("cursor", "presence", "a:b"):
                client.set(erasure.user_key(user, name), b"1", ex=600)
        blobs = DirectoryBlobStore(Path(settings.storage.blob_dir))
        assert erasure.delete_account(settings, db, blobs, ada) == 3
        assert client.keys(erasure.user_key(ada, "*")) == []
        assert len(client.keys(erasure.user_key(bob, "*"))) == 3
    finally:
        for user in (ada, bob):
            for key in client.keys(erasure.user_key(user, "*")):
                client.delete(key)
        client.close()
        db.dispose()


# --- queued jobs -----------------------------------------------------------------------------


def test_jobs_queued_for_a_deleted_user_finish_quietly(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blob_dir = Path(settings.storage.blob_dir)
    blobs = DirectoryBlobStore(blob_dir)
    user_id = new_user(db, ADA, "Ada")
    sms = outbound.create_sms(settings, db, user_id, E164("+14155550100"), "hello")
    pending = export.request_export(db, user_id)
    mms = receive(
        db,
        blobs,
        inbound(
            ADA["sms_number"],
            "pic",
            channel=Channel.MMS,
            attachments=(
                InboundAttachment("image/png", remote_url="https://api.twilio.com/x/Media/ME1"),
            ),
        ),
    )
    jobs = Jobs(settings, db, blobs)
    try:
        jobs.enqueue_send(sms.message_id)
        jobs.enqueue_export(pending.id)
        jobs.enqueue_media(mms)
        erasure.delete_account(settings, db, blobs, user_id)
        jobs.start_worker(threads=2)
        for queue in ("send", "export", "media"):
            jobs.broker.join(queue, timeout=20_000)  # type: ignore[attr-defined]
    finally:
        jobs.stop()
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users_t)).scalar() == 0
    assert not list(export.exports_dir(blob_dir).glob("*.zip"))
    # A job that raised is logged by dramatiq's worker (and retried): none did.
    trouble = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert trouble == [], [r.getMessage() for r in trouble]
    assert f"sms {sms.message_id} no longer exists" in caplog.text
