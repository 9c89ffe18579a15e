"""The client API's per-IP limit over real HTTP: past ``limits.api_requests_per_ip``
requests a client IP gets 429 problems with Retry-After on every operation (checked
against the OpenAPI document), another IP does not; X-Forwarded-For counts only from a
trusted proxy; two gateway apps on one Redis share one count; an unreachable Redis
leaves each process limiting alone.

Tests run on both limiter backends: in-process, and the real Redis on 127.0.0.1:6379
under a key namespace of their own (deleted afterwards, never flushed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.keys import DATABASE, METRICS
from gateway.limits import LIMITS
from gateway.openapi import openapi_document
from gateway.problems import problem_type
from gateway.ratelimit_shared import SharedLimiter
from inbox import store
from tests.conftest import make_settings
from tests.integration.api_operations import any_path, operations
from tests.integration.helpers import make_user
from tests.integration.openapi_check import checked_call

Client = TestClient[Any, Any]
LIMIT = 3
MESSAGES = "/api/v1/messages"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    redis: dict[str, Any] = request.getfixturevalue("redis_backend")
    return redis


def _settings(tmp_path: Path, redis: dict[str, Any], **http: Any) -> Settings:
    return make_settings(
        tmp_path,
        f"sqlite:///{tmp_path}/optmsg.db",
        redis=redis,
        http=http,
        limits={"api_requests_per_ip": LIMIT, "api_window_s": 60, "sync_interval_s": 10},
    )


async def _app(
    aiohttp_client: Callable[..., Awaitable[Client]], settings: Settings, **kwargs: Any
) -> tuple[Client, str]:
    """An app and a token of a user of it."""
    client = await aiohttp_client(create_app(settings, worker=False, **kwargs))
    db = client.app[DATABASE]
    user = make_user(db, phone="+14155550150", sms_number="+14155550199")
    return client, store.create_token(db, user)[1]


async def _get(client: Client, token: str, forwarded_for: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return await client.get(MESSAGES, headers=headers)


async def test_requests_over_the_limit_get_429_with_retry_after(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client, token = await _app(aiohttp_client, _settings(tmp_path, backend))
    statuses = [(await _get(client, token)).status for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT
    refused = await _get(client, token)
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    assert (await refused.json())["type"] == problem_type(429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 120
    assert refused.headers["Cache-Control"] == "no-store"
    limited = client.app[METRICS].registry.get_sample_value("optmsg_api_rate_limited_total")
    assert limited == 1


async def test_every_operation_answers_429_as_documented_once_the_ip_is_over(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client, token = await _app(aiohttp_client, _settings(tmp_path, backend))
    for _ in range(LIMIT):
        await _get(client, token)
    doc = openapi_document()
    for op in operations(doc):
        reply = await checked_call(client, doc, op.method.upper(), any_path(op), token=token)
        assert reply.status == 429, op.label
        assert reply.body["type"] == problem_type(429), op.label


async def test_another_client_ip_is_not_limited(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    settings = _settings(tmp_path, backend, trusted_proxies=["127.0.0.1/32"])
    client, token = await _app(aiohttp_client, settings)
    for _ in range(LIMIT):
        assert (await _get(client, token, "203.0.113.5")).status == 200
    assert (await _get(client, token, "203.0.113.5")).status == 429
    assert (await _get(client, token, "203.0.113.6")).status == 200
    # The proxy's own appended hop is what counts, not what the client wrote before it.
    assert (await _get(client, token, "203.0.113.6, 203.0.113.5")).status == 429


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client, token = await _app(aiohttp_client, _settings(tmp_path, backend))
    statuses = [(await _get(client, token, f"198.51.100.{i}")).status for i in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]


async def test_an_ipv6_client_is_counted_per_64(
    tmp_path: Path, backend: dict[str, Any], aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    settings = _settings(tmp_path, backend, trusted_proxies=["127.0.0.1/32"])
    client, token = await _app(aiohttp_client, settings)
    for i in range(LIMIT):
        assert (await _get(client, token, f"2001:db8:1:2::{i + 1}")).status == 200
    assert (await _get(client, token, "2001:db8:1:2:ffff::9")).status == 429
    assert (await _get(client, token, "2001:db8:1:3::1")).status == 200


async def test_two_gateway_apps_on_one_redis_share_the_count(
    tmp_path: Path,
    redis_backend: dict[str, Any],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    settings = _settings(tmp_path, redis_backend)
    a, token = await _app(aiohttp_client, settings)
    b = await aiohttp_client(create_app(settings, worker=False, migrate=False))
    for _ in range(LIMIT - 1):
        assert (await _get(a, token)).status == 200
    await _sync(a)
    assert (await _get(b, token)).status == 200  # b's first: it knows of a's two after
    await _sync(b)
    refused = await _get(b, token)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1


async def test_an_unreachable_redis_leaves_each_process_limiting_alone(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    dead = {"url": "redis://127.0.0.1:1/0", "namespace": "nowhere"}
    client, token = await _app(aiohttp_client, _settings(tmp_path, dead))
    statuses = []
    for _ in range(LIMIT + 1):
        statuses.append((await _get(client, token)).status)
        await client.app[LIMITS].sync_once()
    assert statuses == [200] * LIMIT + [429]
    errors = client.app[METRICS].registry.get_sample_value("optmsg_ratelimit_errors_total")
    assert errors is not None and errors >= LIMIT


async def test_the_limit_is_off_at_zero(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path}/optmsg.db", limits={"api_requests_per_ip": 0}
    )
    client, token = await _app(aiohttp_client, settings)
    statuses = {(await _get(client, token)).status for _ in range(20)}
    assert statuses == {200}


async def _sync(client: Client) -> None:
    limiter = client.app[LIMITS].limiter
    assert isinstance(limiter, SharedLimiter)
    await limiter.sync()
