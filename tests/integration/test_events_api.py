"""GET /api/v1/events over real HTTP: a signed webhook, a status callback and a
screener decision reach the user's open stream; Last-Event-ID resumes exactly; users
never see each other's events; two app instances on one database reach each other's
clients through the real Redis (and, without it, through the table poll); limits,
malformed input and shutdown.

Responses other than the open stream are checked against the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, ClientSession, ClientTimeout
from aiohttp.test_utils import TestClient, TestServer

from config import Settings
from gateway import events_route
from gateway.app import create_app
from gateway.live import EVENT_HUB, MAX_QUEUED_BYTES, EventHub
from gateway.openapi import openapi_document
from inbox import events, store
from inbox.addresses import E164
from inbox.db import Database, open_database
from inbox.migrate import upgrade
from inbox.outbound import insert_outbound_sms, mark_handed_over
from inbox.suspension import set_suspended
from tests.conftest import ACCOUNT_SID, make_settings, missing_service, twilio_form
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.helpers import make_user, message_rows, post_signed, trust_sender
from tests.integration.openapi_check import checked_call

Client = TestClient[Any, Any]
ADA_NUMBER = "+14155550199"
BOB_NUMBER = "+14155550198"
FRIEND = "+14155550100"
STRANGER = "+14155550122"
EVENTS = "/api/v1/events"
REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT_S = 5.0


@dataclass(frozen=True)
class Sse:
    id: str | None
    event: str
    data: Any


class SseReader:
    """Reads one text/event-stream as a browser's EventSource would (comments and
    ``retry:``-only blocks skipped)."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response
        self.retry: int | None = None
        self.comments = 0

    async def next(self, timeout: float = WAIT_S) -> Sse:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Sse:
        fields: dict[str, str] = {}
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if "data" in fields:
                    return Sse(
                        fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                    )
                fields = {}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    async def ended(self, timeout: float = WAIT_S) -> bool:
        """True when the server closes the stream (no further event) within ``timeout``."""
        try:
            await self.next(timeout)
        except EOFError:
            return True
        return False

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


@dataclass
class World:
    client: Client
    db: Database
    users: dict[str, str]
    tokens: dict[str, str]

    async def open(
        self, who: str = "ada", *, headers: dict[str, str] | None = None, query: str = ""
    ) -> SseReader:
        all_headers = {"Authorization": f"Bearer {self.tokens[who]}", **(headers or {})}
        resp = await self.client.get(EVENTS + query, headers=all_headers)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "text/event-stream"
        return SseReader(resp)

    async def webhook(self, *, sender: str = FRIEND, to: str = ADA_NUMBER) -> str:
        """A signed inbound SMS; returns the stored message's id."""
        sid = "SM" + secrets.token_hex(16)
        resp = await post_signed(self.client, twilio_form(sender=sender, to=to, sid=sid))
        assert resp.status == 200
        (row,) = [r for r in message_rows(self.db) if r.external_id == sid]
        return str(row.id)


def _people(db: Database) -> tuple[dict[str, str], dict[str, str]]:
    ada = make_user(db, phone="+442079460958", sms_number=ADA_NUMBER)
    bob = make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")
    for user in (ada, bob):
        trust_sender(db, user, FRIEND)
    users = {"ada": ada, "bob": bob}
    return users, {who: store.create_token(db, uid)[1] for who, uid in users.items()}


def _events_settings(settings: Settings, **values: Any) -> Settings:
    return settings.model_copy(update={"events": settings.events.model_copy(update=values)})


@pytest.fixture
async def world(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> World:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(settings))
    return World(client, db, users, tokens)


# --- what reaches the stream -----------------------------------------------------------


