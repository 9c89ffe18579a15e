"""Sending SMS end to end: the client API, the send job (in-process dramatiq), the
twilio package against a fake Twilio on 127.0.0.1, and signed status callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridges.twilio_rest import TwilioSender
from config import Settings
from gateway.app import create_app
from gateway.outbound import deliver_sms
from inbox import store
from inbox.db import Database
from inbox.outbound import SendRefused
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import make_user, post_signed

USER_NUMBER = "+14155550199"
FRIEND = "+14155550100"
STATUS_PATH = "/bridges/twilio/status"
Client = TestClient[Any, Any]


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


def with_fake(settings: Settings, fake: FakeTwilio) -> Settings:
    twilio = settings.bridges.twilio.model_copy(update={"api_base_url": fake.base_url})
    return settings.model_copy(
        update={"bridges": settings.bridges.model_copy(update={"twilio": twilio})}
    )


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=USER_NUMBER)


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    user_id: str,
    fake: FakeTwilio,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    return await aiohttp_client(create_app(with_fake(settings, fake)))


@pytest.fixture
def token(db: Database, user_id: str) -> str:
    return store.create_token(db, user_id)[1]


async def send(client: Client, token: str, to: str, text: str = "hi there") -> Any:
    return await client.post(
        "/api/v1/messages",
        json={"to": to, "text": text},
        headers={"Authorization": f"Bearer {token}"},
    )


async def message(client: Client, token: str, message_id: str) -> dict[str, Any]:
    resp = await client.get(
        f"/api/v1/messages/{message_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    return dict(await resp.json())


async def until_status(
    client: Client, token: str, message_id: str, wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await message(client, token, message_id)
        if found["status"] == wanted or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_sent_message_reaches_twilio_from_the_users_number(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    resp = await send(client, token, "(415) 555-0100")
    assert resp.status == 202
    created = await resp.json()
    assert (created["folder"], created["status"], created["recipient"]) == (
        "sent",
        "pending",
        FRIEND,
    )
    found = await until_status(client, token, created["id"], "queued")
    assert found["status"] == "queued"
    (sent,) = fake.created
    assert (sent.to, sent.from_, sent.body) == (FRIEND, USER_NUMBER, "hi there")
    assert sent.status_callback is not None and sent.status_callback.endswith(STATUS_PATH)


async def test_status_callbacks_move_the_message_forward_only(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    created = await (await send(client, token, FRIEND)).json()
    await until_status(client, token, created["id"], "queued")
    sid = fake.created[0].sid
    for status in ("sent", "delivered", "sent"):  # the last one arrives late
        form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID}
        resp = await post_signed(client, form, path=STATUS_PATH)
        assert resp.status == 200
    assert (await message(client, token, created["id"]))["status"] == "delivered"


async def test_an_unsigned_status_callback_is_refused(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    created = await (await send(client, token, FRIEND)).json()
    await until_status(client, token, created["id"], "queued")
    resp = await client.post(
        STATUS_PATH,
        data={"MessageSid": fake.created[0].sid, "MessageStatus": "failed"},
    )
    assert resp.status == 403
    assert (await message(client, token, created["id"]))["status"] == "queued"


async def test_a_recipient_who_texted_stop_is_refused_with_409(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    from tests.conftest import twilio_form

    await post_signed(client, twilio_form(sender=FRIEND, to=USER_NUMBER, body="STOP"))
    resp = await send(client, token, FRIEND)
    assert resp.status == 409
    assert "STOP" in (await resp.json())["detail"]
    assert fake.created == []


async def test_an_unreadable_number_is_a_400(client: Client, token: str) -> None:
    resp = await send(client, token, "12")
    assert resp.status == 400 and "too few digits" in (await resp.json())["detail"]


async def test_sending_needs_a_token(client: Client) -> None:
    resp = await client.post("/api/v1/messages", json={"to": FRIEND, "text": "x"})
    assert resp.status == 401


# --- the job, step by step ----------------------------------------------------------


@dataclass
class SendJob:
    """A pending message and the job's pieces: run() is one attempt of the send job."""

    settings: Settings
    db: Database
    sender: TwilioSender
    message_id: str

    async def run(self, *, last_attempt: bool = False) -> str:
        return await asyncio.to_thread(
            deliver_sms,
            self.settings,
            self.db,
            self.sender,
            self.message_id,
            last_attempt=last_attempt,
        )


@pytest.fixture
async def job(
    settings: Settings, db: Database, user_id: str, fake: FakeTwilio
) -> AsyncIterator[SendJob]:
    configured = with_fake(settings, fake)
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, fake.base_url)
    yield SendJob(configured, db, sender, await _pending(configured, db, user_id))
    sender.close()


