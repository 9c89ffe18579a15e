"""Client API over real HTTP: bearer tokens, folders, cursor paging, user scoping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import RedisSettings, Settings
from gateway.app import create_app
from inbox import store
from inbox.db import Database
from tests.conftest import twilio_form
from tests.integration.helpers import make_user, post_signed, trust_sender

Client = TestClient[Any, Any]


@dataclass
class World:
    client: Client
    ada: str
    ada_token: str
    bob: str
    bob_token: str

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    ada = make_user(db, phone="+442079460958", sms_number="+14155550199")
    bob = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    trust_sender(db, ada, "+14155550100")
    client = await aiohttp_client(create_app(settings))
    return World(client, ada, store.create_token(db, ada)[1], bob, store.create_token(db, bob)[1])


async def test_messages_need_a_bearer_token(world: World) -> None:
    resp = await world.client.get("/api/v1/messages")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "header", ["Bearer optmsg_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "optmsg_x"]
)
async def test_invalid_tokens_are_unauthorized(world: World, header: str) -> None:
    resp = await world.client.get("/api/v1/messages", headers={"Authorization": header})
    assert resp.status == 401


async def test_inbox_and_quarantine_list_the_right_messages(world: World) -> None:
    await post_signed(world.client, twilio_form(sender="+14155550100", body="trusted"))
    await post_signed(world.client, twilio_form(sender="+14155550111", body="stranger"))
    inbox = await (
        await world.client.get("/api/v1/messages?folder=inbox", headers=world.auth(world.ada_token))
    ).json()
    held = await (
        await world.client.get(
            "/api/v1/messages?folder=quarantine", headers=world.auth(world.ada_token)
        )
    ).json()
    assert [m["text"] for m in inbox["items"]] == ["trusted"]
    assert [m["text"] for m in held["items"]] == ["stranger"]
    assert inbox["next"] is None
    message = inbox["items"][0]
    for field in (
        "id",
        "folder",
        "channel",
        "bridge",
        "sender",
        "recipient",
        "subject",
        "text",
        "html",
        "received_at",
        "read",
        "attachments",
    ):
        assert field in message
    assert message["channel"] == "sms" and message["read"] is False


async def test_default_folder_is_inbox(world: World) -> None:
    await post_signed(world.client, twilio_form(sender="+14155550100"))
    resp = await world.client.get("/api/v1/messages", headers=world.auth(world.ada_token))
    assert [m["folder"] for m in (await resp.json())["items"]] == ["inbox"]


async def test_cursor_pages_through_everything_newest_first(world: World) -> None:
    for i in range(7):
        await post_signed(world.client, twilio_form(sender="+14155550100", body=f"m{i}"))
    seen: list[str] = []
    url = "/api/v1/messages?folder=inbox&limit=3"
    cursor = None
    while True:
        page = await (
            await world.client.get(
                url + (f"&cursor={cursor}" if cursor else ""), headers=world.auth(world.ada_token)
            )
        ).json()
        seen.extend(m["text"] for m in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]


async def test_get_one_message(world: World) -> None:
    await post_signed(world.client, twilio_form(sender="+14155550100", body="one"))
    (item,) = (
        await (
            await world.client.get("/api/v1/messages", headers=world.auth(world.ada_token))
        ).json()
    )["items"]
    resp = await world.client.get(
        f"/api/v1/messages/{item['id']}", headers=world.auth(world.ada_token)
    )
    assert resp.status == 200
    assert (await resp.json())["text"] == "one"


async def test_another_users_message_is_not_found(world: World) -> None:
    await post_signed(world.client, twilio_form(sender="+14155550100", body="ada's"))
    (item,) = (
        await (
            await world.client.get("/api/v1/messages", headers=world.auth(world.ada_token))
        ).json()
    )["items"]
    resp = await world.client.get(
        f"/api/v1/messages/{item['id']}", headers=world.auth(world.bob_token)
    )
    assert resp.status == 404
    listing = await (
        await world.client.get("/api/v1/messages", headers=world.auth(world.bob_token))
    ).json()
    assert listing["items"] == []


async def test_unknown_message_id_is_not_found(world: World) -> None:
    resp = await world.client.get("/api/v1/messages/msg_nope", headers=world.auth(world.ada_token))
    assert resp.status == 404


@pytest.mark.parametrize(
    "query",
    ["folder=spam", "limit=0", "limit=201", "limit=abc", "cursor=%%%", "cursor=bm90LWpzb24"],
)
async def test_bad_list_parameters_are_bad_requests(world: World, query: str) -> None:
    resp = await world.client.get(f"/api/v1/messages?{query}", headers=world.auth(world.ada_token))
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"


async def test_cursor_from_one_folder_is_refused_in_another(world: World) -> None:
    for i in range(3):
        await post_signed(world.client, twilio_form(sender="+14155550100", body=f"m{i}"))
    page = await (
        await world.client.get("/api/v1/messages?limit=1", headers=world.auth(world.ada_token))
    ).json()
    resp = await world.client.get(
        f"/api/v1/messages?folder=quarantine&cursor={page['next']}",
        headers=world.auth(world.ada_token),
    )
    assert resp.status == 400


async def test_api_responses_are_not_cached_or_sniffed(world: World) -> None:
    resp = await world.client.get("/api/v1/messages", headers=world.auth(world.ada_token))
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_openapi_document_describes_the_routes(world: World) -> None:
    resp = await world.client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert {"/messages", "/messages/{message_id}"} <= set(doc["paths"])
    routes = {r.resource.canonical for r in world.client.app.router.routes() if r.resource}
    for path in doc["paths"]:
        assert "/api/v1" + path in routes


async def test_health_and_readiness(world: World) -> None:
    assert (await world.client.get("/healthz")).status == 200
    ready = await world.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["database"] == "ok"


async def test_unknown_route_is_a_problem_not_a_page(world: World) -> None:
    resp = await world.client.get("/nope")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


@pytest.fixture
def redis_url() -> str:
    import socket

    from tests.conftest import missing_service

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        missing_service("Redis", "nothing listens on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


async def test_readiness_checks_the_configured_redis(
    settings: Settings, redis_url: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await aiohttp_client(
        create_app(settings.model_copy(update={"redis": RedisSettings(url=redis_url)}))
    )
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["broker"] == "ok"


async def test_readiness_fails_when_redis_is_unreachable(
    settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:

    unreachable = RedisSettings(url="redis://127.0.0.1:1/0")
    client = await aiohttp_client(create_app(settings.model_copy(update={"redis": unreachable})))
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["broker"].startswith("unreachable")
    assert body["status"] == "not ready"
