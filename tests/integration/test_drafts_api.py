"""Drafts through the client API on SQLite and PostgreSQL: create, edit, attach,
delete, isolation between users, hostile bodies, and sending an SMS draft through
the twilio package to a fake Twilio on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.openapi import openapi_document
from inbox import drafts, store
from inbox.db import Database
from inbox.models import attachments_t, messages_t
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, twilio_form
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import make_user, post_signed
from tests.integration.openapi_check import checked_call

USER_NUMBER = "+14155550199"
FRIEND = "+14155550100"
Client = TestClient[Any, Any]
DOC = openapi_document()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


def configured(settings: Settings, fake: FakeTwilio) -> Settings:
    twilio = settings.bridges.twilio.model_copy(
        update={"api_base_url": fake.base_url, "media_max_bytes": 4096}
    )
    return settings.model_copy(
        update={"bridges": settings.bridges.model_copy(update={"twilio": twilio})}
    )


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=USER_NUMBER)


@pytest.fixture
def token(db: Database, user_id: str) -> str:
    return store.create_token(db, user_id)[1]


@pytest.fixture
def eve(db: Database) -> str:
    eve_id = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Eve")
    return store.create_token(db, eve_id)[1]


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    user_id: str,
    fake: FakeTwilio,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    return await aiohttp_client(create_app(configured(settings, fake)))


async def call(client: Client, method: str, path: str, token: str | None, **kw: Any) -> Any:
    return await checked_call(client, DOC, method, path, token=token, **kw)


async def new_draft(client: Client, token: str, **fields: Any) -> dict[str, Any]:
    body = {"channel": "sms", "to": ["(415) 555-0100"], "text": "see you"} | fields
    reply = await call(client, "POST", "/drafts", token, json=body)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def attach(client: Client, token: str, draft_id: str, data: bytes, kind: str) -> Any:
    return await call(
        client,
        "POST",
        f"/drafts/{draft_id}/attachments?filename=../pic.png",
        token,
        data=data,
        headers={"Content-Type": kind},
    )


def rows(db: Database) -> tuple[int, int]:
    with db.read.connect() as conn:
        messages = conn.execute(sa.select(sa.func.count()).select_from(messages_t)).scalar_one()
        atts = conn.execute(sa.select(sa.func.count()).select_from(attachments_t)).scalar_one()
    return int(messages), int(atts)


def blob_exists(settings: Settings, data: bytes) -> bool:
    digest = hashlib.sha256(data).hexdigest()
    return (Path(settings.storage.blob_dir) / digest[:2] / digest[2:4] / digest).exists()


# --- create, read, edit, delete ---------------------------------------------------


async def test_a_draft_is_created_with_canonical_recipients(client: Client, token: str) -> None:
    draft = await new_draft(client, token)
    assert (draft["channel"], draft["to"], draft["text"]) == ("sms", [FRIEND], "see you")
    got = await call(client, "GET", f"/drafts/{draft['id']}", token)
    assert got.body == draft


async def test_a_draft_is_a_message_in_drafts_and_in_no_other_folder(
    client: Client, token: str
) -> None:
    draft = await new_draft(client, token)
    message = await call(client, "GET", f"/messages/{draft['id']}", token)
    assert (message.body["folder"], message.body["status"]) == ("drafts", "draft")
    for folder in ("inbox", "quarantine", "sent"):
        listed = await call(client, "GET", f"/messages?folder={folder}", token)
        assert listed.body["items"] == []
    refused = await call(client, "GET", "/messages?folder=drafts", token)
    assert refused.status == 400
    assert (await call(client, "GET", "/conversations", token)).body["items"] == []


async def test_patch_changes_only_the_fields_given(client: Client, token: str) -> None:
    draft = await new_draft(client, token)
    changed = await call(client, "PATCH", f"/drafts/{draft['id']}", token, json={"text": "later"})
    assert changed.status == 200
    assert (changed.body["text"], changed.body["to"]) == ("later", [FRIEND])


async def test_email_drafts_keep_several_recipients_and_a_subject(
    client: Client, token: str
) -> None:
    draft = await new_draft(
        client, token, channel="email", to=["A@Example.ORG", "b@example.org"], subject="Hi"
    )
    assert draft["to"] == ["A@example.org", "b@example.org"] and draft["subject"] == "Hi"
    cleared = await call(client, "PATCH", f"/drafts/{draft['id']}", token, json={"subject": None})
    assert cleared.body["subject"] is None


async def test_drafts_are_listed_newest_first_in_pages(client: Client, token: str) -> None:
    made = [(await new_draft(client, token, text=f"d{i}"))["id"] for i in range(3)]
    first = await call(client, "GET", "/drafts?limit=2", token)
    assert [d["id"] for d in first.body["items"]] == made[::-1][:2]
    rest = await call(client, "GET", f"/drafts?limit=2&cursor={first.body['next']}", token)
    assert [d["id"] for d in rest.body["items"]] == made[:1] and rest.body["next"] is None


async def test_deleting_a_draft_removes_its_attachments_and_their_blobs(
    client: Client, token: str, db: Database, settings: Settings
) -> None:
    draft = await new_draft(client, token)
    assert (await attach(client, token, draft["id"], PNG, "image/png")).status == 201
    assert blob_exists(settings, PNG)
    assert (await call(client, "DELETE", f"/drafts/{draft['id']}", token)).status == 204
    assert rows(db) == (0, 0)
    assert not blob_exists(settings, PNG)
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).status == 404


async def test_a_blob_another_draft_uses_survives_the_delete(
    client: Client, token: str, settings: Settings
) -> None:
    one, two = await new_draft(client, token), await new_draft(client, token)
    for draft in (one, two):
        await attach(client, token, draft["id"], PNG, "image/png")
    await call(client, "DELETE", f"/drafts/{one['id']}", token)
    assert blob_exists(settings, PNG)


# --- attachments ----------------------------------------------------------------


async def test_an_attachment_is_kept_with_a_safe_name(client: Client, token: str) -> None:
    draft = await new_draft(client, token)
    reply = await attach(client, token, draft["id"], PNG, "image/png")
    (att,) = reply.body["attachments"]
    assert (att["filename"], att["content_type"], att["size"]) == ("pic.png", "image/png", len(PNG))
    removed = await call(client, "DELETE", f"/drafts/{draft['id']}/attachments/{att['id']}", token)
    assert removed.status == 204
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).body["attachments"] == []


@pytest.mark.parametrize(
    ("data", "kind", "status"),
    [
        (b"<svg onload=alert(1)>", "image/svg+xml", 400),  # not on the allow-list
        (b"<html>", "text/html", 400),
        (b"", "image/png", 400),
        (b"\x00" * 5000, "image/png", 413),  # over media_max_bytes (4096 here)
    ],
)
async def test_refused_attachments_leave_the_store_unchanged(
    client: Client,
    token: str,
    db: Database,
    settings: Settings,
    data: bytes,
    kind: str,
    status: int,
) -> None:
    draft = await new_draft(client, token)
    reply = await attach(client, token, draft["id"], data, kind)
    assert reply.status == status, reply.body
    assert rows(db) == (1, 0)
    assert not data or not blob_exists(settings, data)


async def test_a_multipart_upload_is_415(client: Client, token: str) -> None:
    draft = await new_draft(client, token)
    reply = await attach(client, token, draft["id"], b"--x\r\n", "multipart/form-data; boundary=x")
    assert reply.status == 415


async def test_the_attachment_count_is_limited(
    client: Client, token: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drafts, "MAX_ATTACHMENTS", 2)
    draft = await new_draft(client, token)
    for i in range(2):
        assert (
            await attach(client, token, draft["id"], PNG + bytes([i]), "image/png")
        ).status == 201
    over = await attach(client, token, draft["id"], PNG + b"\x09", "image/png")
    assert over.status == 400 and "at most 2" in over.body["detail"]
    assert rows(db) == (1, 2)


# --- hostile bodies -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"to": [FRIEND]},  # no channel
        {"channel": "fax"},
        {"channel": "sms", "to": FRIEND},  # not a list
        {"channel": "sms", "to": [FRIEND, "+14155550111"]},
        {"channel": "sms", "to": ["12"]},
        {"channel": "sms", "subject": "only email has one"},
        {"channel": "sms", "text": "x" * 1601},
        {"channel": "sms", "text": 5},
        {"channel": "sms", "text": "nul\x00"},
        {"channel": "email", "to": [f"a{i}@example.org" for i in range(11)]},
        {"channel": "email", "to": ["x" * 60 + f"{i}@example.org" for i in range(5)]},
        {"channel": "email", "to": ["ü@example.org"]},
        {"channel": "email", "subject": "s" * 999},
        {"channel": "sms", "bcc": ["x@y.z"]},
    ],
)
async def test_malformed_drafts_are_400_and_store_nothing(
    client: Client, token: str, db: Database, body: dict[str, Any]
) -> None:
    reply = await call(client, "POST", "/drafts", token, json=body)
    assert reply.status == 400, reply.body
    assert rows(db) == (0, 0)


async def test_a_body_that_is_not_json_is_400(client: Client, token: str, db: Database) -> None:
    reply = await call(
        client,
        "POST",
        "/drafts",
        token,
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 400 and rows(db) == (0, 0)


async def test_an_oversized_body_is_413(client: Client, token: str, db: Database) -> None:
    body = json.dumps({"channel": "email", "text": "x" * (1024 * 1024 + 10)}).encode()
    reply = await call(
        client,
        "POST",
        "/drafts",
        token,
        data=io.BytesIO(body),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 413 and rows(db) == (0, 0)


async def test_an_empty_patch_is_400(client: Client, token: str) -> None:
    draft = await new_draft(client, token)
    reply = await call(client, "PATCH", f"/drafts/{draft['id']}", token, json={})
    assert reply.status == 400


# --- isolation --------------------------------------------------------------------


async def test_another_users_draft_is_404_at_every_endpoint(
    client: Client, token: str, eve: str, db: Database
) -> None:
    draft = await new_draft(client, token)
    att = (await attach(client, token, draft["id"], PNG, "image/png")).body["attachments"][0]
    base = f"/drafts/{draft['id']}"
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", base, {}),
        ("PATCH", base, {"json": {"text": "mine now"}}),
        ("DELETE", base, {}),
        ("POST", base + "/attachments", {"data": PNG, "headers": {"Content-Type": "image/png"}}),
        ("DELETE", f"{base}/attachments/{att['id']}", {}),
        ("POST", base + "/send", {}),
    ]
    for method, path, kwargs in attempts:
        reply = await call(client, method, path, eve, **kwargs)
        assert reply.status == 404, (method, path)
    assert (await call(client, "GET", "/drafts", eve)).body["items"] == []
    mine = await call(client, "GET", base, token)
    assert mine.body == draft | {"attachments": [att], "updated_at": mine.body["updated_at"]}
    assert rows(db) == (1, 1)


async def test_a_malformed_draft_id_is_404(client: Client, token: str) -> None:
    assert (await call(client, "GET", "/drafts/not-an-id", token)).status == 404


# --- sending an SMS draft ------------------------------------------------------------


async def until_status(client: Client, token: str, message_id: str, wanted: str) -> str:
    for _ in range(200):
        status = (await call(client, "GET", f"/messages/{message_id}", token)).body["status"]
        if status == wanted:
            return str(status)
        await asyncio.sleep(0.05)
    return str(status)


async def test_an_sms_draft_is_sent_through_twilio(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    draft = await new_draft(client, token)
    sent = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert sent.status == 202
    assert (sent.body["folder"], sent.body["status"], sent.body["sender"]) == (
        "sent",
        "pending",
        USER_NUMBER,
    )
    assert await until_status(client, token, draft["id"], "queued") == "queued"
    (created,) = fake.created
    assert (created.to, created.from_, created.body) == (FRIEND, USER_NUMBER, "see you")
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).status == 404
    listed = await call(client, "GET", "/messages?folder=sent", token)
    assert [m["id"] for m in listed.body["items"]] == [draft["id"]]
    (conv,) = (await call(client, "GET", "/conversations", token)).body["items"]
    assert conv["key"] == FRIEND


async def test_an_sms_draft_with_a_picture_goes_as_mms(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    draft = await new_draft(client, token)
    await attach(client, token, draft["id"], PNG, "image/png")
    sent = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert sent.body["channel"] == "mms"
    await until_status(client, token, draft["id"], "queued")
    (created,) = fake.created
    assert len(created.form.get("MediaUrl", [])) == 1


async def test_a_recipient_who_texted_stop_is_409_and_the_draft_stays(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    await post_signed(client, twilio_form(sender=FRIEND, to=USER_NUMBER, body="STOP"))
    draft = await new_draft(client, token)
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 409 and "STOP" in refused.body["detail"]
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).body == draft
    assert fake.created == []


async def test_a_user_without_a_number_gets_409_and_keeps_the_draft(
    client: Client, db: Database
) -> None:
    from datetime import date

    from inbox.addresses import E164

    plain = store.create_user(
        db, first_name="Pat", last_name="N", date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460957"),
    ).id  # fmt: skip
    token = store.create_token(db, plain)[1]
    draft = await new_draft(client, token)
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 409 and "number" in refused.body["detail"]
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).status == 200


async def test_an_empty_sms_draft_is_400_on_send(client: Client, token: str) -> None:
    draft = await new_draft(client, token, text="  ")
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 400 and "empty" in refused.body["detail"]


async def test_sending_twice_is_404_the_second_time(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    draft = await new_draft(client, token)
    first, second = await asyncio.gather(
        call(client, "POST", f"/drafts/{draft['id']}/send", token),
        call(client, "POST", f"/drafts/{draft['id']}/send", token),
    )
    assert sorted([first.status, second.status]) == [202, 404]
    await until_status(client, token, draft["id"], "queued")
    assert len(fake.created) == 1