async def test_a_signed_webhook_reaches_the_open_stream(world: World) -> None:
    stream = await world.open()
    message_id = await world.webhook()
    got = await stream.next()
    assert got.event == events.MESSAGE_CREATED
    assert got.data == {
        "message_id": message_id,
        "folder": "inbox",
        "channel": "sms",
        "direction": "inbound",
    }
    assert got.id is not None and got.id.isdigit()
    assert stream.retry is not None


async def test_the_event_never_carries_the_message_text(world: World) -> None:
    stream = await world.open()
    resp = await post_signed(
        world.client, twilio_form(sender=FRIEND, to=ADA_NUMBER, body="a secret")
    )
    assert resp.status == 200
    assert "a secret" not in json.dumps((await stream.next()).data)


async def test_a_status_callback_reaches_the_stream(world: World) -> None:
    sid = "SM" + secrets.token_hex(16)
    with world.db.write.begin() as conn:
        sent = insert_outbound_sms(conn, world.users["ada"], E164(FRIEND), "hello")
        mark_handed_over(conn, sent.message_id, sid, "queued")
    stream = await world.open()
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID}
    resp = await post_signed(world.client, form, path="/bridges/twilio/status")
    assert resp.status == 200
    got = await stream.next()
    assert (got.event, got.data) == (
        events.MESSAGE_STATUS,
        {"message_id": sent.message_id, "status": "delivered"},
    )


async def test_a_screener_allow_reaches_the_stream(world: World) -> None:
    held = await world.webhook(sender=STRANGER)
    stream = await world.open()
    resp = await world.client.post(
        "/api/v1/screener/allow",
        json={"senders": [STRANGER]},
        headers={"Authorization": f"Bearer {world.tokens['ada']}"},
    )
    assert resp.status == 200
    got = await stream.next()
    assert got.event == events.SCREENER_CHANGED
    assert (got.data["action"], got.data["messages"]) == ("allow", 1)
    assert held  # the message it moved is fetched through the API, not carried here


async def test_marking_a_message_read_reaches_the_users_other_streams(world: World) -> None:
    message_id = await world.webhook()
    phone, laptop = await world.open(), await world.open()
    resp = await world.client.patch(
        f"/api/v1/messages/{message_id}",
        json={"read": True},
        headers={"Authorization": f"Bearer {world.tokens['ada']}"},
    )
    assert resp.status == 200
    for stream in (phone, laptop):
        got = await stream.next()
        assert (got.event, got.data) == (
            events.MESSAGE_UPDATED,
            {"message_id": message_id, "read": True},
        )


async def test_another_users_events_never_appear(world: World) -> None:
    bobs = await world.open("bob")
    await world.webhook(to=ADA_NUMBER)
    await world.webhook(to=ADA_NUMBER)
    own = await world.webhook(to=BOB_NUMBER)
    got = await bobs.next()
    assert got.data["message_id"] == own  # Ada's two came first and were not sent
    assert await bobs.nothing_within(0.3)


# --- resuming ----------------------------------------------------------------------------


async def test_last_event_id_replays_exactly_the_missed_events_in_order(world: World) -> None:
    stream = await world.open()
    await world.webhook()
    seen = await stream.next()
    stream.response.close()
    missed = [await world.webhook() for _ in range(3)]
    resumed = await world.open(headers={"Last-Event-ID": str(seen.id)})
    got = [await resumed.next() for _ in missed]
    assert [g.data["message_id"] for g in got] == missed
    assert [int(str(g.id)) for g in got] == sorted(int(str(g.id)) for g in got)
    assert await resumed.nothing_within(0.3)


async def test_the_query_parameter_resumes_like_the_header(world: World) -> None:
    stream = await world.open()
    await world.webhook()
    seen = await stream.next()
    missed = await world.webhook()
    resumed = await world.open(query=f"?last_event_id={seen.id}")
    assert (await resumed.next()).data["message_id"] == missed


