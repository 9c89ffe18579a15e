"""Data exports over the client API: the archive's members, who may download it, expiry,
and what a failed build leaves behind. Every reply is checked against the OpenAPI
document; storage runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.keys import BLOBS, JOBS
from gateway.openapi import openapi_document
from gateway.retention import run_retention
from inbox import export, leases, raw_store, store
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.models import exports_t
from optin.contacts import parse_contacts
from tests.integration.helpers import make_user
from tests.integration.openapi_check import Reply, checked_call
from tests.integration.privacy_data import (
    AUTH_RESULTS,
    EMAIL,
    PHOTO,
    SHARED,
    Seeded,
    seed_everything,
)

Client = TestClient[Any, Any]
ADA_NUMBER = "+14155550199"
BOB_NUMBER = "+14155550198"


@dataclass
class World:
    client: Client
    db: Database
    blobs: BlobStore
    blob_dir: Path
    ada: Seeded
    bob: str
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)

    async def call(
        self, method: str, path: str, *, who: str | None = "ada", json: Any = None
    ) -> Reply:
        token = self.tokens[who] if who is not None else None
        return await checked_call(self.client, self.doc, method, path, token=token, json=json)

    async def ready_export(self) -> dict[str, Any]:
        """Request an export through the API and wait for the job to build it."""
        reply = await self.call("POST", "/exports")
        assert reply.status == 202, reply.body
        assert reply.headers["Location"] == f"/api/v1/exports/{reply.body['id']}"
        for _ in range(200):
            state = await self.call("GET", f"/exports/{reply.body['id']}")
            if state.body["state"] != "pending":
                return dict(state.body)
            await asyncio.sleep(0.05)
        raise AssertionError("the export job did not finish")

    @property
    def exports_dir(self) -> Path:
        return export.exports_dir(self.blob_dir)


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    client = await aiohttp_client(create_app(settings))
    blobs = client.app[BLOBS]
    ada_id = store.create_user(
        db,
        first_name="Ada",
        last_name="Lovelace",
        date_of_birth=datetime(1990, 12, 10).date(),
        phone="+442079460958",  # type: ignore[arg-type]
        sms_number=ADA_NUMBER,  # type: ignore[arg-type]
        email_address="ada@optmsg.test",  # type: ignore[arg-type]
    ).id
    ada = seed_everything(
        db,
        blobs,
        ada_id,
        phone="+442079460958",
        sms_number=ADA_NUMBER,
        email_address="ada@optmsg.test",
    )
    bob = make_user(db, phone="+14155550150", sms_number=BOB_NUMBER, first="Bob")
    tokens = {"ada": store.create_token(db, ada_id)[1], "bob": store.create_token(db, bob)[1]}
    return World(client, db, blobs, Path(settings.storage.blob_dir), ada, bob, tokens)


async def download(world: World, export_id: str, who: str = "ada") -> Reply:
    return await world.call("GET", f"/exports/{export_id}/download", who=who)


# --- the archive ---------------------------------------------------------------------------


async def test_a_requested_export_becomes_ready_with_its_size_and_digest(world: World) -> None:
    ready = await world.ready_export()
    assert ready["state"] == "ready" and ready["error"] is None
    path = world.exports_dir / f"{ready['id']}.zip"
    data = path.read_bytes()
    assert ready["size"] == len(data)
    import hashlib

    assert ready["sha256"] == hashlib.sha256(data).hexdigest()
    expires = datetime.fromisoformat(ready["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)


async def test_the_download_is_the_zip_as_an_attachment(world: World) -> None:
    ready = await world.ready_export()
    reply = await download(world, ready["id"])
    assert reply.status == 200
    assert reply.content_type == "application/zip"
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="optmsg-export-')
    assert reply.raw == (world.exports_dir / f"{ready['id']}.zip").read_bytes()


async def archive(world: World) -> zipfile.ZipFile:
    ready = await world.ready_export()
    reply = await download(world, ready["id"])
    assert reply.status == 200
    zf = zipfile.ZipFile(io.BytesIO(reply.raw))
    assert zf.testzip() is None
    return zf


async def test_the_archive_has_every_member(world: World) -> None:
    zf = await archive(world)
    names = set(zf.namelist())
    for member in (
        "account.json",
        "messages.json",
        "contacts.vcf",
        "trusted-senders.json",
        "auth-log.json",
        f"emails/{world.ada.email_message}.eml",
    ):
        assert member in names, member
    assert len([n for n in names if n.startswith("media/")]) == 2
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")]


async def test_account_json_holds_the_profile(world: World) -> None:
    account = json.loads((await archive(world)).read("account.json"))
    profile = account["profile"]
    assert profile["id"] == world.ada.user_id
    assert (profile["first_name"], profile["last_name"]) == ("Ada", "Lovelace")
    assert profile["phone"] == "+442079460958"
    assert sorted(profile["addresses"]) == sorted([ADA_NUMBER, "ada@optmsg.test"])
    assert profile["suspended"] is False and profile["suspended_at"] is None
    assert "referral_code" in profile
    assert [d["name"] for d in account["devices"]] == ["cli"]
    assert set(account["devices"][0]) == {"name", "created_at", "last_used_at"}
    assert account["sms_opt_outs"][0]["address"] == "+14155550100"


async def test_messages_json_lists_every_folder_with_attachments(world: World) -> None:
    zf = await archive(world)
    messages = json.loads(zf.read("messages.json"))
    by_id = {m["id"]: m for m in messages}
    assert set(by_id) == set(world.ada.message_ids)
    assert by_id[world.ada.draft_message]["folder"] == "drafts"
    photo = by_id[world.ada.photo_message]
    assert [a["status"] for a in photo["attachments"]] == ["stored", "stored"]
    files = {a["content_type"]: a["file"] for a in photo["attachments"]}
    assert zf.read(files["image/png"]) == PHOTO
    assert zf.read(files["application/pdf"]) == SHARED
    # The sender's "../../cat.png" is only a name here; the PDF had none.
    assert files["image/png"].endswith("-cat.png")
    assert files["application/pdf"].endswith("-file.pdf")
    assert by_id[world.ada.email_message]["eml"] == f"emails/{world.ada.email_message}.eml"


async def test_an_email_is_exported_exactly_as_received(world: World) -> None:
    zf = await archive(world)
    eml = zf.read(f"emails/{world.ada.email_message}.eml")
    raw = raw_store.load(world.db, world.ada.raw_id)
    assert eml == raw_store.as_eml(raw, AUTH_RESULTS)
    assert eml.endswith(EMAIL)


async def test_contacts_vcf_parses_back_into_the_same_address_book(world: World) -> None:
    vcf = (await archive(world)).read("contacts.vcf")
    assert all(len(line) <= 75 for line in vcf.split(b"\r\n"))
    report = parse_contacts(vcf, region="US", filename="contacts.vcf")
    stored = store_contacts(world)
    assert sorted((c.name, c.phones, c.emails) for c in report.contacts) == stored
    assert report.rejected == ()


def store_contacts(world: World) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    from inbox.models import contacts_t

    with world.db.read.connect() as conn:
        rows = conn.execute(
            sa.select(contacts_t.c.name, contacts_t.c.phones, contacts_t.c.emails).where(
                contacts_t.c.user_id == world.ada.user_id
            )
        )
        return sorted(
            (r.name, tuple(json.loads(r.phones)), tuple(json.loads(r.emails))) for r in rows
        )


async def test_trusted_senders_and_auth_log_are_json(world: World) -> None:
    zf = await archive(world)
    senders = json.loads(zf.read("trusted-senders.json"))
    assert {s["address"] for s in senders} == {"+14155550100", "friend@example.com"}
    log = json.loads(zf.read("auth-log.json"))
    assert [(e["method"], e["outcome"], e["ip"]) for e in log] == [
        ("sms_code", "success", "203.0.113.7")
    ]


async def test_nothing_of_another_user_is_in_the_archive(world: World) -> None:
    reply = await world.call("POST", "/exports", who="bob")
    assert reply.status == 202
    built = export.build(
        world.db, world.blobs, world.exports_dir, reply.body["id"], ttl=timedelta(hours=1)
    )
    assert built is not None
    zf = zipfile.ZipFile(world.exports_dir / f"{reply.body['id']}.zip")
    assert json.loads(zf.read("messages.json")) == []
    everything = b"".join(zf.read(n) for n in zf.namelist())
    assert world.ada.user_id.encode() not in everything
    assert b"Lovelace" not in everything


# --- who may download, and when --------------------------------------------------------------


async def test_another_users_export_is_404_everywhere(world: World) -> None:
    ready = await world.ready_export()
    for path in (f"/exports/{ready['id']}", f"/exports/{ready['id']}/download"):
        reply = await world.call("GET", path, who="bob")
        assert reply.status == 404, path
        assert reply.body["detail"] == "no such export"
    listing = await world.call("GET", "/exports", who="bob")
    assert listing.body == {"items": [], "next": None}


async def test_a_download_without_a_token_is_401(world: World) -> None:
    ready = await world.ready_export()
    reply = await download(world, ready["id"], who=None)
    assert reply.status == 401


@pytest.mark.parametrize("bad", ["exp_nope", "exp_" + "0" * 32, "msg_" + "0" * 32])
async def test_an_unknown_export_is_404(world: World, bad: str) -> None:
    assert (await world.call("GET", f"/exports/{bad}")).status == 404
    assert (await download(world, bad)).status == 404


async def test_a_pending_export_is_not_downloadable_yet(world: World) -> None:
    pending = export.request_export(world.db, world.ada.user_id)
    reply = await download(world, pending.id)
    assert reply.status == 409
    assert "still being prepared" in reply.body["detail"]


async def test_asking_again_while_pending_gives_the_same_export(world: World) -> None:
    first = export.request_export(world.db, world.ada.user_id)
    reply = await world.call("POST", "/exports")
    assert reply.status == 202 and reply.body["id"] == first.id


async def test_the_list_pages_newest_first(world: World) -> None:
    ids = []
    for _ in range(3):
        ids.append((await world.ready_export())["id"])
    first = await world.call("GET", "/exports?limit=2")
    assert [e["id"] for e in first.body["items"]] == ids[::-1][:2]
    rest = await world.call("GET", f"/exports?limit=2&cursor={first.body['next']}")
    assert [e["id"] for e in rest.body["items"]] == ids[:1] and rest.body["next"] is None


async def test_a_fourth_ready_export_is_refused_until_one_expires(world: World) -> None:
    ids = [(await world.ready_export())["id"] for _ in range(export.MAX_READY)]
    reply = await world.call("POST", "/exports")
    assert reply.status == 429 and "wait for one to expire" in reply.body["detail"]
    with world.db.write.begin() as conn:
        conn.execute(
            exports_t.update()
            .where(exports_t.c.id == ids[0])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await world.call("POST", "/exports")).status == 202


async def test_an_expired_export_is_410_then_gone_after_retention(
    world: World, settings: Settings
) -> None:
    ready = await world.ready_export()
    path = world.exports_dir / f"{ready['id']}.zip"
    with world.db.write.begin() as conn:
        conn.execute(
            exports_t.update()
            .where(exports_t.c.id == ready["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert (await world.call("GET", f"/exports/{ready['id']}")).body["state"] == "expired"
    reply = await download(world, ready["id"])
    assert reply.status == 410 and "request a new one" in reply.body["detail"]
    result = run_retention(settings, world.db, world.blobs)
    assert result.exports_deleted == 1
    assert not path.exists()
    assert (await download(world, ready["id"])).status == 404


async def test_an_unexpired_export_survives_retention(world: World, settings: Settings) -> None:
    ready = await world.ready_export()
    assert run_retention(settings, world.db, world.blobs).exports_deleted == 0
    assert (await download(world, ready["id"])).status == 200


# --- failure ---------------------------------------------------------------------------------


async def test_an_unreadable_blob_fails_the_export_with_a_reason_and_no_file(
    world: World,
) -> None:
    import hashlib

    digest = hashlib.sha256(PHOTO).hexdigest()
    (world.blob_dir / digest[:2] / digest[2:4] / digest).unlink()
    pending = export.request_export(world.db, world.ada.user_id)
    record = export.build(
        world.db, world.blobs, world.exports_dir, pending.id, ttl=timedelta(hours=1)
    )
    assert record is not None and record.state == "failed"
    assert record.error is not None and "could not be read" in record.error
    assert list(world.exports_dir.iterdir()) == []
    reply = await download(world, pending.id)
    assert reply.status == 409 and "could not be prepared" in reply.body["detail"]
    shown = await world.call("GET", f"/exports/{pending.id}")
    assert shown.body["state"] == "failed" and shown.body["error"] == record.error


async def test_building_twice_keeps_the_first_archive(world: World) -> None:
    ready = await world.ready_export()
    before = (world.exports_dir / f"{ready['id']}.zip").read_bytes()
    again = export.build(
        world.db, world.blobs, world.exports_dir, ready["id"], ttl=timedelta(hours=1)
    )
    assert again is not None and again.sha256 == ready["sha256"]
    assert (world.exports_dir / f"{ready['id']}.zip").read_bytes() == before


async def test_an_export_being_built_elsewhere_is_not_built_twice(world: World) -> None:
    pending = export.request_export(world.db, world.ada.user_id)
    jobs = world.client.app[JOBS]
    # Another worker's build holds the export's lease.
    assert leases.try_lease(world.db, f"export:{pending.id}", "other", timedelta(hours=1))
    await asyncio.to_thread(jobs._build_export, pending.id)
    shown = await world.call("GET", f"/exports/{pending.id}")
    assert shown.body["state"] == "pending"
    leases.release(world.db, f"export:{pending.id}", "other")
    await asyncio.to_thread(jobs._build_export, pending.id)
    shown = await world.call("GET", f"/exports/{pending.id}")
    assert shown.body["state"] == "ready"


# --- the sweeper: lost jobs, and exports that never finish -------------------------------------

GRACE_S, GIVE_UP_S = 600.0, 3600.0


def pending_since(world: World, age: timedelta, now: datetime) -> str:
    """A pending export of Ada's requested ``age`` before ``now``."""
    pending = export.request_export(world.db, world.ada.user_id, now=now - age)
    return pending.id


