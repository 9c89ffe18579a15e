"""MMS media end to end: a signed webhook with MediaUrlN, the media job (dramatiq,
in-memory broker inside the app, or Redis), a fake Twilio media host on 127.0.0.1,
the blob store, and the attachment rows' states."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from bridges.media import StaticHostResolver
from config import Settings
from gateway.app import create_app
from gateway.jobs import Jobs
from gateway.media_jobs import fetch_message_media, sweep_pending_media
from inbox import store
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database
from inbox.message import Channel, InboundAttachment
from inbox.models import attachments_t
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, missing_service, twilio_form
from tests.fakes.media_server import MediaServer, media_bytes
from tests.integration.helpers import inbound, make_user, message_rows, post_signed, run_batch

USER_NUMBER = "+14155550199"
Client = TestClient[Any, Any]


@pytest.fixture
async def api() -> AsyncIterator[MediaServer]:
    async with MediaServer("api.test", credentials=(ACCOUNT_SID, AUTH_TOKEN)) as server:
        yield server


@pytest.fixture
async def cdn() -> AsyncIterator[MediaServer]:
    async with MediaServer("cdn.test", refuse_authorization=True) as server:
        yield server


@pytest.fixture
def resolver() -> StaticHostResolver:
    return StaticHostResolver(
        {"api.test": ["127.0.0.1"], "cdn.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]}
    )


def media_settings(settings: Settings, **extra: Any) -> Settings:
    twilio = settings.bridges.twilio.model_copy(
        update={
            "media_hosts": ["api.test", "cdn.test"],
            "media_allow_http": True,  # the fake speaks plain http on 127.0.0.1
            "media_allow_private": True,
            "media_timeout_s": 5.0,
            **extra,
        }
    )
    return settings.model_copy(
        update={"bridges": settings.bridges.model_copy(update={"twilio": twilio})}
    )


def mms(urls: list[str], types: list[str] | None = None) -> dict[str, str]:
    extra = {"NumMedia": str(len(urls))}
    for i, url in enumerate(urls):
        extra[f"MediaUrl{i}"] = url
        extra[f"MediaContentType{i}"] = (types or ["image/jpeg"] * len(urls))[i]
    return twilio_form(body="look", **extra)


def stored_mms(db: Database, sid: str, *urls: str) -> str:
    """An MMS ingested through the pipeline with pending media; its message id."""
    base = inbound(sid, to=USER_NUMBER)
    media = tuple(InboundAttachment(content_type="image/jpeg", remote_url=u) for u in urls)
    (result,) = run_batch(db, [dataclasses.replace(base, channel=Channel.MMS, attachments=media)])
    assert result.message_id is not None
    return result.message_id


def attachment_rows(db: Database) -> list[Any]:
    with db.read.connect() as conn:
        return list(conn.execute(sa.select(attachments_t).order_by(attachments_t.c.id)))


async def settled(db: Database, count: int, timeout: float = 10.0) -> list[Any]:
    """The attachment rows once none is pending."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = attachment_rows(db)
        if len(rows) == count and all(r.status != "pending" for r in rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still pending: {[r.status for r in rows]}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    resolver: StaticHostResolver,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    return await aiohttp_client(create_app(media_settings(settings), media_resolver=resolver))


@pytest.mark.parametrize("count", [1, 10])
async def test_mms_media_are_fetched_into_the_blob_store(
    client: Client, db: Database, settings: Settings, api: MediaServer, count: int
) -> None:
    resp = await post_signed(client, mms([api.url(f"/media/{i}") for i in range(count)]))
    assert resp.status == 200
    rows = await settled(db, count)
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    assert [r.status for r in rows] == ["stored"] * count
    for row in rows:
        n = int(row.remote_url.rsplit("/", 1)[1])
        assert row.sha256 == hashlib.sha256(media_bytes(n)).hexdigest()
        assert blobs.get(row.sha256) == media_bytes(n)


async def test_an_sms_without_media_enqueues_nothing(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(body="plain"))
    assert resp.status == 200
    assert len(message_rows(db)) == 1 and attachment_rows(db) == []


async def test_a_redirect_to_the_cdn_is_followed_without_the_credentials(
    client: Client, db: Database, api: MediaServer, cdn: MediaServer
) -> None:
    url = api.url(f"/redirect?to={cdn.url('/media/3')}")
    await post_signed(client, mms([url]))
    (row,) = await settled(db, 1)
    assert row.status == "stored"
    assert cdn.authorizations == [None]


async def test_a_redirect_to_a_host_not_allowed_fails_with_a_reason(
    client: Client, db: Database, api: MediaServer
) -> None:
    async with MediaServer("evil.test") as evil:
        await post_signed(client, mms([api.url(f"/redirect?to={evil.url('/media/1')}")]))
        (row,) = await settled(db, 1)
        assert row.status == "failed" and "evil.test" in row.error
        assert evil.connections == 0
    assert len(message_rows(db)) == 1  # the message itself stays


async def test_a_disallowed_type_fails_and_the_other_media_are_stored(
    client: Client, db: Database, api: MediaServer
) -> None:
    await post_signed(client, mms([api.url("/typed?ct=text/html"), api.url("/media/1")]))
    rows = await settled(db, 2)
    assert sorted(r.status for r in rows) == ["failed", "stored"]


async def test_media_over_the_per_message_cap_fail(
    settings: Settings,
    db: Database,
    resolver: StaticHostResolver,
    api: MediaServer,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    small = media_settings(settings, media_max_bytes=4096)
    client = await aiohttp_client(create_app(small, media_resolver=resolver))
    await post_signed(client, mms([api.url("/media/1"), api.url("/media/2")]))
    rows = await settled(db, 2)
    assert "failed" in {r.status for r in rows}
    assert all("limit" in r.error or "large" in r.error for r in rows if r.status == "failed")


async def test_retryable_failures_are_retried_then_marked_failed(
    settings: Settings, db: Database, resolver: StaticHostResolver, api: MediaServer
) -> None:
    # The job function itself: on a 503 it asks to be retried, until the last attempt.
    from gateway.media_jobs import MediaRetry

    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    message_id = stored_mms(db, "SMmedia1", api.url("/status/503"))
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    configured = media_settings(settings)

    def run(last: bool) -> Any:
        return fetch_message_media(
            configured, db, blobs, message_id, last_attempt=last, resolver=resolver
        )

    with pytest.raises(MediaRetry):
        await asyncio.to_thread(run, False)
    assert attachment_rows(db)[0].status == "pending"
    await asyncio.to_thread(run, True)
    (row,) = attachment_rows(db)
    assert row.status == "failed" and "503" in row.error


async def test_the_job_is_idempotent(
    client: Client, db: Database, settings: Settings, api: MediaServer, resolver: StaticHostResolver
) -> None:
    await post_signed(client, mms([api.url("/media/1")]))
    (row,) = await settled(db, 1)
    seen = len(api.requests)
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    outcome = await asyncio.to_thread(
        fetch_message_media,
        media_settings(settings),
        db,
        blobs,
        row.message_id,
        last_attempt=True,
        resolver=resolver,
    )
    assert (outcome.stored, outcome.failed) == (0, 0)
    assert len(api.requests) == seen


class _Recorder:
    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue_media(self, message_id: str) -> None:
        self.enqueued.append(message_id)


async def test_the_sweeper_finds_media_whose_job_was_lost(
    settings: Settings, db: Database, api: MediaServer
) -> None:

    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    message_id = stored_mms(db, "SMlost", api.url("/media/1"))
    recorder = _Recorder()
    assert sweep_pending_media(db, recorder, older_than_s=3600) == 0  # not overdue yet
    assert sweep_pending_media(db, recorder, older_than_s=0) == 1
    assert recorder.enqueued == [message_id]


async def test_media_jobs_run_through_redis(
    settings: Settings, db: Database, resolver: StaticHostResolver, api: MediaServer
) -> None:
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.RedisError:
        missing_service("Redis", "no Redis at 127.0.0.1:6379")

    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    message_id = stored_mms(db, "SMredis", api.url("/media/7"))
    configured = media_settings(settings).model_copy(
        update={"redis": settings.redis.model_copy(update={"url": "redis://127.0.0.1:6379/0"})}
    )
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    producer = Jobs(configured, db, blobs, media_resolver=resolver)
    consumer = Jobs(configured, db, blobs, media_resolver=resolver)
    try:
        producer.enqueue_media(message_id)
        consumer.start_worker()
        (row,) = await settled(db, 1)
        assert row.status == "stored"
    finally:
        await asyncio.to_thread(consumer.stop)
        producer.stop()


async def test_media_can_be_deleted_from_twilio_once_stored(
    settings: Settings,
    db: Database,
    resolver: StaticHostResolver,
    api: MediaServer,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    from tests.fakes.twilio_api import FakeTwilio

    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    message_sid, media_sid = "MM" + "1" * 32, "ME" + "2" * 32
    url = api.url(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/{media_sid}")
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio_api:
        configured = media_settings(
            settings, media_delete_after_fetch=True, api_base_url=twilio_api.base_url
        )
        client = await aiohttp_client(create_app(configured, media_resolver=resolver))
        await post_signed(client, mms([url]))
        (row,) = await settled(db, 1)
        assert row.status == "stored"
        deadline = asyncio.get_running_loop().time() + 5
        while not twilio_api.deleted_media and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert twilio_api.deleted_media == [(message_sid, media_sid)]


async def test_media_stay_on_twilio_by_default(
    settings: Settings,
    db: Database,
    resolver: StaticHostResolver,
    api: MediaServer,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    from tests.fakes.twilio_api import FakeTwilio

    make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    url = api.url(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM{'1' * 32}/Media/ME{'3' * 32}")
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio_api:
        configured = media_settings(settings, api_base_url=twilio_api.base_url)
        client = await aiohttp_client(create_app(configured, media_resolver=resolver))
        await post_signed(client, mms([url]))
        (row,) = await settled(db, 1)
        assert row.status == "stored"
        await asyncio.sleep(0.2)
        assert twilio_api.deleted_media == [] and twilio_api.requests == 0


async def test_media_of_a_message_deleted_during_the_fetch_leave_no_blob(
    settings: Settings, db: Database, aiohttp_server: Any
) -> None:
    from aiohttp import web

    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    message_ids: list[str] = []
    content = b"\xff\xd8\xff" + b"deleted meanwhile" * 20

    async def media(request: web.Request) -> web.Response:
        # The user deletes the message while its media are on the way.
        blobs = DirectoryBlobStore(settings.storage.blob_dir)
        await asyncio.to_thread(store.delete_message, db, blobs, user_id, message_ids[0])
        return web.Response(body=content, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/m", media)
    server = await aiohttp_server(app)
    message_ids.append(stored_mms(db, "MMdeleted", f"http://127.0.0.1:{server.port}/m"))
    configured = media_settings(settings, media_hosts=["127.0.0.1"])
    blobs = DirectoryBlobStore(settings.storage.blob_dir)
    outcome = await asyncio.to_thread(
        fetch_message_media, configured, db, blobs, message_ids[0], last_attempt=True
    )
    assert outcome.stored == 0
    assert not blobs.exists(hashlib.sha256(content).hexdigest())
