"""Conversations on SQLite and PostgreSQL: SMS grouped by counterpart both ways,
email grouped by thread (through the real SMTP path), paging, isolation, and the
query plan of a conversation's messages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from gateway.openapi import openapi_document
from gateway.outbound import create_sms
from inbox import conversations, store
from inbox.addresses import E164
from inbox.conversations import email_key, list_conversation_messages, list_conversations
from inbox.db import Database
from inbox.models import messages_t
from tests.integration import test_email_ingest
from tests.integration.helpers import inbound, make_user, run_batch, trust_sender
from tests.integration.openapi_check import checked_call
from tests.integration.test_email_ingest import Mail, message, signed

# The email tests' fixture: a user with an address, the app with its SMTP server.
mail = test_email_ingest.mail

USER_NUMBER = "+14155550199"
FRIEND = "+14155550100"
OTHER = "+14155550111"
STRANGER = "+14155550122"
Client = TestClient[Any, Any]


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=USER_NUMBER)


@pytest.fixture
def eve_id(db: Database) -> str:
    return make_user(db, phone="+442079460959", sms_number="+14155550198", first="Eve")


def receive(db: Database, sender: str, text: str = "hi", to: str = USER_NUMBER) -> str:
    (result,) = run_batch(db, [inbound("SM" + text + sender, sender=sender, to=to, text=text)])
    assert result.message_id is not None
    return result.message_id


def send(settings: Settings, db: Database, user_id: str, to: str, text: str = "yo") -> str:
    return create_sms(settings, db, user_id, E164(to), text).message_id


def test_sms_both_ways_is_one_conversation_keyed_by_the_counterpart(
    settings: Settings, db: Database, user_id: str
) -> None:
    trust_sender(db, user_id, FRIEND)
    receive(db, FRIEND, "first")
    sent = send(settings, db, user_id, FRIEND, "answer")
    (conv,) = list_conversations(db, user_id).items
    assert (conv["key"], conv["kind"], conv["counterpart"]) == (FRIEND, "sms", FRIEND)
    assert (conv["messages"], conv["unread"], conv["subject"]) == (2, 1, None)
    assert conv["latest"]["id"] == sent and conv["latest"]["direction"] == "outbound"
    assert conv["latest"]["preview"] == "answer"
    texts = [m["text"] for m in list_conversation_messages(db, user_id, FRIEND).items]
    assert texts == ["answer", "first"]


def test_the_most_recently_active_conversation_comes_first(
    settings: Settings, db: Database, user_id: str
) -> None:
    for number in (FRIEND, OTHER):
        trust_sender(db, user_id, number)
    receive(db, FRIEND, "old")
    receive(db, OTHER, "newer")
    send(settings, db, user_id, FRIEND, "newest")
    keys = [c["key"] for c in list_conversations(db, user_id).items]
    assert keys == [FRIEND, OTHER]


def test_held_messages_are_in_no_conversation(db: Database, user_id: str) -> None:
    receive(db, STRANGER, "who is this")  # not trusted: quarantined
    assert list_conversations(db, user_id).items == []
    assert list_conversation_messages(db, user_id, STRANGER).items == []


def test_conversations_page_without_gaps_or_repeats(
    settings: Settings, db: Database, user_id: str
) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(200, 205)]
    for number in numbers:
        send(settings, db, user_id, number)
    seen: list[str] = []
    cursor = None
    while True:
        page = list_conversations(db, user_id, limit=2, cursor=cursor)
        seen += [c["key"] for c in page.items]
        if page.next is None:
            break
        cursor = page.next
    assert seen == list(reversed(numbers))


def test_a_conversations_messages_page_newest_first(
    settings: Settings, db: Database, user_id: str
) -> None:
    for i in range(5):
        send(settings, db, user_id, FRIEND, f"m{i}")
    first = list_conversation_messages(db, user_id, FRIEND, limit=3)
    assert [m["text"] for m in first.items] == ["m4", "m3", "m2"]
    assert first.next is not None
    rest = list_conversation_messages(db, user_id, FRIEND, limit=3, cursor=first.next)
    assert [m["text"] for m in rest.items] == ["m1", "m0"] and rest.next is None


def test_a_cursor_of_one_conversation_does_not_page_another(
    settings: Settings, db: Database, user_id: str
) -> None:
    for i in range(3):
        send(settings, db, user_id, FRIEND, f"m{i}")
    cursor = list_conversation_messages(db, user_id, FRIEND, limit=1).next
    assert cursor is not None
    with pytest.raises(store.InvalidCursor):
        list_conversation_messages(db, user_id, OTHER, cursor=cursor)


def test_another_users_conversation_is_empty_for_the_user(
    settings: Settings, db: Database, user_id: str, eve_id: str
) -> None:
    send(settings, db, eve_id, FRIEND, "eve's secret")
    assert list_conversations(db, user_id).items == []
    assert list_conversation_messages(db, user_id, FRIEND).items == []
    assert len(list_conversation_messages(db, eve_id, FRIEND).items) == 1


def test_an_over_long_key_is_an_empty_list(db: Database, user_id: str) -> None:
    assert list_conversation_messages(db, user_id, "x" * 10_000).items == []


def _plan(db: Database, stmt: sa.Select[Any]) -> str:
    with db.read.connect() as conn:
        sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
            return "\n".join(str(r[-1]) for r in rows)
        # The tables are tiny: without this PostgreSQL rightly prefers a sequential
        # scan, which says nothing about the index being usable.
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql))


def test_a_conversations_messages_come_from_the_conversation_index(
    settings: Settings, db: Database, user_id: str
) -> None:
    for i in range(50):
        send(settings, db, user_id, f"+1415555{i % 10 + 300:04d}")
    with db.write.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    plan = _plan(db, conversations.messages_statement(user_id, FRIEND, 51, "msg_ffff"))
    assert "ix_messages_user_conversation_id" in plan, plan
    # Newest first straight from the index: no sort step.
    assert "ORDER BY" not in plan.upper() and "Sort" not in plan, plan


def test_the_sms_webhook_path_stores_the_counterpart_as_conversation(
    db: Database, user_id: str
) -> None:
    trust_sender(db, user_id, FRIEND)
    message_id = receive(db, FRIEND)
    with db.read.connect() as conn:
        stored = conn.execute(
            sa.select(messages_t.c.conversation).where(messages_t.c.id == message_id)
        ).scalar()
    assert stored == FRIEND


# --- email threads, through SMTP and the client API -----------------------------------


def threaded(message_id: str, *, refs: str | None = None, reply_to: str | None = None) -> bytes:
    raw = message(message_id=message_id)
    extra = ""
    if reply_to is not None:
        extra += f"In-Reply-To: {reply_to}\r\n"
    if refs is not None:
        extra += f"References: {refs}\r\n"
    return extra.encode() + raw


async def conversations_of(mail: Mail) -> list[dict[str, Any]]:
    reply = await checked_call(
        mail.client, openapi_document(), "GET", "/conversations", token=mail.token
    )
    assert reply.status == 200
    return list(reply.body["items"])


async def test_an_email_reference_chain_is_one_conversation(mail: Mail) -> None:
    await mail.send_async(signed(threaded("<root@bank.example>"), mail.keys))
    await mail.send_async(
        signed(threaded("<r1@bank.example>", reply_to="<root@bank.example>"), mail.keys)
    )
    await mail.send_async(
        signed(
            threaded(
                "<r2@bank.example>",
                reply_to="<r1@bank.example>",
                refs="<ROOT@bank.example> <r1@bank.example>",
            ),
            mail.keys,
        )
    )
    await mail.wait_for(3)
    (conv,) = await conversations_of(mail)
    assert conv["key"] == email_key("root@bank.example")
    assert (conv["kind"], conv["messages"], conv["counterpart"]) == (
        "email",
        3,
        "alerts@bank.example",
    )
    assert conv["subject"] == "Statement"
    reply = await checked_call(
        mail.client,
        openapi_document(),
        "GET",
        f"/conversations/{conv['key']}/messages?limit=2",
        token=mail.token,
    )
    assert reply.status == 200 and len(reply.body["items"]) == 2 and reply.body["next"]


async def test_emails_without_message_id_are_each_their_own_conversation(mail: Mail) -> None:
    for body in ("one", "two"):
        raw = message(body=body).replace(b"Message-ID: <1@bank.example>\r\n", b"")
        await mail.send_async(signed(raw, mail.keys))
    await mail.wait_for(2)
    found = await conversations_of(mail)
    assert len(found) == 2 and all(c["messages"] == 1 for c in found)


async def test_a_hostile_references_header_still_threads_and_stays_bounded(
    mail: Mail,
) -> None:
    refs = "<" + "A" * 5000 + "@x> " + " ".join(f"<{i}@junk>" for i in range(500))
    await mail.send_async(signed(threaded("<h1@bank.example>", refs=refs), mail.keys))
    await mail.wait_for(1)
    (conv,) = await conversations_of(mail)
    assert conv["key"].startswith("email:") and len(conv["key"]) == 70


# --- the client API over SMS ---------------------------------------------------------


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    user_id: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    return await aiohttp_client(create_app(settings))


async def test_conversation_api_answers_match_the_document(
    client: Client, settings: Settings, db: Database, user_id: str, eve_id: str
) -> None:
    doc = openapi_document()
    token = store.create_token(db, user_id)[1]
    eve = store.create_token(db, eve_id)[1]
    await asyncio.to_thread(send, settings, db, user_id, FRIEND, "hello")
    listed = await checked_call(client, doc, "GET", "/conversations", token=token)
    assert [c["key"] for c in listed.body["items"]] == [FRIEND]
    path = f"/conversations/{FRIEND}/messages"
    mine = await checked_call(client, doc, "GET", path, token=token)
    assert [m["text"] for m in mine.body["items"]] == ["hello"]
    theirs = await checked_call(client, doc, "GET", path, token=eve)
    assert theirs.body == {"items": [], "next": None}
    bad = await checked_call(client, doc, "GET", path + "?cursor=garbage", token=token)
    assert bad.status == 400
    assert (await checked_call(client, doc, "GET", "/conversations")).status == 401
