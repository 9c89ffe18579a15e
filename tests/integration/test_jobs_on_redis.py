"""Every background job, run through the real Redis broker (127.0.0.1:6379) instead of
the in-process one, on SQLite and PostgreSQL.

The other test modules drive each job through the in-memory broker the embedded
default uses; these drive the same API flows with ``redis.url`` set, so that the app's
own worker consumes from Redis exactly as ``optmsg worker`` does in distributed mode.
Each test gets its own queue namespace (``redis.namespace``) and removes its keys, so
the shared Redis is never flushed. MMS media through Redis: test_mms_media.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from inbox import store
from inbox.db import Database
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, REDIS_URL, twilio_form
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import make_user, post_signed

Client = TestClient[Any, Any]
ADA_NUMBER = "+14155550199"  # twilio_form's default To
ADA_EMAIL = "ada@optmsg.test"
FRIEND = "+14155550100"
WAIT_S = 15.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = await SmtpSink().start()
    yield server
    await server.stop()


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=ADA_NUMBER, email=ADA_EMAIL)


@pytest.fixture
def token(db: Database, user_id: str) -> str:
    return store.create_token(db, user_id)[1]


@pytest.fixture
async def client(
    settings: Settings,
    redis_namespace: str,
    fake: FakeTwilio,
    sink: SmtpSink,
    user_id: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    twilio = settings.bridges.twilio.model_copy(update={"api_base_url": fake.base_url})
    configured = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(
                update={"url": REDIS_URL, "namespace": redis_namespace}
            ),
            "bridges": settings.bridges.model_copy(update={"twilio": twilio}),
            "email_out": settings.email_out.model_copy(
                update={"enabled": True, "relay": f"127.0.0.1:{sink.port}", "starttls": False}
            ),
        }
    )
    return await aiohttp_client(create_app(configured))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until(client: Client, token: str, path: str, field: str, wanted: str) -> dict[str, Any]:
    """GET ``path`` until its ``field`` is ``wanted`` (bounded)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        resp = await client.get(f"/api/v1{path}", headers=auth(token))
        assert resp.status == 200, await resp.text()
        found = dict(await resp.json())
        if found[field] == wanted:
            return found
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)


async def test_an_sms_send_job_goes_through_redis_to_twilio(
    client: Client, token: str, fake: FakeTwilio, redis_namespace: str
) -> None:
    resp = await client.post(
        "/api/v1/messages", json={"to": "(415) 555-0100", "text": "hi"}, headers=auth(token)
    )
    assert resp.status == 202
    message_id = (await resp.json())["id"]
    await until(client, token, f"/messages/{message_id}", "status", "queued")
    (sent,) = fake.created
    assert (sent.to, sent.from_, sent.body) == (FRIEND, ADA_NUMBER, "hi")


async def test_an_email_send_job_goes_through_redis_to_the_relay(
    client: Client, token: str, sink: SmtpSink
) -> None:
    draft = await client.post(
        "/api/v1/drafts",
        json={"channel": "email", "to": ["bob@example.org"], "subject": "Hi", "text": "Hello"},
        headers=auth(token),
    )
    assert draft.status == 201
    draft_id = (await draft.json())["id"]
    sent = await client.post(f"/api/v1/drafts/{draft_id}/send", headers=auth(token))
    assert sent.status == 202
    await until(client, token, f"/messages/{draft_id}", "status", "sent")
    (got,) = sink.received
    assert (got.mail_from, got.rcpt_tos) == (ADA_EMAIL, ("bob@example.org",))


async def test_an_export_job_goes_through_redis_and_the_archive_downloads(
    client: Client, token: str
) -> None:
    resp = await client.post("/api/v1/exports", headers=auth(token))
    assert resp.status == 202
    export_id = (await resp.json())["id"]
    await until(client, token, f"/exports/{export_id}", "state", "ready")
    download = await client.get(f"/api/v1/exports/{export_id}/download", headers=auth(token))
    assert download.status == 200
    assert (await download.read())[:4] == b"PK\x03\x04"


async def test_a_provider_delete_job_goes_through_redis_to_twilio(
    client: Client, token: str, fake: FakeTwilio, db: Database
) -> None:
    sid = "SM" + secrets.token_hex(16)
    fake.add_message(sid)
    assert (await post_signed(client, twilio_form(sid=sid, body="meet at 6"))).status == 200
    listed = await client.get("/api/v1/messages?folder=quarantine", headers=auth(token))
    (held,) = (await listed.json())["items"]
    resp = await client.delete(f"/api/v1/messages/{held['id']}?provider=true", headers=auth(token))
    assert resp.status == 204
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while fake.deleted_messages != [sid]:
        assert asyncio.get_running_loop().time() < deadline, fake.deleted_messages
        await asyncio.sleep(0.05)


async def test_the_jobs_use_only_their_own_namespace_in_redis(
    client: Client, token: str, fake: FakeTwilio, redis_namespace: str
) -> None:
    resp = await client.post(
        "/api/v1/messages", json={"to": FRIEND, "text": "hi"}, headers=auth(token)
    )
    assert resp.status == 202
    await until(client, token, f"/messages/{(await resp.json())['id']}", "status", "queued")
    keys = redis.Redis.from_url(REDIS_URL)
    try:
        # dramatiq keeps its queue keys (and the worker heartbeats) under the namespace.
        ours = [k.decode() for k in keys.scan_iter(match=f"{redis_namespace}:*", count=1000)]
    finally:
        keys.close()
    assert ours, "no queue keys under the test's namespace"
    assert all(k.startswith(redis_namespace + ":") for k in ours)
