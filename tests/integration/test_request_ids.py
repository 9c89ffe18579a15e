"""Every HTTP response carries a request id, and the log lines of that request name it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import LogSettings, Settings
from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.request_ids import HEADER
from tests.conftest import make_settings
from tests.integration.helpers import post_signed

Client = TestClient[Any, Any]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'ids.db'}")


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_response_carries_a_fresh_request_id(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert len(first.headers[HEADER]) >= 16
    assert first.headers[HEADER] != second.headers[HEADER]


async def test_a_sane_incoming_request_id_is_kept(client: Client) -> None:
    response = await client.get("/healthz", headers={HEADER: "lb-7f3a9c21.0001"})
    assert response.headers[HEADER] == "lb-7f3a9c21.0001"


@pytest.mark.parametrize("hostile", ["short", "x" * 65, "has space here", "a\u00e9bcdefgh", ""])
async def test_an_unusable_incoming_request_id_is_replaced(client: Client, hostile: str) -> None:
    response = await client.get("/healthz", headers={HEADER: hostile})
    assert response.headers[HEADER] != hostile
    assert len(response.headers[HEADER]) == 16


async def test_error_responses_carry_the_request_id_too(client: Client) -> None:
    response = await client.get("/api/v1/messages")
    assert response.status == 401
    assert HEADER in response.headers


async def test_log_lines_of_a_request_name_its_id(
    client: Client, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Configured here, not in a fixture: capsys swaps stderr only for the test's body.
    configure_logging(LogSettings(format="json", level="info"))
    form = {
        "MessageSid": "SM" + "1" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155550111",
        "To": "+14155550000",  # routes to nobody: logged as unroutable
        "Body": "hello",
    }
    response = await post_signed(client, form, headers={HEADER: "lb-request-000042"})
    assert response.status == 200
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    unroutable = [line for line in lines if "unroutable" in line.get("event", "")]
    assert unroutable
    assert all(line["request_id"] == "lb-request-000042" for line in unroutable)
