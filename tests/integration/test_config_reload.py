"""A reload reaches the running app: each key the gateway declares reloadable is a
real setting and is applied where it is used (webhooks, client API, jobs, client IP
resolution); /metrics counts reloads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridges.codes import TwilioCodeSender
from config import Settings
from gateway.app import create_app
from gateway.keys import AUTH, JOBS, SETTINGS, TWILIO
from gateway.live import EVENT_HUB, HubFull
from gateway.pipeline import IngestPipeline
from gateway.reload import LiveSettings, leaves
from gateway.reload_wiring import reload_policy
from optin.decide import Policy
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings, twilio_form
from tests.integration.helpers import post_signed

Client = TestClient[Any, Any]
NEW_TOKEN = "rotated-token-" + "0f1e2d3c4b5a6978"
FILLER = "x" * 3000  # a webhook of about 3.6 KB
TWILIO_BASE = {"enabled": True, "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}


def with_values(settings: Settings, **sections: dict[str, Any]) -> Settings:
    data = settings.model_dump()
    for section, values in sections.items():
        for key, value in values.items():
            *path, last = key.split(".")
            node = data[section]
            for part in path:
                node = node[part]
            node[last] = value
    return Settings(**data)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, f"sqlite:///{tmp_path}/optmsg.db", http={"max_webhook_bytes": 2048}
    )


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(create_app(settings))


def reload(client: Client, new: Settings) -> None:
    assert client.app[SETTINGS].reload(lambda: new) is not None


async def test_every_reloadable_key_names_a_setting(client: Client, settings: Settings) -> None:
    known = leaves(settings)
    declared = client.app[SETTINGS].reloadable_keys
    assert declared, "the gateway declares no reloadable key"
    assert [k for k in declared if k not in known] == []


async def test_raised_webhook_limit_admits_a_larger_webhook(
    client: Client, settings: Settings
) -> None:
    assert (await post_signed(client, twilio_form(Filler=FILLER))).status == 413

    reload(client, with_values(settings, http={"max_webhook_bytes": 8192}))

    assert (await post_signed(client, twilio_form(Filler=FILLER))).status == 200


async def test_rotated_auth_token_verifies_webhooks(client: Client, settings: Settings) -> None:
    reload(client, with_values(settings, bridges={"twilio.auth_token": NEW_TOKEN}))

    assert (await post_signed(client, twilio_form(), secret=NEW_TOKEN)).status == 200
    assert (await post_signed(client, twilio_form(), secret=AUTH_TOKEN)).status == 403


async def test_lowered_api_body_limit_refuses_a_larger_body(
    client: Client, settings: Settings
) -> None:
    body = {"token": "x" * 2000}
    first = await client.post("/api/v1/auth/login", json=body)
    assert first.status != 413

    reload(client, with_values(settings, http={"max_api_body_bytes": 1024}))

    assert (await client.post("/api/v1/auth/login", json=body)).status == 413


async def test_media_rules_reach_the_jobs(client: Client, settings: Settings) -> None:
    jobs = client.app[JOBS]
    reload(
        client,
        with_values(
            settings,
            bridges={
                "twilio.media_attempts": 2,
                "twilio.media_timeout_s": 5.0,
                "twilio.media_hosts": ["media.example.net"],
            },
        ),
    )

    assert jobs.settings.bridges.twilio.media_hosts == ["media.example.net"]
    assert jobs.fetch_media.options["max_retries"] == 1
    assert jobs.fetch_media.options["time_limit"] == 20_000


async def test_trusted_proxies_reach_client_ip_resolution(
    client: Client, settings: Settings
) -> None:
    reload(client, with_values(settings, http={"trusted_proxies": ["10.0.0.0/8"]}))

    assert [str(n) for n in client.app[AUTH].proxies] == ["10.0.0.0/8"]


async def test_restart_only_key_leaves_the_bridge_untouched(
    client: Client, settings: Settings
) -> None:
    bridge = client.app[TWILIO]
    verifier = bridge.verifier
    reload(client, with_values(settings, http={"public_url": "https://other.example.com"}))

    assert bridge.verifier is verifier
    assert client.app[SETTINGS].current.http.public_url == settings.http.public_url


async def test_reloads_are_counted_on_metrics(client: Client, settings: Settings) -> None:
    reload(client, with_values(settings, log={"level": "warning"}))

    text = await (await client.get("/metrics")).text()
    assert 'optmsg_config_reloads_total{result="ok"} 1.0' in text
    assert 'optmsg_config_reloads_total{result="error"} 0.0' in text


async def test_lowered_stream_limit_refuses_the_next_stream(
    client: Client, settings: Settings
) -> None:
    hub = client.app[EVENT_HUB]
    first = hub.open("usr_a", 0)
    try:
        reload(client, with_values(settings, events={"max_streams": 1}))
        with pytest.raises(HubFull):
            hub.open("usr_b", 0)
    finally:
        hub.close(first)


async def test_email_auth_policy_reaches_the_pipeline(tmp_path: Path, settings: Settings) -> None:
    live = LiveSettings(settings)
    pipeline = IngestPipeline(Policy(require_email_auth=True, flood_exempt_trusted=False))
    reload_policy(live, pipeline)

    live.reload(lambda: with_values(settings, optin={"require_email_auth": False}))

    assert pipeline.policy == Policy(require_email_auth=False, flood_exempt_trusted=False)


async def test_rotated_auth_token_renews_the_sign_in_code_sender(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path}/optmsg.db",
        auth={"code_sender": "twilio"},
        bridges={"twilio": {**TWILIO_BASE, "service_number": "+14155550123"}},
    )
    client = await aiohttp_client(create_app(settings))
    auth = client.app[AUTH]
    sender, keys = auth.sender, auth.keys

    reload(client, with_values(settings, bridges={"twilio.auth_token": NEW_TOKEN}))

    assert isinstance(auth.sender, TwilioCodeSender) and auth.sender is not sender
    assert auth.keys is not keys
