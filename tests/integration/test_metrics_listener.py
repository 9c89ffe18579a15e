"""``http.metrics_listen``: Prometheus figures on a port of their own, and then not on
the public HTTP port. Real aiohttp servers on 127.0.0.1, a signed webhook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.keys import RUNTIME
from tests.conftest import twilio_form
from tests.integration.helpers import make_user, post_signed

Client = TestClient[Any, Any]


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    http = settings.http.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    return await aiohttp_client(create_app(settings.model_copy(update={"http": http})))


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


def _metrics_port(client: Client) -> int:
    port = client.app[RUNTIME].metrics_port
    assert port is not None
    return port


async def test_the_metrics_port_serves_the_gateways_figures(client: Client) -> None:
    status, text = await _get(_metrics_port(client), "/metrics")
    assert status == 200
    assert "# TYPE optmsg_messages_total counter" in text


async def test_the_public_port_no_longer_serves_metrics(client: Client) -> None:
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_the_metrics_port_serves_nothing_else(client: Client) -> None:
    port = _metrics_port(client)
    for path in ("/healthz", "/api/v1/messages", "/bridges/twilio/sms", "/"):
        assert (await _get(port, path))[0] == 404, path


async def test_a_webhook_counted_on_the_public_port_shows_on_the_metrics_port(
    client: Client, settings: Settings
) -> None:
    from inbox.db import open_database

    db = open_database(settings.database)
    try:
        make_user(db, phone="+442079460958", sms_number="+14155550199")
    finally:
        db.dispose()
    assert (await post_signed(client, twilio_form(sid="SM" + "7" * 32))).status == 200
    _, text = await _get(_metrics_port(client), "/metrics")
    assert 'optmsg_messages_total{bridge="twilio",outcome="quarantined"} 1.0' in text


async def test_the_metrics_listener_closes_with_the_app(
    settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    http = settings.http.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    client = await aiohttp_client(create_app(settings.model_copy(update={"http": http})))
    port = _metrics_port(client)
    await client.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(port, "/metrics")


async def test_a_metrics_port_in_use_fails_the_start_and_leaves_no_task_running(
    settings: Settings,
) -> None:
    import asyncio
    import socket

    from aiohttp.test_utils import TestServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http = settings.http.model_copy(update={"metrics_listen": f"127.0.0.1:{port}"})
        server = TestServer(create_app(settings.model_copy(update={"http": http})))
        try:
            with pytest.raises(OSError, match="address already in use"):
                await server.start_server()
        finally:
            await server.close()
    background = {"retention", "media-sweeper", "token-use", "spool-replay"}
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in background]
    assert left == []