def state_of(world: World, export_id: str) -> tuple[str, str | None]:
    record = export.get_export(world.db, world.ada.user_id, export_id)
    return record.state, record.error


async def test_a_pending_export_past_the_grace_is_enqueued_again(world: World) -> None:
    now = datetime.now(UTC)
    export_id = pending_since(world, timedelta(seconds=GRACE_S + 60), now)
    found = export.pending_exports(
        world.db, older_than_s=GRACE_S, younger_than_s=GIVE_UP_S, now=now
    )
    assert found == [export_id]


async def test_a_pending_export_within_the_grace_is_left_to_its_job(world: World) -> None:
    now = datetime.now(UTC)
    pending_since(world, timedelta(seconds=GRACE_S - 60), now)
    found = export.pending_exports(
        world.db, older_than_s=GRACE_S, younger_than_s=GIVE_UP_S, now=now
    )
    assert found == []


async def test_an_export_pending_past_every_attempt_is_failed_not_enqueued(world: World) -> None:
    now = datetime.now(UTC)
    export_id = pending_since(world, timedelta(seconds=GIVE_UP_S + 60), now)
    found = export.pending_exports(
        world.db, older_than_s=GRACE_S, younger_than_s=GIVE_UP_S, now=now
    )
    assert found == []
    assert export.fail_stale_exports(world.db, older_than_s=GIVE_UP_S, now=now) == [export_id]
    assert state_of(world, export_id) == ("failed", export.GAVE_UP)
    shown = await world.call("GET", f"/exports/{export_id}")
    assert shown.body["state"] == "failed" and "request a new export" in shown.body["error"]
    # Given up once: a later sweep finds nothing more to do.
    assert export.fail_stale_exports(world.db, older_than_s=GIVE_UP_S, now=now) == []


