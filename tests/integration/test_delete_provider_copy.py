"""Deleting a message together with the provider's copy (``DELETE
/api/v1/messages/{id}?provider=true``): the API over real HTTP on SQLite and
PostgreSQL, the in-process dramatiq worker, and the twilio package against a fake
Twilio on 127.0.0.1. Every API response is checked against the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from bridges.twilio_rest import SendFailed, TwilioSender
from config import Settings
from gateway.app import create_app
from gateway.jobs import SEND_QUEUE
from gateway.keys import JOBS
from gateway.openapi import openapi_document
from gateway.outbound import create_sms
from gateway.provider_delete import (
    DELETED,
    GONE,
    REFUSED,
    ProviderDeleteRetry,
    delete_provider_copy,
)
from inbox import store
from inbox.addresses import E164, EmailAddress
from inbox.db import Database
from inbox.message import Channel, Inbound
from inbox.models import messages_t
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, twilio_form
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import make_user, post_signed, run_batch, trust_sender
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]

ADA_NUMBER = "+14155550199"  # twilio_form's default To
BOB_NUMBER = "+14155550198"
ADA_EMAIL = "ada@optmsg.example"
FRIEND = "+14155550100"  # twilio_form's default From
WAIT_S = 10.0


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def with_fake(settings: Settings, fake: FakeTwilio) -> Settings:
    twilio = settings.bridges.twilio.model_copy(update={"api_base_url": fake.base_url})
    return settings.model_copy(
        update={"bridges": settings.bridges.model_copy(update={"twilio": twilio})}
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@dataclass
class World:
    client: Client
    db: Database
    settings: Settings
    fake: FakeTwilio
    users: dict[str, str]
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)

    async def delete(self, message_id: str, query: str = "", *, who: str = "ada") -> Reply:
        path = f"/messages/{message_id}" + (f"?{query}" if query else "")
        return await checked_call(self.client, self.doc, "DELETE", path, token=self.tokens[who])

    async def receive_sms(self, *, known_to_twilio: bool = True) -> tuple[str, str]:
        """An SMS from FRIEND to Ada through the signed webhook: (message id, SID).
        Twilio holds it unless ``known_to_twilio`` is False (deleted there already)."""
        sid = new_sid()
        if known_to_twilio:
            self.fake.add_message(sid)
        resp = await post_signed(self.client, twilio_form(sid=sid, body="meet at 6"))
        assert resp.status == 200
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while (message_id := self.message_with(sid)) is None:
            assert asyncio.get_running_loop().time() < deadline, "the SMS was not stored"
            await asyncio.sleep(0.02)
        return message_id, sid

    def message_with(self, external_id: str) -> str | None:
        with self.db.read.connect() as conn:
            found = conn.execute(
                sa.select(messages_t.c.id).where(messages_t.c.external_id == external_id)
            ).scalar()
        return None if found is None else str(found)

    def exists(self, message_id: str) -> bool:
        with self.db.read.connect() as conn:
            return (
                conn.execute(
                    sa.select(messages_t.c.id).where(messages_t.c.id == message_id)
                ).first()
                is not None
            )

    async def deleted_at_twilio(self, count: int) -> list[str]:
        """The SIDs deleted at Twilio once ``count`` have been (bounded wait)."""
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(self.fake.deleted_messages) < count:
            assert asyncio.get_running_loop().time() < deadline, self.fake.deleted_messages
            await asyncio.sleep(0.02)
        return list(self.fake.deleted_messages)

    async def jobs_done(self) -> None:
        """Wait until the worker has finished every job enqueued so far, including
        any retry it scheduled (a retry left pending makes this time out)."""
        broker = self.client.app[JOBS].broker
        await asyncio.to_thread(broker.join, SEND_QUEUE, timeout=int(WAIT_S * 1000))


@pytest.fixture
async def world(
    settings: Settings,
    db: Database,
    fake: FakeTwilio,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> World:
    ada = store.create_user(
        db,
        first_name="Ada",
        last_name="Tester",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+14155550150"),
        sms_number=E164(ADA_NUMBER),
        email_address=EmailAddress(ADA_EMAIL),
    ).id
    bob = make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")
    trust_sender(db, ada, FRIEND)
    configured = with_fake(settings, fake)
    client = await aiohttp_client(create_app(configured))
    tokens = {"ada": store.create_token(db, ada)[1], "bob": store.create_token(db, bob)[1]}
    return World(client, db, configured, fake, {"ada": ada, "bob": bob}, tokens)


# --- through the API ----------------------------------------------------------------


async def test_provider_true_deletes_an_inbound_sms_at_twilio(world: World) -> None:
    message_id, sid = await world.receive_sms()
    reply = await world.delete(message_id, "provider=true")
    assert reply.status == 204
    assert not world.exists(message_id)
    assert await world.deleted_at_twilio(1) == [sid]


async def test_without_provider_twilio_gets_no_request(world: World) -> None:
    message_id, _ = await world.receive_sms()
    assert (await world.delete(message_id)).status == 204
    await world.jobs_done()
    assert not world.exists(message_id)
    assert (world.fake.requests, world.fake.deleted_messages) == (0, [])


async def test_provider_false_deletes_here_only(world: World) -> None:
    message_id, _ = await world.receive_sms()
    assert (await world.delete(message_id, "provider=false")).status == 204
    await world.jobs_done()
    assert not world.exists(message_id)
    assert world.fake.requests == 0


async def test_a_sent_sms_is_deleted_at_twilio_by_the_sid_twilio_gave_it(world: World) -> None:
    reply = await checked_call(
        world.client,
        world.doc,
        "POST",
        "/messages",
        token=world.tokens["ada"],
        json={"to": FRIEND, "text": "on my way"},
    )
    assert reply.status == 202
    await world.jobs_done()
    (created,) = world.fake.created
    assert (await world.delete(reply.body["id"], "provider=true")).status == 204
    assert await world.deleted_at_twilio(1) == [created.sid]


async def test_an_sms_not_yet_handed_to_twilio_has_no_copy_to_delete(world: World) -> None:
    pending = create_sms(world.settings, world.db, world.users["ada"], E164(FRIEND), "later")
    assert pending.external_id.startswith("pending:")
    assert (await world.delete(pending.message_id, "provider=true")).status == 204
    await world.jobs_done()
    assert not world.exists(pending.message_id)
    assert world.fake.requests == 0


async def test_an_email_has_no_provider_copy_whatever_its_id_looks_like(world: World) -> None:
    # An id shaped like a Twilio SID, known to the fake: only the bridge decides.
    lookalike = new_sid()
    world.fake.add_message(lookalike)
    email = Inbound(
        bridge="email",
        external_id=lookalike,
        channel=Channel.EMAIL,
        sender=EmailAddress("friend@example.com"),
        recipient=EmailAddress(ADA_EMAIL),
        text="Hello Ada",
        received_at=datetime.now(UTC),
    )
    (stored,) = run_batch(world.db, [email])
    assert stored.message_id is not None
    assert (await world.delete(stored.message_id, "provider=true")).status == 204
    await world.jobs_done()
    assert not world.exists(stored.message_id)
    assert world.fake.requests == 0


@pytest.mark.parametrize("value", ["yes", "1", "", "TRUE", "true,true"])
async def test_a_provider_value_other_than_true_or_false_is_a_400_and_deletes_nothing(
    world: World, value: str
) -> None:
    message_id, _ = await world.receive_sms()
    reply = await world.delete(message_id, f"provider={value}")
    assert reply.status == 400
    assert reply.content_type == "application/problem+json"
    assert "provider" in reply.body["detail"]
    await world.jobs_done()
    assert world.exists(message_id)
    assert world.fake.requests == 0


async def test_a_repeated_provider_parameter_is_read_as_its_first_value(world: World) -> None:
    # aiohttp's query.get() takes the first; "false" first means nothing at Twilio.
    message_id, _ = await world.receive_sms()
    assert (await world.delete(message_id, "provider=false&provider=true")).status == 204
    await world.jobs_done()
    assert world.fake.requests == 0


async def test_another_users_message_is_a_404_and_nothing_reaches_twilio(world: World) -> None:
    message_id, _ = await world.receive_sms()
    reply = await world.delete(message_id, "provider=true", who="bob")
    assert reply.status == 404
    await world.jobs_done()
    assert world.exists(message_id)
    assert world.fake.requests == 0


async def test_a_message_already_gone_at_twilio_ends_the_job_without_retries(
    world: World,
) -> None:
    message_id, _ = await world.receive_sms(known_to_twilio=False)
    assert (await world.delete(message_id, "provider=true")).status == 204
    await world.jobs_done()  # times out if a retry was scheduled
    assert (world.fake.message_deletes, world.fake.deleted_messages) == (1, [])
    assert not world.exists(message_id)


async def test_a_second_delete_of_the_same_message_is_a_404_and_no_second_job(
    world: World,
) -> None:
    message_id, sid = await world.receive_sms()
    assert (await world.delete(message_id, "provider=true")).status == 204
    assert (await world.delete(message_id, "provider=true")).status == 404
    assert await world.deleted_at_twilio(1) == [sid]
    await world.jobs_done()
    assert world.fake.message_deletes == 1


# --- the job, one attempt at a time -----------------------------------------------


@pytest.fixture
async def sender(fake: FakeTwilio) -> AsyncIterator[TwilioSender]:
    twilio = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, fake.base_url)
    yield twilio
    twilio.close()


async def attempt(sender: TwilioSender, sid: str, *, last_attempt: bool = False) -> str:
    return await asyncio.to_thread(delete_provider_copy, sender, sid, last_attempt=last_attempt)


async def test_a_5xx_is_retried_and_the_retry_deletes(
    sender: TwilioSender, fake: FakeTwilio
) -> None:
    sid = new_sid("MM")
    fake.add_message(sid)
    fake.fail_next(500)
    with pytest.raises(ProviderDeleteRetry):
        await attempt(sender, sid)
    assert await attempt(sender, sid) == DELETED
    assert (fake.message_deletes, fake.deleted_messages) == (2, [sid])


async def test_twilio_still_processing_the_message_is_retried(
    sender: TwilioSender, fake: FakeTwilio
) -> None:
    sid = new_sid()
    fake.add_message(sid)
    fake.fail_next(409, code=20009, message="Cannot delete this resource before it is complete")
    with pytest.raises(ProviderDeleteRetry):
        await attempt(sender, sid)
    assert await attempt(sender, sid) == DELETED


async def test_a_5xx_on_the_last_attempt_gives_up_with_a_warning(
    sender: TwilioSender, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    sid = new_sid()
    fake.add_message(sid)
    fake.fail_next(503)
    with caplog.at_level(logging.WARNING, logger="gateway.provider_delete"):
        assert await attempt(sender, sid, last_attempt=True) == REFUSED
    assert [r.getMessage() for r in caplog.records if sid in r.getMessage()]
    assert fake.deleted_messages == []


async def test_a_404_finishes_quietly(
    sender: TwilioSender, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.provider_delete"):
        assert await attempt(sender, new_sid()) == GONE
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert fake.message_deletes == 1


async def test_another_4xx_finishes_with_a_warning_naming_the_sid_only(
    sender: TwilioSender, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    sid = new_sid()
    fake.add_message(sid)
    fake.fail_next(400, code=21999, message="refused: the body was 'meet at 6'")
    with caplog.at_level(logging.INFO, logger="gateway.provider_delete"):
        assert await attempt(sender, sid) == REFUSED
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sid in warning and "21999" in warning and "400" in warning
    assert "meet at 6" not in caplog.text
    assert fake.message_deletes == 1


async def test_a_connection_refused_is_retried(fake: FakeTwilio) -> None:
    closed = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, "http://127.0.0.1:9", timeout_s=2.0)
    try:
        with pytest.raises(ProviderDeleteRetry):
            await attempt(closed, new_sid())
    finally:
        closed.close()


@pytest.mark.parametrize(
    "sid",
    ["pending:msg_1", "draft:msg_1", "SM../../Messages", "SM" + "0" * 31, "AC" + "0" * 32, ""],
)
async def test_the_sender_refuses_what_is_not_a_message_sid_without_a_request(
    sender: TwilioSender, fake: FakeTwilio, sid: str
) -> None:
    with pytest.raises(SendFailed) as failed:
        await asyncio.to_thread(sender.delete_message, sid)
    assert not failed.value.retryable
    assert fake.requests == 0


async def test_wrong_credentials_are_not_retried(fake: FakeTwilio) -> None:
    wrong = TwilioSender(ACCOUNT_SID, "not-the-token", fake.base_url)
    try:
        assert await attempt(wrong, new_sid()) == REFUSED
    finally:
        wrong.close()
    assert fake.message_deletes == 0  # refused before the fake looked at the message
