"""CORS on the client API: off by default; for listed origins, preflights answered
before authentication and every API response labelled for the origin; nothing for
any other origin, and never for the provider webhooks or health endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import DATABASE
from inbox import store
from tests.conftest import make_settings
from tests.integration.helpers import make_user

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]
APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "authorization, content-type, if-none-match",
}


async def start(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory, origins: list[str]
) -> tuple[Client, str]:
    """A gateway with these CORS origins, and a token of one user."""
    settings = make_settings(tmp_path, sqlite_url, http={"cors_origins": origins})
    client = await aiohttp_client(create_app(settings))
    db = client.app[DATABASE]
    user = make_user(db, phone="+14155550150", sms_number="+14155550199")
    return client, store.create_token(db, user)[1]


def vary(headers: Any) -> set[str]:
    return {v.strip().lower() for v in headers.get("Vary", "").split(",") if v.strip()}


async def test_cors_is_off_by_default(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory
) -> None:
    client, token = await start(tmp_path, sqlite_url, aiohttp_client, [])
    resp = await client.get(
        "/api/v1/messages", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert not any(h.lower().startswith("access-control-") for h in resp.headers)
    preflight = await client.options("/api/v1/messages", headers=PREFLIGHT)
    assert preflight.status == 401  # an ordinary request, without a token
    assert preflight.content_type == "application/problem+json"
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_a_preflight_from_a_listed_origin_is_answered_without_a_token(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory
) -> None:
    client, _ = await start(tmp_path, sqlite_url, aiohttp_client, [APP_ORIGIN])
    resp = await client.options("/api/v1/messages/msg_anything", headers=PREFLIGHT)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "if-none-match", "last-event-id"}
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "origin" in vary(resp.headers)
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert await resp.read() == b""


async def test_a_request_from_a_listed_origin_is_labelled_for_it(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory
) -> None:
    client, token = await start(tmp_path, sqlite_url, aiohttp_client, [APP_ORIGIN])
    resp = await client.get(
        "/api/v1/messages", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"etag", "location", "www-authenticate"} <= exposed
    assert "origin" in vary(resp.headers)
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_a_web_app_can_read_the_401_problem(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory
) -> None:
    client, _ = await start(tmp_path, sqlite_url, aiohttp_client, [APP_ORIGIN])
    resp = await client.get("/api/v1/messages", headers={"Origin": APP_ORIGIN})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "www-authenticate" in resp.headers["Access-Control-Expose-Headers"].lower()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "http://app.example.com",  # another scheme is another origin
        "https://app.example.com:8443",  # and so is another port
        "https://app.example.com.evil.example",
        "null",
    ],
)
async def test_nothing_is_granted_to_an_origin_not_on_the_list(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory, origin: str
) -> None:
    client, token = await start(tmp_path, sqlite_url, aiohttp_client, [APP_ORIGIN])
    preflight = await client.options("/api/v1/messages", headers={**PREFLIGHT, "Origin": origin})
    assert preflight.status == 401  # an ordinary request, without a token
    assert "Access-Control-Allow-Origin" not in preflight.headers
    resp = await client.get(
        "/api/v1/messages", headers={"Origin": origin, "Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "origin" in vary(resp.headers)  # a cache must not serve it to the listed origin


async def test_an_origin_written_with_its_default_port_matches_what_browsers_send(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory
) -> None:
    client, _ = await start(tmp_path, sqlite_url, aiohttp_client, ["HTTPS://App.Example.com:443/"])
    resp = await client.options("/api/v1/messages", headers=PREFLIGHT)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


@pytest.mark.parametrize("path", ["/healthz", "/bridges/twilio/sms"])
async def test_routes_outside_the_api_get_no_cors(
    tmp_path: Path, sqlite_url: str, aiohttp_client: ClientFactory, path: str
) -> None:
    client, _ = await start(tmp_path, sqlite_url, aiohttp_client, [APP_ORIGIN])
    preflight = await client.options(
        path, headers={**PREFLIGHT, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    resp = await client.get("/healthz", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "origin" not in vary(resp.headers)