async def test_giving_up_leaves_younger_pending_and_finished_exports_alone(
    world: World,
) -> None:
    ready = await world.ready_export()
    now = datetime.now(UTC) + timedelta(seconds=GIVE_UP_S * 2)  # the ready one is old too
    young = pending_since(world, timedelta(seconds=GIVE_UP_S - 60), now)
    assert export.fail_stale_exports(world.db, older_than_s=GIVE_UP_S, now=now) == []
    assert state_of(world, young) == ("pending", None)
    assert state_of(world, ready["id"])[0] == "ready"


async def test_a_failed_export_does_not_block_a_new_request(world: World) -> None:
    now = datetime.now(UTC)
    stale = pending_since(world, timedelta(seconds=GIVE_UP_S + 60), now)
    export.fail_stale_exports(world.db, older_than_s=GIVE_UP_S, now=now)
    fresh = export.request_export(world.db, world.ada.user_id, now=now)
    assert fresh.id != stale and fresh.state == "pending"


# --- half-written archives ------------------------------------------------------------------


def leftover_temp(world: World, export_id: str, age: timedelta) -> Path:
    """The temporary file a build killed mid-way (kill -9, OOM) leaves behind."""
    world.exports_dir.mkdir(parents=True, exist_ok=True)
    path = world.exports_dir / f"{export.temp_prefix(export_id)}k1ll3d.zip"
    path.write_bytes(b"PK half an archive of Ada's data")
    when = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (when, when))
    return path


