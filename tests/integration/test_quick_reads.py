"""database.inline_reads: on SQLite the token lookup and message pages may run on the
event loop; switched off they run on the read pool. The answers are the same."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from inbox import store
from inbox.db import open_database
from inbox.migrate import upgrade
from tests.conftest import make_settings
from tests.integration.helpers import inbound, make_user, run_batch, trust_sender


@pytest.mark.parametrize("inline", [True, False])
async def test_the_message_list_is_the_same_inline_or_pooled(
    tmp_path: Path, inline: bool, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'q.db'}", database={"inline_reads": inline}
    )
    db = open_database(settings.database)
    upgrade(db)
    user_id = make_user(db, phone="+14155550100", sms_number="+14155550199")
    trust_sender(db, user_id, "+14155550111")
    run_batch(db, [inbound(f"SM{n:032d}", text=f"message {n}") for n in range(60)])
    _, token = store.create_token(db, user_id)
    db.dispose()
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {token}"}
    first = await (await client.get("/api/v1/messages?limit=50", headers=auth)).json()
    second = await (
        await client.get(f"/api/v1/messages?cursor={first['next']}", headers=auth)
    ).json()
    texts = [m["text"] for m in first["items"] + second["items"]]
    assert texts == [f"message {n}" for n in reversed(range(60))]
    one = await client.get(f"/api/v1/messages/{first['items'][0]['id']}", headers=auth)
    assert (await one.json())["text"] == "message 59"
