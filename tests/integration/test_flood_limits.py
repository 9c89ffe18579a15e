"""The per-sender flood limit over real HTTP and SMTP: a flood of signed SMS from one
number is all answered 200 and all stored, the messages over ``limits.sender_messages``
held with the flood reason, counted, and announced to live clients only once; a trusted
sender's burst is delivered; SMTP floods are accepted (250) and held alike; two
gateway apps on one Redis count one flood; an unreachable Redis never stops inbound.

Each test runs on both limiter backends: in-process, and the real Redis on
127.0.0.1:6379 under a key namespace of its own (deleted afterwards, never flushed);
the main flood test also on both stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridges.dns import StaticResolver
from config import Settings
from gateway.app import create_app
from gateway.keys import DATABASE, METRICS, RUNTIME
from gateway.limits import LIMITS
from gateway.ratelimit_shared import SharedLimiter
from inbox import events, store
from inbox.addresses import E164, EmailAddress
from inbox.db import Database
from tests.conftest import make_settings, twilio_form
from tests.integration.helpers import make_user, message_rows, post_signed, trust_sender

Client = TestClient[Any, Any]
ADA_NUMBER = "+14155550199"
STRANGER = "+14155550122"
FRIEND = "+14155550100"
LIMIT = 3
FLOOD_REASON = f"held: flood from this sender (over {LIMIT} messages in 60 s)"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The [redis] settings of a limiter backend: none (in-process), or the real Redis."""
    if request.param == "memory":
        return {}
    redis: dict[str, Any] = request.getfixturevalue("redis_backend")
    return redis


def _settings(
    tmp_path: Path, redis: dict[str, Any], db_url: str | None = None, **limits: Any
) -> Settings:
    return make_settings(
        tmp_path,
        db_url or f"sqlite:///{tmp_path}/optmsg.db",
        redis=redis,
        # Exchanges are made by hand below, so that what each app knows is exact.
        limits={"sender_messages": LIMIT, "sync_interval_s": 10, **limits},
    )


async def _app(
    aiohttp_client: Callable[..., Awaitable[Client]], settings: Settings, **kwargs: Any
) -> Client:
    return await aiohttp_client(create_app(settings, worker=False, **kwargs))


def _held(app: Any, bridge: str = "twilio") -> float:
    value = app[METRICS].registry.get_sample_value("optmsg_flood_held_total", {"bridge": bridge})
    return value or 0.0


async def _sms(client: Client, sender: str = STRANGER, text: str = "buy now") -> str:
    resp = await post_signed(client, twilio_form(sender=sender, to=ADA_NUMBER, body=text))
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/xml"
    return str(await resp.text())


def _reasons(db: Database) -> list[str]:
    return [row.reason for row in message_rows(db)]


def _announced(db: Database, user_id: str) -> int:
    created = [
        e for e in events.list_after(db, user_id, 0, 1000) if e.kind == events.MESSAGE_CREATED
    ]
    return len(created)


async def _exchange(*clients: Client) -> None:
    for client in clients:
        limiter = client.app[LIMITS].limiter
        if isinstance(limiter, SharedLimiter):
            await limiter.sync()