async def _pending(settings: Settings, db: Database, user_id: str) -> str:
    from gateway.outbound import create_sms
    from inbox.addresses import E164

    return create_sms(settings, db, user_id, E164(FRIEND), "hello").message_id


async def test_a_5xx_is_retried_and_then_succeeds(job: SendJob, fake: FakeTwilio) -> None:
    from gateway.outbound import SendRetry

    fake.fail_next(500)
    with pytest.raises(SendRetry):
        await job.run()
    assert await job.run() == "queued" and len(fake.created) == 1


async def test_a_4xx_is_not_retried_and_fails_with_twilios_error(
    job: SendJob, fake: FakeTwilio, user_id: str
) -> None:
    fake.fail_next(400, code=21211, message="The 'To' number is not a valid phone number.")
    assert await job.run() == "failed"
    found = store.get_message(job.db, user_id, job.message_id)
    assert (found["status"], found["error_code"]) == ("failed", 21211)
    assert "not a valid phone number" in found["reason"]


async def test_error_21610_fails_the_message_and_records_the_opt_out(
    job: SendJob, fake: FakeTwilio, user_id: str
) -> None:
    from gateway.outbound import create_sms
    from inbox.addresses import E164

    fake.fail_next(400, code=21610, message="Attempt to send to unsubscribed recipient")
    await job.run()
    with pytest.raises(SendRefused):
        create_sms(job.settings, job.db, user_id, E164(FRIEND), "again")


async def test_exhausted_retries_mark_the_message_failed(
    job: SendJob, fake: FakeTwilio, user_id: str
) -> None:
    fake.fail_next(503)
    assert await job.run(last_attempt=True) == "failed"
    assert store.get_message(job.db, user_id, job.message_id)["status"] == "failed"


async def test_the_send_job_is_idempotent(job: SendJob, fake: FakeTwilio) -> None:
    for _ in range(2):
        await job.run()
    assert len(fake.created) == 1


# --- MMS: media served to Twilio from signed, expiring URLs -------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"picture" * 50


async def send_mms(client: Client, token: str) -> Any:
    import base64

    media = [
        {"content_type": "image/png", "filename": "p.png", "data": base64.b64encode(PNG).decode()}
    ]
    return await client.post(
        "/api/v1/messages",
        json={"to": FRIEND, "text": "look", "media": media},
        headers={"Authorization": f"Bearer {token}"},
    )


def local_path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_an_mms_hands_twilio_a_signed_url_that_serves_the_media(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    resp = await send_mms(client, token)
    assert resp.status == 202
    created = await resp.json()
    assert created["channel"] == "mms" and len(created["attachments"]) == 1
    await until_status(client, token, created["id"], "queued")
    (url,) = fake.created[0].form["MediaUrl"]
    fetched = await client.get(local_path(url))  # as Twilio would, without a token
    assert fetched.status == 200
    assert await fetched.read() == PNG
    assert fetched.headers["Content-Type"] == "image/png"
    assert fetched.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_tampered_media_url_is_refused(
    client: Client, token: str, fake: FakeTwilio
) -> None:
    created = await (await send_mms(client, token)).json()
    await until_status(client, token, created["id"], "queued")
    (url,) = fake.created[0].form["MediaUrl"]
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert (await client.get(local_path(tampered))).status == 403
    unsigned = local_path(url).split("?")[0]
    assert (await client.get(unsigned)).status == 403


def test_a_media_url_expires(settings: Settings) -> None:
    import time
    from urllib.parse import parse_qs, urlsplit

    from gateway.media_urls import URL_TTL_S, signed_url, valid

    url = signed_url(settings, "att_" + "0" * 32, now=time.time() - URL_TTL_S - 1)
    query = parse_qs(urlsplit(url).query)
    assert not valid(settings, "att_" + "0" * 32, query["expires"][0], query["signature"][0])


async def test_media_of_a_type_that_cannot_be_sent_is_a_400(client: Client, token: str) -> None:
    resp = await client.post(
        "/api/v1/messages",
        json={"to": FRIEND, "media": [{"content_type": "text/html", "data": "PGI+"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 400 and "content_type" in (await resp.json())["detail"]


async def test_media_that_is_not_base64_is_a_400(client: Client, token: str) -> None:
    resp = await client.post(
        "/api/v1/messages",
        json={"to": FRIEND, "media": [{"content_type": "image/png", "data": "not base64!"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 400 and "base64" in (await resp.json())["detail"]