async def test_a_client_too_far_behind_is_told_to_reset(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, replay_max=2)))
    w = World(client, db, users, tokens)
    stream = await w.open()
    await w.webhook()
    seen = await stream.next()
    for _ in range(3):
        await w.webhook()
    resumed = await w.open(headers={"Last-Event-ID": str(seen.id)})
    reset = await resumed.next()
    assert reset.event == "reset"
    newest = events.list_after(db, users["ada"], 0, 100)[-1].id
    assert reset.id == str(newest)  # the stream goes on from there
    fresh = await w.webhook()
    assert (await resumed.next()).data["message_id"] == fresh


async def test_an_unknown_position_is_told_to_reset(world: World) -> None:
    await world.webhook()
    resumed = await world.open(headers={"Last-Event-ID": "999999999"})
    assert (await resumed.next()).event == "reset"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999999999999999999", "\uff11\uff12"])
async def test_a_malformed_last_event_id_is_a_400(world: World, value: str) -> None:
    reply = await checked_call(
        world.client, openapi_document(), "GET", "/events",
        token=world.tokens["ada"], headers={"Last-Event-ID": value},
    )  # fmt: skip
    assert reply.status == 400 and "Last-Event-ID" in reply.body["detail"]


async def test_an_empty_last_event_id_means_none(world: World) -> None:
    await world.webhook()
    stream = await world.open(headers={"Last-Event-ID": ""})
    fresh = await world.webhook()
    assert (await stream.next()).data["message_id"] == fresh


# --- access and limits -------------------------------------------------------------------


async def test_a_stream_needs_a_token(world: World) -> None:
    reply = await checked_call(world.client, openapi_document(), "GET", "/events")
    assert reply.status == 401


async def test_one_stream_too_many_is_a_429(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, max_clients_per_user=2)))
    w = World(client, db, users, tokens)
    first, _second = await w.open(), await w.open()
    reply = await checked_call(client, openapi_document(), "GET", "/events", token=tokens["ada"])
    assert reply.status == 429 and "at most 2" in reply.body["detail"]
    assert (await w.open("bob")).response.status == 200  # per user
    first.response.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closed connection
        resp = await client.get(EVENTS, headers={"Authorization": f"Bearer {tokens['ada']}"})
        if resp.status == 200:
            break
        await asyncio.sleep(0.2)
    assert resp.status == 200


async def test_a_revoked_token_ends_its_stream(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, keepalive_s=1)))
    w = World(client, db, users, tokens)
    stream = await w.open()
    owner = store.token_owner(db, tokens["ada"])
    assert owner is not None
    store.revoke_token(db, users["ada"], owner.token_id)
    assert await stream.ended(timeout=5)


def _record(db: Database, user_id: str, count: int, filler: int = 0) -> None:
    """``count`` events for ``user_id`` written straight to the table (as a worker
    would); ``filler`` pads each one's data to make large frames."""
    data = {"message_id": "m" * filler or "m"}
    with db.write.begin() as conn:
        events.insert(conn, [events.NewEvent(user_id, events.MESSAGE_DELETED, data)] * count)


async def _until_ended(stream: SseReader, within: float) -> float:
    """Read the stream (events keep coming) until the server ends it; the seconds taken."""
    started = time.monotonic()
    deadline = started + within
    with contextlib.suppress(EOFError):
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await stream.next(timeout=deadline - time.monotonic())
        raise AssertionError(f"the stream was still open after {within} s")
    return time.monotonic() - started


async def test_a_busy_stream_ends_within_two_periods_of_revocation(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, keepalive_s=1)))
    hub = client.app[EVENT_HUB]
    stream = await World(client, db, users, tokens).open()

    async def busy() -> None:  # an event every 0.3 s: never idle for a keep-alive
        while True:
            _record(db, users["ada"], 1)
            hub.notify([users["ada"]])
            await asyncio.sleep(0.3)

    feeder = asyncio.create_task(busy())
    try:
        for _ in range(4):
            await stream.next(timeout=2)
        owner = store.token_owner(db, tokens["ada"])
        assert owner is not None
        store.revoke_token(db, users["ada"], owner.token_id)
        assert await _until_ended(stream, within=4) < 2.5
        assert stream.comments == 0  # it ended although no keep-alive was ever due
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def test_a_suspended_users_open_stream_ends(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, keepalive_s=1)))
    w = World(client, db, users, tokens)
    adas, bobs = await w.open(), await w.open("bob")
    set_suspended(db, users["ada"], True)
    assert await adas.ended(timeout=4)
    assert await bobs.nothing_within(1.5)  # another user's stream goes on