async def test_a_flood_from_one_number_is_all_stored_and_the_excess_held(
    tmp_path: Path,
    backend: dict[str, Any],
    db_url: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await _app(aiohttp_client, _settings(tmp_path, backend, db_url))
    db = client.app[DATABASE]
    ada = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    for i in range(LIMIT + 3):
        await _sms(client, text=f"offer {i}")
    reasons = _reasons(db)
    assert len(reasons) == LIMIT + 3
    assert reasons.count(FLOOD_REASON) == 3
    assert all(r.startswith("unknown sender") for r in reasons if r != FLOOD_REASON)
    assert {row.folder for row in message_rows(db)} == {"quarantine"}
    assert _held(client.app) == 3
    # The user's clients hear of the messages within the limit and of the first held.
    assert _announced(db, ada) == LIMIT + 1


async def test_a_trusted_senders_burst_is_delivered_to_the_inbox(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await _app(aiohttp_client, _settings(tmp_path, backend))
    db = client.app[DATABASE]
    ada = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    trust_sender(db, ada, FRIEND)
    for i in range(LIMIT + 2):
        await _sms(client, sender=FRIEND, text=f"part {i}")
    assert {row.folder for row in message_rows(db)} == {"inbox"}
    assert _held(client.app) == 0
    assert _announced(db, ada) == LIMIT + 2


async def test_a_trusted_senders_flood_is_held_when_trusted_senders_are_not_exempt(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await _app(aiohttp_client, _settings(tmp_path, backend, trusted_exempt=False))
    db = client.app[DATABASE]
    trust_sender(db, make_user(db, phone="+14155550150", sms_number=ADA_NUMBER), FRIEND)
    for i in range(LIMIT + 1):
        await _sms(client, sender=FRIEND, text=f"part {i}")
    folders = [row.folder for row in message_rows(db)]
    assert folders == ["inbox"] * LIMIT + ["quarantine"]
    assert _reasons(db)[-1] == FLOOD_REASON


async def test_a_provider_retry_of_a_held_message_is_not_counted_twice(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await _app(aiohttp_client, _settings(tmp_path, backend))
    db = client.app[DATABASE]
    make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    for i in range(LIMIT):
        await _sms(client, text=f"offer {i}")
    form = twilio_form(sender=STRANGER, to=ADA_NUMBER, body="held one")
    for _ in range(2):
        resp = await post_signed(client, form)
        assert resp.status == 200
    assert len(message_rows(db)) == LIMIT + 1
    assert _held(client.app) == 1


async def test_two_gateway_apps_on_one_redis_count_one_flood(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    redis_backend: dict[str, Any],
) -> None:
    settings = _settings(tmp_path, redis_backend)
    a = await _app(aiohttp_client, settings)
    b = await _app(aiohttp_client, settings, migrate=False)
    db = a.app[DATABASE]
    make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    for i in range(LIMIT - 1):
        await _sms(a, text=f"via a {i}")
    await _exchange(a)
    await _sms(b, text="via b")  # b has seen one message of this sender, a two
    await _exchange(b)
    await _sms(b, text="over the shared limit")
    assert _reasons(db)[-1] == FLOOD_REASON
    assert _reasons(db).count(FLOOD_REASON) == 1
    assert _held(b.app) == 1


async def test_inbound_flows_and_is_limited_per_process_when_redis_is_unreachable(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    dead = {"url": "redis://127.0.0.1:1/0", "namespace": "nowhere"}
    client = await _app(aiohttp_client, _settings(tmp_path, dead))
    db = client.app[DATABASE]
    make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    for i in range(LIMIT + 1):
        await _sms(client, text=f"offer {i}")
        await client.app[LIMITS].sync_once()
    assert len(message_rows(db)) == LIMIT + 1
    assert _reasons(db)[-1] == FLOOD_REASON
    errors = client.app[METRICS].registry.get_sample_value("optmsg_ratelimit_errors_total")
    assert errors is not None and errors >= LIMIT + 1


# --- SMTP --------------------------------------------------------------------------------

OUR_ADDRESS = "ada@optmsg.example"
SPAMMER = "deals@spam.example"


def _email(n: int) -> bytes:
    return (
        f"From: Deals <{SPAMMER}>\r\nTo: {OUR_ADDRESS}\r\nSubject: Deal {n}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{n}@spam.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Deal number {n}\r\n"
    ).encode()


def _send(port: int, raw: bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        return smtp.sendmail(SPAMMER, [OUR_ADDRESS], raw)


async def _stored(db: Database, count: int, timeout: float = 10.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(message_rows(db)) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return _reasons(db)


async def test_an_smtp_flood_is_accepted_stored_and_the_excess_held(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    settings = _settings(tmp_path, backend)
    smtp = settings.smtp.model_copy(update={"enabled": True, "hostname": "mx.optmsg.example"})
    app = create_app(
        settings.model_copy(update={"smtp": smtp}), worker=False, resolver=StaticResolver({})
    )
    client = await aiohttp_client(app)
    db = client.app[DATABASE]
    store.create_user(
        db,
        first_name="Ada",
        last_name="L",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"),
        email_address=EmailAddress(OUR_ADDRESS),
    )
    port = client.app[RUNTIME].smtp_port
    assert port is not None
    for n in range(LIMIT + 2):
        # sendmail returns the refused recipients: none, every message is taken (250).
        assert await asyncio.to_thread(_send, port, _email(n)) == {}
    reasons = await _stored(db, LIMIT + 2)
    assert len(reasons) == LIMIT + 2
    assert reasons.count(FLOOD_REASON) == 2
    # Counted once the ingest call returns, just after the commit.
    deadline = asyncio.get_running_loop().time() + 5
    while _held(client.app, "email") < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert _held(client.app, "email") == 2
