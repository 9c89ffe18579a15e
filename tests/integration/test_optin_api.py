"""Trusted senders, address book and screener through the client API, over real HTTP.

Every response of these tests is checked against the OpenAPI document the server
serves (its status must be documented for the operation, its body must match the
documented schema), by the small JSON Schema checker below.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.openapi import openapi_document
from inbox import store
from inbox.addresses import E164
from inbox.db import Database
from inbox.errors import AddressError
from optin import trust
from tests.conftest import make_settings, twilio_form
from tests.integration.helpers import make_user, message_rows, post_signed
from tests.integration.openapi_check import Reply, checked_call, template_for

Client = TestClient[Any, Any]

ADA_NUMBER = "+14155550199"  # Ada's OptMsg number (inbound SMS to it routes to her)
BOB_NUMBER = "+14155550198"
STRANGER = "+14155550111"
OTHER = "+14155550112"
API = "/api/v1"


# --- the world: two users with tokens, a running app -------------------------------------


@dataclass
class World:
    client: Client
    db: Database
    ada: str
    bob: str
    tokens: dict[str, str]
    doc: dict[str, Any] = field(default_factory=openapi_document)
    checked: set[tuple[str, str, int]] = field(default_factory=set)

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "ada",
        token: str | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request to the API as ``who``; the reply is checked against the document."""
        if token is None and who is not None:
            token = self.tokens[who]
        reply = await checked_call(
            self.client, self.doc, method, path, token=token, json=json, data=data, headers=headers
        )
        self.checked.add((method.lower(), reply.template, reply.status))
        return reply

    async def items(self, path: str, who: str = "ada") -> list[dict[str, Any]]:
        """Every item of a list, following ``next`` to the end."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            sep = "&" if "?" in path else "?"
            reply = await self.call(
                "GET", path + (f"{sep}cursor={cursor}" if cursor else ""), who=who
            )
            assert reply.status == 200, reply.body
            items += reply.body["items"]
            cursor = reply.body["next"]
            if cursor is None:
                return items

    async def sms(self, sender: str, to: str, text: str) -> None:
        """An inbound SMS through the signed Twilio webhook (the real ingest pipeline)."""
        resp = await post_signed(self.client, twilio_form(sender=sender, to=to, body=text))
        assert resp.status == 200
        await asyncio.sleep(0.002)  # ids (and so card order) have millisecond resolution

    async def texts(self, folder: str, who: str = "ada") -> dict[str, str]:
        """message text -> sender, in one folder."""
        messages = await self.items(f"/messages?folder={folder}", who)
        return {m["text"]: m["sender"] for m in messages}


async def _world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    # Ada's account number is American (her region is US), Bob's British (GB).
    ada = make_user(db, phone="+14155550150", sms_number=ADA_NUMBER)
    bob = make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")
    client = await aiohttp_client(create_app(settings))
    tokens = {"ada": store.create_token(db, ada)[1], "bob": store.create_token(db, bob)[1]}
    return World(client, db, ada, bob, tokens)


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    return await _world(settings, db, aiohttp_client)


@pytest.fixture
def small_settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(
        tmp_path,
        db_url,
        optin={"max_contacts_bytes": 2048, "max_contacts": 3},
        http={"max_api_body_bytes": 1024},
    )


@pytest.fixture
def small_db(small_settings: Settings) -> Any:
    from inbox.db import open_database
    from inbox.migrate import upgrade

    database = open_database(small_settings.database)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def small(
    small_settings: Settings, small_db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    """A world with small limits: 2 KiB address books of 3 contacts, 1 KiB JSON bodies."""
    return await _world(small_settings, small_db, aiohttp_client)


async def add(world: World, address: str, verdict: str | None = None, who: str = "ada") -> Reply:
    body = {"address": address} if verdict is None else {"address": address, "verdict": verdict}
    return await world.call("POST", "/trusted-senders", json=body, who=who)


# --- trusted senders ---------------------------------------------------------------------


async def test_spellings_of_one_number_are_one_entry(world: World) -> None:
    first = await add(world, "(415) 555-0100")
    assert first.status == 201
    assert first.headers["Location"] == f"{API}/trusted-senders/+14155550100"
    for spelling in ("415.555.0100", "+1 415 555 0100", "tel:+1-415-555-0100", "14155550100"):
        assert (await add(world, spelling)).status == 200
    entries = await world.items("/trusted-senders")
    assert [(e["address"], e["kind"], e["verdict"], e["source"]) for e in entries] == [
        ("+14155550100", "phone", "trusted", "manual")
    ]


async def test_a_national_number_is_read_with_the_users_region(world: World) -> None:
    reply = await add(world, "020 7946 0018", who="bob")  # Bob's account is British
    assert reply.status == 201
    assert reply.body["address"] == "+442079460018"


@pytest.mark.parametrize("typed", ["555-01", "hello", "bob@nowhere", "@nodot", ""])
async def test_unparsable_address_is_400_with_the_reason_and_stores_nothing(
    world: World, typed: str
) -> None:
    with pytest.raises(AddressError) as expected:
        trust.parse_entry(typed, "US")
    reply = await add(world, typed)
    assert reply.status == 400
    assert reply.content_type == "application/problem+json"
    assert reply.body["detail"] == expected.value.reason
    assert await world.items("/trusted-senders") == []


@pytest.mark.parametrize(
    ("typed", "address", "kind"),
    [
        ("@Example.COM", "@example.com", "domain"),
        ("Jo@Example.COM", "Jo@example.com", "email"),
        ("short:12345", "short:12345", "sender_id"),
        ("alpha:mybank", "alpha:MYBANK", "sender_id"),
    ],
)
async def test_domain_email_and_sender_id_entries_are_added(
    world: World, typed: str, address: str, kind: str
) -> None:
    reply = await add(world, typed)
    assert reply.status == 201
    assert (reply.body["address"], reply.body["kind"]) == (address, kind)
    assert [e["address"] for e in await world.items("/trusted-senders")] == [address]


async def test_adding_with_verdict_blocked_blocks(world: World) -> None:
    await add(world, "+14155550100")
    reply = await add(world, "(415) 555-0100", "blocked")
    assert (reply.status, reply.body["verdict"]) == (200, "blocked")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b"", "the body must be a JSON object"),
        (b'["+14155550100"]', "the body must be a JSON object"),
        (b"[" * 100_000, "the body is not valid JSON"),
        (b"{}", "address must be a string"),
        (b'{"address": 4155550100}', "address must be a string"),
        (b'{"address": "+14155550100", "verdict": "maybe"}', "verdict must be one of"),
        (b'{"address": "+14155550100", "verdikt": "blocked"}', "unknown field 'verdikt'"),
    ],
)
async def test_malformed_trusted_sender_bodies_are_400(
    world: World, body: bytes, detail: str
) -> None:
    reply = await world.call(
        "POST", "/trusted-senders", data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400
    assert reply.body["detail"].startswith(detail)
    assert await world.items("/trusted-senders") == []


@pytest.mark.parametrize(
    "path_address",
    ["+14155550100", "%2B14155550100", "%28415%29%20555-0100", "415.555.0100"],
)
async def test_delete_removes_the_entry_by_any_spelling(world: World, path_address: str) -> None:
    await add(world, "+14155550100")
    await add(world, "+14155550101")
    reply = await world.call("DELETE", f"/trusted-senders/{path_address}")
    assert reply.status == 204
    assert [e["address"] for e in await world.items("/trusted-senders")] == ["+14155550101"]


@pytest.mark.parametrize("address", ["@example.com", "Jo@example.com", "alpha:MY BANK"])
async def test_delete_removes_a_listed_address_url_encoded(world: World, address: str) -> None:
    listed = (await add(world, address)).body["address"]
    reply = await world.call("DELETE", f"/trusted-senders/{quote(listed, safe='')}")
    assert reply.status == 204
    assert await world.items("/trusted-senders") == []


async def test_deleting_an_absent_entry_is_404(world: World) -> None:
    reply = await world.call("DELETE", "/trusted-senders/+14155550100")
    assert reply.status == 404


async def test_deleting_an_unparsable_address_is_400_with_the_reason(world: World) -> None:
    reply = await world.call("DELETE", "/trusted-senders/555-01")
    assert reply.status == 400
    assert reply.body["detail"] == "too few digits for a phone number"


async def test_an_entry_that_no_longer_parses_can_still_be_deleted(world: World) -> None:
    # As if stored before a phone-number metadata update made the number invalid.
    trust.add(world.db, world.ada, E164("+10005550100"))
    reply = await world.call("DELETE", "/trusted-senders/%2B10005550100")
    assert reply.status == 204
    assert await world.items("/trusted-senders") == []


async def test_verdict_filter_and_cursor_page_through_the_list(world: World) -> None:
    trusted = [f"+1415555010{i}" for i in range(5)]
    for number in trusted:
        await add(world, number)
    await add(world, "+14155550120", "blocked")
    await add(world, "@spam.example", "blocked")
    pages = []
    cursor = None
    while True:
        query = "/trusted-senders?verdict=trusted&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await world.call("GET", query)).body
        pages.append([e["address"] for e in page["items"]])
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == [trusted[0:2], trusted[2:4], trusted[4:]]
    blocked = await world.items("/trusted-senders?verdict=blocked")
    assert [e["address"] for e in blocked] == ["+14155550120", "@spam.example"]
    assert len(await world.items("/trusted-senders")) == 7


@pytest.mark.parametrize("query", ["verdict=maybe", "limit=0", "limit=201", "cursor=%%%"])
async def test_bad_trusted_sender_list_parameters_are_400(world: World, query: str) -> None:
    assert (await world.call("GET", f"/trusted-senders?{query}")).status == 400


async def test_a_cursor_of_one_verdict_is_refused_for_another(world: World) -> None:
    for i in range(3):
        await add(world, f"+1415555010{i}")
    page = (await world.call("GET", "/trusted-senders?verdict=trusted&limit=1")).body
    reply = await world.call("GET", f"/trusted-senders?verdict=blocked&cursor={page['next']}")
    assert reply.status == 400


async def test_another_users_entries_are_invisible_and_untouchable(world: World) -> None:
    await add(world, "+14155550100")
    assert await world.items("/trusted-senders", who="bob") == []
    assert (await world.call("DELETE", "/trusted-senders/+14155550100", who="bob")).status == 404
    assert [e["address"] for e in await world.items("/trusted-senders")] == ["+14155550100"]


# --- address book ------------------------------------------------------------------------

VCARD = (
    b"BEGIN:VCARD\r\n"  # line 1
    b"VERSION:3.0\r\n"
    b"FN:Alice Example\r\n"
    b"TEL;TYPE=CELL:(415) 555-0100\r\n"
    b"END:VCARD\r\n"
    b"BEGIN:VCARD\r\n"  # line 6
    b"VERSION:3.0\r\n"
    b"FN:Bob Example\r\n"
    b"TEL:12\r\n"  # line 9: not a number; Bob keeps his email address
    b"EMAIL:bob@Example.com\r\n"
    b"END:VCARD\r\n"
    b"BEGIN:VCARD\r\n"  # line 12
    b"VERSION:3.0\r\n"
    b"FN:Nobody\r\n"
    b"END:VCARD\r\n"
)

CSV = b"Name,Phone\nAlice,415-555-0100\nBob,not a number\nCarol,+44 7911 123456\n"


async def upload(
    world: World,
    data: bytes,
    content_type: str = "text/csv",
    who: str = "ada",
    query: str = "",
) -> Reply:
    return await world.call(
        "POST", f"/contacts{query}", data=data, headers={"Content-Type": content_type}, who=who
    )


async def contact_names(world: World, who: str = "ada") -> list[str]:
    return sorted(c["name"] for c in await world.items("/contacts", who))


async def test_vcard_upload_reports_the_rejected_entries(world: World) -> None:
    reply = await upload(world, VCARD, "text/vcard")
    assert reply.status == 201
    assert reply.body["format"] == "vcard"
    assert reply.body["imported"] == 2
    assert [(r["position"], r["name"], r["value"]) for r in reply.body["rejected"]] == [
        (9, "Bob Example", "12"),
        (12, "Nobody", ""),
    ]
    assert all(r["reason"] for r in reply.body["rejected"])
    contacts = {c["name"]: c for c in await world.items("/contacts")}
    assert contacts["Alice Example"]["phones"] == ["+14155550100"]
    assert contacts["Bob Example"]["emails"] == ["bob@example.com"]


async def test_csv_upload_reports_the_rejected_entries(world: World) -> None:
    reply = await upload(world, CSV, "text/csv")
    assert reply.status == 201
    assert (reply.body["format"], reply.body["imported"]) == ("csv", 2)
    (rejected,) = reply.body["rejected"]
    assert (rejected["position"], rejected["name"], rejected["value"]) == (3, "Bob", "not a number")
    assert await contact_names(world) == ["Alice", "Carol"]


async def test_upload_numbers_are_read_with_the_users_region(world: World) -> None:
    await upload(world, b"Name,Phone\nDan,020 7946 0018\n", who="bob")
    (contact,) = await world.items("/contacts", who="bob")
    assert contact["phones"] == ["+442079460018"]


async def test_upload_format_is_told_by_the_filename(world: World) -> None:
    data = b'[{"name": "Alice", "phones": ["415 555 0100"]}]'
    reply = await upload(world, data, "application/octet-stream", query="?filename=book.json")
    assert (reply.status, reply.body["format"]) == (201, "json")


async def test_upload_where_everything_is_rejected_is_200(world: World) -> None:
    reply = await upload(world, b"Name,Phone\nBob,not a number\n")
    assert (reply.status, reply.body["imported"], len(reply.body["rejected"])) == (200, 0, 1)
    assert await world.items("/contacts") == []


async def test_upload_over_10_mb_is_413_and_stores_nothing(world: World) -> None:
    row = b"Alice,415-555-0100\n"
    data = b"Name,Phone\n" + row * (10 * 1024 * 1024 // len(row) + 1)
    assert len(data) > 10 * 1024 * 1024
    reply = await upload(world, io.BytesIO(data))  # type: ignore[arg-type]  # Content-Length set
    assert reply.status == 413
    assert await world.items("/contacts") == []


async def test_chunked_upload_over_the_limit_is_413_and_stores_nothing(small: World) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server counts
        yield b"Name,Phone\n"
        for _ in range(200):
            yield b"Alice,415-555-0100\n"

    reply = await upload(small, chunks())  # type: ignore[arg-type]
    assert reply.status == 413
    assert await small.items("/contacts") == []


async def test_upload_over_the_contact_limit_is_413_and_stores_nothing(small: World) -> None:
    assert (await upload(small, b"Name,Phone\nA,415-555-0100\nB,415-555-0101\n")).status == 201
    reply = await upload(small, b"Name,Phone\nC,415-555-0102\nD,415-555-0103\n")
    assert reply.status == 413
    assert reply.body["detail"] == "the address book would hold 4 contacts; the limit is 3"
    assert await contact_names(small) == ["A", "B"]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"BEGIN:VCARD\nFN:A\nTEL:4155550100\n", "line 1: BEGIN:VCARD has no matching END:VCARD"),
        (b"Name,Company\nA,B\n", "line 1: no phone or email column"),
        (b"Name,Phone\n\xff\xfeAlice,4155550100\n", "line 2: the file is not UTF-8 text"),
        (b"", "the file is empty"),
    ],
)
async def test_malformed_file_is_400_with_the_line_and_stores_nothing(
    world: World, data: bytes, detail: str
) -> None:
    reply = await upload(world, data)
    assert reply.status == 400
    assert reply.body["detail"].startswith(detail)
    assert await world.items("/contacts") == []


async def test_multipart_upload_is_415(world: World) -> None:
    reply = await upload(world, CSV, "multipart/form-data; boundary=x")
    assert reply.status == 415
    assert await world.items("/contacts") == []


async def ids_by_name(world: World, who: str = "ada") -> dict[str, str]:
    return {c["name"]: c["id"] for c in await world.items("/contacts", who)}


async def trusted(world: World, who: str = "ada") -> dict[str, tuple[str, str]]:
    """address -> (verdict, source)."""
    entries = await world.items("/trusted-senders", who)
    return {e["address"]: (e["verdict"], e["source"]) for e in entries}


async def test_opt_in_all_trusts_every_contacts_address(world: World) -> None:
    await upload(world, VCARD, "text/vcard")
    reply = await world.call("POST", "/contacts/opt-in", json={"all": True})
    assert (reply.status, reply.body) == (200, {"added": 2})
    assert await trusted(world) == {
        "+14155550100": ("trusted", "contacts"),
        "bob@example.com": ("trusted", "contacts"),
    }


async def test_opt_in_of_selected_contacts_trusts_only_theirs(world: World) -> None:
    await upload(world, CSV)
    carol = (await ids_by_name(world))["Carol"]
    reply = await world.call("POST", "/contacts/opt-in", json={"ids": [carol]})
    assert reply.body == {"added": 1}
    assert await trusted(world) == {"+447911123456": ("trusted", "contacts")}


async def test_opt_in_never_overrides_a_blocked_entry(world: World) -> None:
    await add(world, "+14155550100", "blocked")
    await upload(world, CSV)
    reply = await world.call("POST", "/contacts/opt-in", json={"all": True})
    assert reply.body == {"added": 1}
    assert await trusted(world) == {
        "+14155550100": ("blocked", "manual"),
        "+447911123456": ("trusted", "contacts"),
    }


async def test_opt_in_with_an_unknown_id_is_404_and_trusts_nothing(world: World) -> None:
    await upload(world, CSV)
    alice = (await ids_by_name(world))["Alice"]
    for unknown in ("con_" + "0" * 32, "not-an-id"):
        reply = await world.call("POST", "/contacts/opt-in", json={"ids": [alice, unknown]})
        assert reply.status == 404
    assert await trusted(world) == {}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "send either"),
        ({"all": True, "ids": ["con_x"]}, "send either"),
        ({"all": False}, "all must be true"),
        ({"all": "yes"}, "all must be true"),
        ({"ids": []}, "ids must not be empty"),
        ({"ids": "con_x"}, "ids must be a list of strings"),
        ({"ids": [1]}, "ids must be a list of strings"),
        ({"everyone": True}, "unknown field 'everyone'"),
    ],
)
async def test_malformed_opt_in_bodies_are_400(
    world: World, body: dict[str, Any], detail: str
) -> None:
    await upload(world, CSV)
    reply = await world.call("POST", "/contacts/opt-in", json=body)
    assert reply.status == 400
    assert reply.body["detail"].startswith(detail)
    assert await trusted(world) == {}


async def test_deleting_the_address_book_with_untrust_removes_only_its_entries(
    world: World,
) -> None:
    await add(world, "+14155550120")  # the user's own entry
    await upload(world, CSV)
    await world.call("POST", "/contacts/opt-in", json={"all": True})
    await add(world, "+44 7911 123456", "blocked")  # the user changed Carol's entry
    reply = await world.call("DELETE", "/contacts?untrust=true")
    assert (reply.status, reply.body) == (200, {"contacts": 2, "trusted_senders": 1})
    assert await world.items("/contacts") == []
    assert await trusted(world) == {
        "+14155550120": ("trusted", "manual"),
        "+447911123456": ("blocked", "manual"),
    }


async def test_deleting_the_address_book_keeps_trust_entries_by_default(world: World) -> None:
    await upload(world, CSV)
    await world.call("POST", "/contacts/opt-in", json={"all": True})
    reply = await world.call("DELETE", "/contacts")
    assert reply.body == {"contacts": 2, "trusted_senders": 0}
    assert set(await trusted(world)) == {"+14155550100", "+447911123456"}


async def test_untrust_must_be_true_or_false(world: World) -> None:
    await upload(world, CSV)
    reply = await world.call("DELETE", "/contacts?untrust=yes")
    assert reply.status == 400
    assert await contact_names(world) == ["Alice", "Carol"]


async def test_contacts_page_with_a_cursor(world: World) -> None:
    rows = "".join(f"P{i},415-555-01{i:02d}\n" for i in range(5))
    await upload(world, b"Name,Phone\n" + rows.encode())
    first = (await world.call("GET", "/contacts?limit=3")).body
    second = (await world.call("GET", f"/contacts?limit=3&cursor={first['next']}")).body
    assert (len(first["items"]), len(second["items"]), second["next"]) == (3, 2, None)
    names = [c["name"] for c in first["items"] + second["items"]]
    assert sorted(names) == [f"P{i}" for i in range(5)]


async def test_another_user_does_not_see_the_contacts(world: World) -> None:
    await upload(world, CSV)
    assert await world.items("/contacts", who="bob") == []


async def test_another_user_cannot_opt_in_the_contacts(world: World) -> None:
    await upload(world, CSV)
    ids = list((await ids_by_name(world)).values())
    reply = await world.call("POST", "/contacts/opt-in", json={"ids": ids}, who="bob")
    assert reply.status == 404
    assert await trusted(world, "bob") == {}
    assert await trusted(world) == {}


async def test_another_user_cannot_delete_the_contacts(world: World) -> None:
    await upload(world, CSV)
    reply = await world.call("DELETE", "/contacts?untrust=true", who="bob")
    assert reply.body == {"contacts": 0, "trusted_senders": 0}
    assert await contact_names(world) == ["Alice", "Carol"]


# --- screener ----------------------------------------------------------------------------


@pytest.fixture
async def held(world: World) -> World:
    """Ada holds a1, a2 from STRANGER and a3 from OTHER; Bob holds b1 from STRANGER."""
    await world.sms(STRANGER, ADA_NUMBER, "a1")
    await world.sms(STRANGER, ADA_NUMBER, "a2")
    await world.sms(OTHER, ADA_NUMBER, "a3")
    await world.sms(STRANGER, BOB_NUMBER, "b1")
    return world


async def test_cards_group_held_messages_by_sender(held: World) -> None:
    cards = await held.items("/screener")
    assert [(c["sender"], c["count"]) for c in cards] == [(OTHER, 1), (STRANGER, 2)]
    card = cards[1]
    assert (card["first"]["preview"], card["latest"]["preview"]) == ("a1", "a2")
    assert card["display"] == "(415) 555-0111"
    assert (card["kind"], card["channel"]) == ("phone", "sms")
    first = datetime.fromisoformat(card["first"]["received_at"])
    assert datetime.fromisoformat(card["expires_at"]) == first + timedelta(days=30)
    bobs = await held.items("/screener", who="bob")
    assert [(c["sender"], c["count"], c["latest"]["preview"]) for c in bobs] == [
        (STRANGER, 1, "b1")
    ]


async def test_cards_page_with_a_cursor(held: World) -> None:
    first = (await held.call("GET", "/screener?limit=1")).body
    second = (await held.call("GET", f"/screener?limit=1&cursor={first['next']}")).body
    assert [c["sender"] for c in first["items"] + second["items"]] == [OTHER, STRANGER]
    assert second["next"] is None


async def test_allow_releases_exactly_that_senders_held_messages(held: World) -> None:
    reply = await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    assert reply.status == 200
    assert reply.body["action"] == "allow"
    assert (reply.body["senders"], reply.body["messages"]) == ([STRANGER], 2)
    assert await held.texts("inbox") == {"a1": STRANGER, "a2": STRANGER}
    assert await held.texts("quarantine") == {"a3": OTHER}
    assert await held.texts("quarantine", "bob") == {"b1": STRANGER}
    assert await held.texts("inbox", "bob") == {}


async def test_after_allow_the_senders_next_message_lands_in_the_inbox(held: World) -> None:
    await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    await held.sms(STRANGER, ADA_NUMBER, "a4")
    assert set(await held.texts("inbox")) == {"a1", "a2", "a4"}
    assert (await trusted(held))[STRANGER] == ("trusted", "release")


async def test_block_hides_the_held_messages(held: World) -> None:
    stranger_ids = [
        m["id"] for m in await held.items("/messages?folder=quarantine") if m["sender"] == STRANGER
    ]
    reply = await held.call("POST", "/screener/block", json={"senders": [STRANGER]})
    assert (reply.status, reply.body["action"], reply.body["messages"]) == (200, "block", 2)
    assert await held.texts("quarantine") == {"a3": OTHER}
    assert await held.texts("inbox") == {}
    for message_id in stranger_ids:
        assert (await held.call("GET", f"/messages/{message_id}")).status == 404
    assert [c["sender"] for c in await held.items("/screener")] == [OTHER]
    assert await held.texts("quarantine", "bob") == {"b1": STRANGER}


async def test_after_block_the_senders_next_message_is_dropped(held: World) -> None:
    await held.call("POST", "/screener/block", json={"senders": [STRANGER]})
    await held.sms(STRANGER, ADA_NUMBER, "a4")
    assert [r for r in message_rows(held.db) if r.text == "a4"] == []
    assert (await trusted(held))[STRANGER] == ("blocked", "manual")


async def test_undo_of_allow_holds_the_messages_again(held: World) -> None:
    await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    reply = await held.call("POST", "/screener/undo")
    assert (reply.status, reply.body) == (
        200,
        {"undone": "allow", "senders": [STRANGER], "messages": 2},
    )
    assert await held.texts("quarantine") == {"a1": STRANGER, "a2": STRANGER, "a3": OTHER}
    assert await held.texts("inbox") == {}
    assert await trusted(held) == {}


async def test_undo_of_block_shows_the_messages_again(held: World) -> None:
    await add(held, STRANGER)  # trusted before; the block replaced it; undo restores it
    await held.sms(OTHER, ADA_NUMBER, "a5")
    ids = {m["text"]: m["id"] for m in await held.items("/messages?folder=quarantine")}
    await held.call("POST", "/screener/block", json={"senders": [STRANGER]})
    reply = await held.call("POST", "/screener/undo")
    assert (reply.status, reply.body["undone"], reply.body["messages"]) == (200, "block", 2)
    assert (await held.call("GET", f"/messages/{ids['a1']}")).status == 200
    assert set(await held.texts("quarantine")) == {"a1", "a2", "a3", "a5"}
    assert await trusted(held) == {STRANGER: ("trusted", "manual")}


async def test_undo_twice_is_409(held: World) -> None:
    await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    assert (await held.call("POST", "/screener/undo")).status == 200
    reply = await held.call("POST", "/screener/undo")
    assert reply.status == 409
    assert reply.content_type == "application/problem+json"
    assert set(await held.texts("quarantine")) == {"a1", "a2", "a3"}


async def test_undo_with_no_decision_is_409(world: World) -> None:
    assert (await world.call("POST", "/screener/undo")).status == 409


async def test_undo_never_undoes_another_users_decision(held: World) -> None:
    await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    assert (await held.call("POST", "/screener/undo", who="bob")).status == 409
    assert set(await held.texts("inbox")) == {"a1", "a2"}


async def test_bulk_allow_of_two_senders(held: World) -> None:
    reply = await held.call("POST", "/screener/allow", json={"senders": [STRANGER, OTHER]})
    assert (reply.body["senders"], reply.body["messages"]) == ([STRANGER, OTHER], 3)
    assert set(await held.texts("inbox")) == {"a1", "a2", "a3"}
    assert await held.items("/screener") == []


async def test_a_sender_without_held_messages_is_404_and_nothing_changes(held: World) -> None:
    reply = await held.call("POST", "/screener/allow", json={"senders": [STRANGER, "+14155550177"]})
    assert reply.status == 404
    assert reply.body["detail"] == "no held messages from +14155550177"
    assert set(await held.texts("quarantine")) == {"a1", "a2", "a3"}
    assert await trusted(held) == {}


@pytest.mark.parametrize("action", ["allow", "block"])
async def test_another_user_cannot_decide_on_a_sender_who_wrote_only_to_ada(
    held: World, action: str
) -> None:
    reply = await held.call("POST", f"/screener/{action}", json={"senders": [OTHER]}, who="bob")
    assert reply.status == 404
    assert reply.body["detail"] == f"no held messages from {OTHER}"
    assert [(c["sender"], c["count"]) for c in await held.items("/screener")] == [
        (OTHER, 1),
        (STRANGER, 2),
    ]
    assert await trusted(held, "bob") == {}
    assert (await held.call("POST", "/screener/undo", who="bob")).status == 409


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "senders must be a list of strings"),
        ({"senders": STRANGER}, "senders must be a list of strings"),
        ({"senders": [14155550111]}, "senders must be a list of strings"),
        ({"senders": []}, "senders must not be empty"),
        ({"senders": [""]}, "each of senders must be 1 to 320 characters"),
        ({"senders": [f"+1415555{i:04d}" for i in range(501)]}, "at most 500 senders"),
        ({"sender": STRANGER}, "unknown field 'sender'"),
        ([STRANGER], "the body must be a JSON object"),
    ],
)
async def test_malformed_decision_bodies_are_400(held: World, body: Any, detail: str) -> None:
    for action in ("allow", "block"):
        reply = await held.call("POST", f"/screener/{action}", json=body)
        assert reply.status == 400
        assert reply.body["detail"].startswith(detail)
    assert set(await held.texts("quarantine")) == {"a1", "a2", "a3"}


@pytest.mark.parametrize("path", ["/screener/allow", "/trusted-senders", "/contacts/opt-in"])
async def test_json_body_over_the_limit_is_413(small: World, path: str) -> None:
    body = b'{"senders": ["' + b"x" * 1024 + b'"]}'
    reply = await small.call("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert reply.status == 413


# --- authentication and the document -----------------------------------------------------

NEW_OPERATIONS = [
    ("GET", "/trusted-senders"),
    ("POST", "/trusted-senders"),
    ("DELETE", "/trusted-senders/+14155550100"),
    ("GET", "/contacts"),
    ("POST", "/contacts"),
    ("DELETE", "/contacts"),
    ("POST", "/contacts/opt-in"),
    ("GET", "/screener"),
    ("POST", "/screener/allow"),
    ("POST", "/screener/block"),
    ("POST", "/screener/undo"),
]


@pytest.mark.parametrize("token", [None, "optmsg_not-a-real-token"])
async def test_new_endpoints_need_a_valid_token(world: World, token: str | None) -> None:
    await world.call("POST", "/trusted-senders", json={"address": "+14155550100"})
    for method, path in NEW_OPERATIONS:
        reply = await world.call(method, path, who=None, token=token, json={"senders": [STRANGER]})
        assert reply.status == 401, (method, path)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(await world.items("/trusted-senders")) == 1


async def test_every_api_route_is_in_the_openapi_document(world: World) -> None:
    doc = (await world.client.get(f"{API}/openapi.json")).json
    served = await doc()
    assert served == world.doc
    routes = {
        (route.method, route.resource.canonical.removeprefix(API))
        for route in world.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(API + "/")
        and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path) for path, item in served["paths"].items() for method in item
    }
    assert routes == documented  # the document describes itself too


async def test_responses_of_every_new_operation_match_the_document(held: World) -> None:
    """One successful call of each operation; World.call checks each reply's status and
    body against the document, and records what it checked."""
    await add(held, "(415) 555-0100")
    await held.items("/trusted-senders")
    await held.call("DELETE", "/trusted-senders/+14155550100")
    await upload(held, VCARD, "text/vcard")
    await held.items("/contacts")
    await held.call("POST", "/contacts/opt-in", json={"all": True})
    await held.call("DELETE", "/contacts?untrust=true")
    await held.items("/screener")
    await held.call("POST", "/screener/allow", json={"senders": [STRANGER]})
    await held.call("POST", "/screener/undo")
    await held.call("POST", "/screener/block", json={"senders": [OTHER]})
    successes = {(m, t) for m, t, status in held.checked if status < 300}
    for method, path in NEW_OPERATIONS:
        template = template_for(held.doc, path)
        assert (method.lower(), template) in successes
