"""Keywords and commands over signed Twilio webhooks: STOP/START/HELP from a
counterpart, TRUST/BLOCK/LIST/HELP from the user's own verified mobile."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from inbox.db import Database
from inbox.models import sms_opt_outs_t
from inbox.suspension import set_suspended
from optin import trust
from tests.conftest import twilio_form
from tests.integration.helpers import make_user, message_rows, post_signed, trust_sender

USER_PHONE = "+442079460958"  # the user's own verified mobile
USER_NUMBER = "+14155550199"  # their OptMsg number
SERVICE_NUMBER = "+14155550150"
FRIEND = "+14155550100"
STRANGER = "+14155550111"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

Client = TestClient[Any, Any]


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone=USER_PHONE, sms_number=USER_NUMBER)


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    user_id: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    twilio = settings.bridges.twilio.model_copy(update={"service_number": SERVICE_NUMBER})
    bridges = settings.bridges.model_copy(update={"twilio": twilio})
    return await aiohttp_client(create_app(settings.model_copy(update={"bridges": bridges})))


def opted_out(db: Database) -> set[tuple[str, str]]:
    with db.read.connect() as conn:
        return {(r.user_id, r.address) for r in conn.execute(sa.select(sms_opt_outs_t))}


async def text(
    client: Client, body: str, *, sender: str, to: str = USER_NUMBER, **extra: str
) -> str:
    resp = await post_signed(client, twilio_form(sender=sender, to=to, body=body, **extra))
    assert resp.status == 200 and resp.content_type == "text/xml"
    return str(await resp.text())


# --- counterpart keywords -----------------------------------------------------------


async def test_stop_records_the_opt_out_and_start_lifts_it(
    client: Client, db: Database, user_id: str
) -> None:
    assert await text(client, "STOP", sender=STRANGER) == EMPTY_TWIML
    assert opted_out(db) == {(user_id, STRANGER)}
    await text(client, "start", sender=STRANGER)
    assert opted_out(db) == set()


async def test_stop_is_still_stored_as_a_message(client: Client, db: Database) -> None:
    await text(client, "Stop", sender=STRANGER)
    assert [r.text for r in message_rows(db)] == ["Stop"]


async def test_stop_from_a_blocked_number_is_recorded_too(
    client: Client, db: Database, user_id: str
) -> None:
    trust.add(db, user_id, STRANGER, trust.TrustVerdict.BLOCKED)  # type: ignore[arg-type]
    await text(client, "STOP", sender=STRANGER)
    assert opted_out(db) == {(user_id, STRANGER)} and message_rows(db) == []


async def test_a_retried_stop_does_not_undo_a_later_start(client: Client, db: Database) -> None:
    stop = twilio_form(sender=STRANGER, body="STOP")
    await post_signed(client, stop)
    await text(client, "START", sender=STRANGER)
    await post_signed(client, stop)  # Twilio retries the old STOP after a timeout
    assert opted_out(db) == set()


async def test_twilio_opt_out_type_records_the_opt_out(
    client: Client, db: Database, user_id: str
) -> None:
    await text(client, "arrêtez", sender=STRANGER, OptOutType="STOP")
    assert opted_out(db) == {(user_id, STRANGER)}


async def test_a_sentence_with_stop_in_it_is_not_an_opt_out(client: Client, db: Database) -> None:
    await text(client, "stop by later?", sender=STRANGER)
    assert opted_out(db) == set()


async def test_help_from_a_counterpart_gets_the_configured_reply(
    client: Client, settings: Settings
) -> None:
    reply = await text(client, "HELP", sender=STRANGER)
    assert "<Message>OptMsg: this number delivers messages" in reply


# --- the user's commands ----------------------------------------------------------------


async def test_trust_command_from_the_users_mobile_trusts_the_number(
    client: Client, db: Database, user_id: str
) -> None:
    reply = await text(client, "TRUST (415) 555-0100", sender=USER_PHONE)
    assert "Trusted" in reply
    entry = trust.get(db, user_id, FRIEND)
    assert (entry.verdict, entry.source) == (trust.TrustVerdict.TRUSTED, "sms_command")
    assert message_rows(db) == []  # a command is answered, never stored
    await text(client, "hello", sender=FRIEND)
    assert [r.folder for r in message_rows(db)] == ["inbox"]


async def test_block_command_blocks_the_number(client: Client, db: Database, user_id: str) -> None:
    await text(client, "block +1 415 555 0111", sender=USER_PHONE)
    assert trust.get(db, user_id, STRANGER).verdict is trust.TrustVerdict.BLOCKED


async def test_commands_also_work_through_the_service_number(
    client: Client, db: Database, user_id: str
) -> None:
    await text(client, "TRUST +14155550100", sender=USER_PHONE, to=SERVICE_NUMBER)
    assert trust.get(db, user_id, FRIEND).source == "sms_command"


async def test_list_command_lists_trusted_and_blocked(
    client: Client, db: Database, user_id: str
) -> None:
    trust_sender(db, user_id, FRIEND)
    trust.add(db, user_id, STRANGER, trust.TrustVerdict.BLOCKED)  # type: ignore[arg-type]
    reply = await text(client, "LIST", sender=USER_PHONE)
    assert "Trusted: +1 415-555-0100" in reply and "Blocked: +1 415-555-0111" in reply


async def test_help_from_the_user_lists_the_commands(client: Client) -> None:
    assert "TRUST &lt;number or email&gt;" in await text(client, "help", sender=USER_PHONE)


async def test_an_unreadable_number_is_answered_with_the_reason_and_nothing_added(
    client: Client, db: Database, user_id: str
) -> None:
    reply = await text(client, "TRUST 12", sender=USER_PHONE)
    assert "Could not read" in reply and "too few digits" in reply
    assert trust.list_entries(db, user_id) == []


async def test_trust_text_from_anyone_else_is_an_ordinary_message(
    client: Client, db: Database, user_id: str
) -> None:
    assert await text(client, "TRUST +14155550111", sender=STRANGER) == EMPTY_TWIML
    assert trust.list_entries(db, user_id) == []
    assert [r.text for r in message_rows(db)] == ["TRUST +14155550111"]


async def test_the_users_mobile_cannot_command_through_another_users_number(
    client: Client, db: Database, user_id: str
) -> None:
    make_user(db, phone="+442079460959", sms_number="+14155550198", first="Bob")
    await text(client, "TRUST +14155550111", sender=USER_PHONE, to="+14155550198")
    assert trust.list_entries(db, user_id) == []


@pytest.mark.parametrize("command", ["TRUST +14155550100", "BLOCK +14155550111", "LIST", "HELP"])
async def test_a_suspended_account_cannot_be_commanded_by_sms(
    client: Client, db: Database, user_id: str, command: str
) -> None:
    trust_sender(db, user_id, STRANGER)
    set_suspended(db, user_id, True)
    reply = await text(client, command, sender=USER_PHONE)
    assert "suspended" in reply and "Trusted" not in reply
    entries = trust.list_entries(db, user_id)
    assert [(e.address, e.verdict) for e in entries] == [(STRANGER, trust.TrustVerdict.TRUSTED)]
    assert message_rows(db) == []  # answered, not stored


async def test_an_unsuspended_account_takes_commands_again(
    client: Client, db: Database, user_id: str
) -> None:
    set_suspended(db, user_id, True)
    set_suspended(db, user_id, False)
    assert "Trusted" in await text(client, "TRUST +14155550100", sender=USER_PHONE)
    assert trust.get(db, user_id, FRIEND).verdict is trust.TrustVerdict.TRUSTED