async def test_a_build_writes_its_temporary_file_under_the_export_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = export.request_export(world.db, world.ada.user_id)
    seen: list[str] = []
    real_write = export.write_archive

    def looking_write(*args: Any) -> None:
        # What is on disk while the archive is being written.
        seen.extend(p.name for p in world.exports_dir.iterdir())
        real_write(*args)

    monkeypatch.setattr(export, "write_archive", looking_write)
    export.build(world.db, world.blobs, world.exports_dir, pending.id, ttl=timedelta(hours=1))
    assert len(seen) == 1 and seen[0].startswith(f".tmp-{pending.id}-"), seen
    assert [p.name for p in world.exports_dir.iterdir()] == [f"{pending.id}.zip"]


async def test_retention_removes_a_temporary_file_older_than_a_build_may_run(
    world: World, settings: Settings
) -> None:
    pending = export.request_export(world.db, world.ada.user_id)
    old = leftover_temp(world, pending.id, timedelta(hours=2))
    run_retention(settings, world.db, world.blobs)
    assert not old.exists()


async def test_retention_keeps_the_temporary_file_of_a_build_in_progress(
    world: World, settings: Settings
) -> None:
    pending = export.request_export(world.db, world.ada.user_id)
    fresh = leftover_temp(world, pending.id, timedelta(minutes=5))
    run_retention(settings, world.db, world.blobs)
    assert fresh.exists()


async def test_a_temporary_name_is_refused_for_anything_but_an_export_id() -> None:
    with pytest.raises(ValueError, match="not an export id"):
        export.temp_prefix("*")