async def _silent_reader(client: Client, token: str) -> socket.socket:
    """A raw connection with a tiny receive buffer that asks for the stream, reads
    its response head and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (str(client.server.host), int(str(client.server.port))))
    request = f"GET {EVENTS} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), WAIT_S)
    assert head.startswith(b"HTTP/1.1 200"), head
    # Loopback would otherwise absorb megabytes in the server's send buffer (Linux
    # grows it up to tcp_wmem's maximum): make it as small as a congested link's.
    runner = client.server.runner
    assert runner is not None and runner.server is not None
    for handler in runner.server.connections:
        assert handler.transport is not None
        server_side = handler.transport.get_extra_info("socket")
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock


async def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Drain what the server had sent; True when the connection then ends."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), deadline - time.monotonic())
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


async def _stream_count_drops(hub: EventHub, to: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if hub.stream_count == to:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_client_that_never_reads_is_cut_off_and_its_slot_freed(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, max_clients_per_user=1)))
    hub = client.app[EVENT_HUB]
    sock = await _silent_reader(client, tokens["ada"])
    try:
        assert hub.stream_count == 1
        # Frames of about 1 KB: twice the queue's limit (the socket buffers hold
        # about 100 KB).
        _record(db, users["ada"], 2 * MAX_QUEUED_BYTES // 1000, filler=900)
        hub.notify([users["ada"]])
        assert await _stream_count_drops(hub, 0, within=10)
        assert await _closed_by_server(sock, within=5)
    finally:
        sock.close()
    # The user's only slot is free again: a new stream opens and replays from the table.
    replay = await World(client, db, users, tokens).open(headers={"Last-Event-ID": "0"})
    assert (await replay.next()).event in ("reset", events.MESSAGE_DELETED)


async def test_a_write_the_client_does_not_take_in_time_ends_the_stream(
    settings: Settings,
    db: Database,
    aiohttp_client: Callable[..., Awaitable[Client]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events_route, "WRITE_TIMEOUT_S", 0.5)
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(settings))
    hub = client.app[EVENT_HUB]
    sock = await _silent_reader(client, tokens["ada"])
    try:
        # More than the socket buffers take, less than would overflow the queue.
        _record(db, users["ada"], MAX_QUEUED_BYTES // 3 // 1000, filler=900)
        hub.notify([users["ada"]])
        assert await _stream_count_drops(hub, 0, within=5)
        assert await _closed_by_server(sock, within=5)
    finally:
        sock.close()


async def test_a_server_holding_its_maximum_of_streams_answers_503(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, max_streams=2)))
    w = World(client, db, users, tokens)
    first, _second = await w.open("ada"), await w.open("bob")
    reply = await checked_call(client, openapi_document(), "GET", "/events", token=tokens["ada"])
    assert reply.status == 503 and "maximum of 2" in reply.body["detail"]
    assert reply.headers["Retry-After"].isdigit()
    first.response.close()
    assert await _stream_count_drops(client.app[EVENT_HUB], 1, within=10)
    assert (await w.open("ada")).response.status == 200


async def test_an_idle_stream_gets_keep_alive_comments(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, keepalive_s=1)))
    stream = await World(client, db, users, tokens).open()
    assert await stream.nothing_within(2.5)
    assert stream.comments >= 1


async def test_shutdown_with_open_streams_is_prompt(settings: Settings, db: Database) -> None:
    _, tokens = _people(db)
    server = TestServer(create_app(settings))
    await server.start_server()
    session = ClientSession(timeout=ClientTimeout(total=30))
    try:
        streams = []
        for _ in range(3):
            resp = await session.get(
                server.make_url(EVENTS), headers={"Authorization": f"Bearer {tokens['ada']}"}
            )
            assert resp.status == 200
            streams.append(SseReader(resp))
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 5
        for stream in streams:
            assert await stream.ended(timeout=2)
    finally:
        await session.close()


# --- across processes --------------------------------------------------------------------


def _redis_available() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        missing_service("Redis", str(exc))


async def _two_processes(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> tuple[World, World]:
    """Two app instances on one database, as two gateway processes would be."""
    users, tokens = _people(db)
    a = await aiohttp_client(create_app(settings, worker=False))
    b = await aiohttp_client(create_app(settings, worker=False, migrate=False))
    return World(a, db, users, tokens), World(b, db, users, tokens)


async def test_a_message_ingested_by_one_process_reaches_a_client_of_another_via_redis(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    _redis_available()
    shared = _events_settings(
        settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": REDIS_URL})}),
        redis_channel="optmsg:test:" + secrets.token_hex(8),
        poll_interval_s=60,  # far beyond the wait below: only Redis can deliver in time
    )
    a, b = await _two_processes(shared, db, aiohttp_client)
    on_b, on_a = await b.open(), await a.open()
    message_id = await a.webhook()
    started = time.monotonic()
    assert (await on_b.next(timeout=2)).data["message_id"] == message_id
    assert time.monotonic() - started < 2
    assert (await on_a.next(timeout=2)).data["message_id"] == message_id
    # The publishing process does not hear its own notification as a second event.
    assert await on_a.nothing_within(0.3) and await on_b.nothing_within(0.1)


async def test_without_redis_another_process_hears_of_it_through_the_table_poll(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    a, b = await _two_processes(_events_settings(settings, poll_interval_s=0.2), db, aiohttp_client)
    on_b = await b.open()
    message_id = await a.webhook()
    assert (await on_b.next(timeout=3)).data["message_id"] == message_id


async def test_a_change_made_outside_the_gateway_reaches_the_stream(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """The CLI and workers publish nothing; the poll finds their events."""
    users, tokens = _people(db)
    client = await aiohttp_client(create_app(_events_settings(settings, poll_interval_s=0.2)))
    stream = await World(client, db, users, tokens).open()
    with db.write.begin() as conn:
        sent = insert_outbound_sms(conn, users["ada"], E164(FRIEND), "from a script")
    got = await stream.next(timeout=3)
    assert (got.event, got.data["message_id"]) == (events.MESSAGE_CREATED, sent.message_id)


async def test_live_updates_start_once_a_database_that_was_down_at_start_is_back(
    pg_url: str, tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """A gateway started during an outage (its webhooks spool) must not lose the table
    poll for good: once the database answers, changes made elsewhere reach streams."""
    direct = open_database(make_settings(tmp_path, pg_url).database)
    upgrade(direct)
    users, tokens = _people(direct)
    try:
        with TcpProxy("127.0.0.1", 5432) as proxy:
            proxied = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
            settings = _events_settings(make_settings(tmp_path, proxied), poll_interval_s=0.2)
            proxy.cut()
            client = await aiohttp_client(create_app(settings, worker=False, migrate=False))
            await asyncio.sleep(0.6)  # several polls fail meanwhile
            proxy.restore()
            stream = await World(client, direct, users, tokens).open()
            with direct.write.begin() as conn:
                sent = insert_outbound_sms(conn, users["ada"], E164(FRIEND), "after the outage")
            got = await stream.next(timeout=5)
            assert got.data["message_id"] == sent.message_id
            await client.close()
    finally:
        direct.dispose()
