"""GET /api/v1/addresses/normalize over real HTTP: what the trust list would store for
an address as typed, read by the same parser as POST /trusted-senders, saving nothing.

Every reply is checked against the served OpenAPI document (tests.integration.openapi_check).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.openapi import openapi_document
from inbox import store
from inbox.db import Database
from inbox.errors import AddressError
from optin import trust
from tests.integration.helpers import make_user
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]


@dataclass
class World:
    client: Client
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)

    async def read(self, value: str | None, who: str = "ada", **extra: str) -> Reply:
        params = ({} if value is None else {"value": value}) | extra
        query = "?" + urlencode(params) if params else ""
        return await checked_call(
            self.client, self.doc, "GET", "/addresses/normalize" + query, token=self.tokens[who]
        )

    async def entries(self) -> list[Any]:
        reply = await checked_call(
            self.client, self.doc, "GET", "/trusted-senders", token=self.tokens["ada"]
        )
        return list(reply.body["items"])


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    # Ada's account number is American (region US), Bob's British (GB).
    ada = make_user(db, phone="+14155550150", sms_number="+14155550199")
    bob = make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    client = await aiohttp_client(create_app(settings))
    tokens = {"ada": store.create_token(db, ada)[1], "bob": store.create_token(db, bob)[1]}
    return World(client, tokens)


async def test_a_national_number_reads_as_e164_with_its_international_form(world: World) -> None:
    reply = await world.read("(415) 555-0100")
    assert reply.status == 200
    assert reply.body == {
        "value": "(415) 555-0100",
        "valid": True,
        "address": "+14155550100",
        "kind": "phone",
        "display": "+1 415-555-0100",
        "reason": None,
    }


async def test_a_number_without_country_code_is_read_in_the_users_region(world: World) -> None:
    reply = await world.read("020 7946 0018", who="bob")
    assert (reply.body["address"], reply.body["display"]) == ("+442079460018", "+44 20 7946 0018")


async def test_for_sending_a_number_is_also_tried_in_the_deployments_region(
    world: World,
) -> None:
    # Bob is British on a US deployment: a draft to "415 555 0100" goes to +1 415...,
    # so the preview for sending must say so; the trust list reads it as British only.
    sending = await world.read("415 555 0100", who="bob", purpose="send")
    assert (sending.body["valid"], sending.body["address"]) == (True, "+14155550100")
    trusting = await world.read("415 555 0100", who="bob")
    assert trusting.body["valid"] is False


async def test_an_unknown_purpose_is_400(world: World) -> None:
    assert (await world.read("415 555 0100", purpose="gift")).status == 400


@pytest.mark.parametrize("typed", ["555-01", "hello", "bob@nowhere", "@nodot", "", "short:1"])
async def test_text_that_is_no_address_is_200_with_the_parsers_reason(
    world: World, typed: str
) -> None:
    with pytest.raises(AddressError) as expected:
        trust.parse_entry(typed, "US")
    reply = await world.read(typed)
    assert reply.status == 200
    assert reply.body["valid"] is False
    assert (reply.body["address"], reply.body["reason"]) == (None, expected.value.reason)


@pytest.mark.parametrize(
    ("typed", "address", "kind", "display"),
    [
        ("Jo@Example.COM", "Jo@example.com", "email", "Jo@example.com"),
        ("@Example.COM", "@example.com", "domain", "@example.com"),
        ("short:12345", "short:12345", "sender_id", "short code 12345"),
        ("alpha:mybank", "alpha:MYBANK", "sender_id", "MYBANK"),
    ],
)
async def test_other_kinds_read_as_the_trust_list_would_store_them(
    world: World, typed: str, address: str, kind: str, display: str
) -> None:
    reply = await world.read(typed)
    assert (reply.body["address"], reply.body["kind"], reply.body["display"]) == (
        address,
        kind,
        display,
    )


async def test_the_reading_is_what_adding_stores(world: World) -> None:
    reading = (await world.read(" tel:+1-415-555-0100 ")).body
    added = await checked_call(
        world.client,
        world.doc,
        "POST",
        "/trusted-senders",
        token=world.tokens["ada"],
        json={"address": " tel:+1-415-555-0100 "},
    )
    assert added.body["address"] == reading["address"]


async def test_reading_saves_nothing(world: World) -> None:
    await world.read("(415) 555-0100")
    assert await world.entries() == []


async def test_a_missing_value_is_400(world: World) -> None:
    reply = await world.read(None)
    assert reply.status == 400
    assert reply.body["detail"] == "value is required: the address as typed"


async def test_an_overlong_value_is_400_and_not_echoed(world: World) -> None:
    reply = await world.read("4" * 501)
    assert reply.status == 400
    assert "4444" not in reply.body["detail"]


async def test_without_a_token_it_is_401(world: World) -> None:
    resp = await world.client.get("/api/v1/addresses/normalize?value=4155550100")
    assert resp.status == 401
