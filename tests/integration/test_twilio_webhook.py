"""Inbound SMS webhook over real HTTP, signed by the twilio package's RequestValidator."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.app import create_app
from inbox import store
from inbox.db import Database
from tests.conftest import PUBLIC_URL, SHARED_KEY_ID, SHARED_KEY_SECRET, twilio_form
from tests.integration.helpers import (
    SMS_PATH,
    block_sender,
    make_user,
    message_rows,
    post_signed,
    trust_sender,
)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
USER_NUMBER = "+14155550199"
TRUSTED = "+14155550100"
STRANGER = "+14155550111"

Client = TestClient[Any, Any]


@pytest.fixture
async def client(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> Client:
    user_id = make_user(db, phone="+442079460958", sms_number=USER_NUMBER)
    trust_sender(db, user_id, TRUSTED)
    return await aiohttp_client(create_app(settings))


async def test_trusted_sender_lands_in_inbox_and_twiml_is_returned(
    client: Client, db: Database
) -> None:
    resp = await post_signed(client, twilio_form(sender=TRUSTED, body="hi"))
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    assert await resp.text() == EMPTY_TWIML
    (row,) = message_rows(db)
    assert (row.folder, row.sender, row.recipient, row.text) == (
        "inbox",
        TRUSTED,
        USER_NUMBER,
        "hi",
    )


async def test_unknown_sender_lands_in_quarantine(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(sender=STRANGER))
    assert resp.status == 200
    (row,) = message_rows(db)
    assert row.folder == "quarantine"
    assert "unknown sender" in row.reason


async def test_blocked_sender_is_dropped_silently(client: Client, db: Database) -> None:
    (user,) = store.list_users(db)
    block_sender(db, user.id, STRANGER)
    resp = await post_signed(client, twilio_form(sender=STRANGER))
    assert resp.status == 200
    assert message_rows(db) == []


async def test_national_format_sender_matches_trusted_entry(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(sender="(415) 555-0100"))
    assert resp.status == 200
    assert message_rows(db)[0].folder == "inbox"


async def test_shared_key_hmac_sha256_signature_is_accepted(client: Client, db: Database) -> None:
    resp = await post_signed(
        client,
        twilio_form(sender=TRUSTED),
        secret=SHARED_KEY_SECRET,
        algorithm="HMAC_SHA256",
        headers={
            "X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_KEY_ID},algorithm=HMAC_SHA256"
        },
    )
    assert resp.status == 200
    assert len(message_rows(db)) == 1


async def test_shared_key_signature_with_unknown_key_id_is_forbidden(
    client: Client, db: Database
) -> None:
    resp = await post_signed(
        client,
        twilio_form(),
        secret=SHARED_KEY_SECRET,
        algorithm="HMAC_SHA256",
        headers={"X-Twilio-Webhooks-Signature-Settings": "key=other,algorithm=HMAC_SHA256"},
    )
    assert resp.status == 403
    assert message_rows(db) == []


async def test_sha256_claimed_but_signed_with_auth_token_is_forbidden(
    client: Client, db: Database
) -> None:
    resp = await post_signed(
        client,
        twilio_form(),
        algorithm="HMAC_SHA256",
        headers={
            "X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_KEY_ID},algorithm=HMAC_SHA256"
        },
    )
    assert resp.status == 403


async def test_unsupported_signature_algorithm_is_forbidden(client: Client) -> None:
    resp = await post_signed(
        client,
        twilio_form(),
        headers={"X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_KEY_ID},algorithm=MD5"},
    )
    assert resp.status == 403
    assert "algorithm" in (await resp.json())["detail"]


@pytest.mark.parametrize(
    "signed_url",
    [PUBLIC_URL + ":443" + SMS_PATH, PUBLIC_URL + SMS_PATH],
    ids=["with-default-port", "without-port"],
)
async def test_signature_over_url_with_or_without_default_port_is_accepted(
    client: Client, db: Database, signed_url: str
) -> None:
    resp = await post_signed(client, twilio_form(), signed_url=signed_url)
    assert resp.status == 200
    assert len(message_rows(db)) == 1


async def test_signature_over_spoofed_host_is_forbidden(client: Client, db: Database) -> None:
    # The Host header is the client's to choose; we check against public_url only.
    resp = await post_signed(
        client,
        twilio_form(),
        signed_url="https://evil.example.com" + SMS_PATH,
        headers={"Host": "evil.example.com"},
    )
    assert resp.status == 403
    assert message_rows(db) == []


async def test_signature_over_other_port_is_forbidden(client: Client) -> None:
    resp = await post_signed(client, twilio_form(), signed_url=PUBLIC_URL + ":8443" + SMS_PATH)
    assert resp.status == 403


async def test_query_string_is_part_of_the_signed_url(client: Client, db: Database) -> None:
    path = SMS_PATH + "?tenant=a%20b"
    resp = await post_signed(client, twilio_form(), path=path)
    assert resp.status == 200
    forged = await post_signed(
        client, twilio_form(), path=SMS_PATH + "?tenant=other", signed_url=PUBLIC_URL + path
    )
    assert forged.status == 403


async def test_forged_signature_is_forbidden_and_nothing_is_stored(
    client: Client, db: Database
) -> None:
    resp = await post_signed(client, twilio_form(), secret="wrong-token-0123456789")
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 403
    assert message_rows(db) == []


async def test_tampered_body_is_forbidden(client: Client, db: Database) -> None:
    form = twilio_form(body="original")
    signed = await post_signed(client, form)
    assert signed.status == 200
    tampered = dict(form, Body="changed", MessageSid="SM" + "f" * 32)
    from tests.conftest import twilio_signature

    sig = twilio_signature(PUBLIC_URL + SMS_PATH, form)
    resp = await client.post(
        SMS_PATH,
        data=urlencode(tampered),
        headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 403
    assert len(message_rows(db)) == 1


async def test_missing_signature_is_forbidden(client: Client, db: Database) -> None:
    resp = await client.post(SMS_PATH, data=twilio_form())
    assert resp.status == 403
    assert "X-Twilio-Signature" in (await resp.json())["detail"]
    assert message_rows(db) == []


async def test_non_base64_signature_is_forbidden(client: Client) -> None:
    resp = await client.post(
        SMS_PATH,
        data=urlencode(twilio_form()),
        headers={"X-Twilio-Signature": "!!!", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 403


async def test_replayed_message_sid_is_acknowledged_and_stored_once(
    client: Client, db: Database
) -> None:
    form = twilio_form(sender=STRANGER)
    first = await post_signed(client, form)
    second = await post_signed(client, form)
    assert (first.status, second.status) == (200, 200)
    assert await second.text() == EMPTY_TWIML
    assert len(message_rows(db)) == 1


@pytest.mark.parametrize("missing", ["From", "To", "MessageSid"])
async def test_missing_required_parameter_is_a_bad_request(
    client: Client, db: Database, missing: str
) -> None:
    form = twilio_form()
    del form[missing]
    if missing == "MessageSid":
        del form["SmsMessageSid"]
    resp = await post_signed(client, form)
    assert resp.status == 400
    assert missing in (await resp.json())["detail"]
    assert message_rows(db) == []


async def test_unknown_recipient_is_acknowledged_counted_and_not_stored(
    client: Client, db: Database
) -> None:
    resp = await post_signed(client, twilio_form(to="+14155550777"))
    assert resp.status == 200
    assert await resp.text() == EMPTY_TWIML
    assert message_rows(db) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'optmsg_messages_total{bridge="twilio",outcome="unroutable"} 1.0' in metrics


async def test_recipient_that_is_not_a_number_is_unroutable(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(to="whatsapp-bot"))
    assert resp.status == 200
    assert message_rows(db) == []


async def test_unparseable_sender_is_a_bad_request(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(sender="<script>alert(1)</script>"))
    assert resp.status == 400
    assert message_rows(db) == []


async def test_1600_character_emoji_body_is_stored_intact(client: Client, db: Database) -> None:
    body = ("Grüße 👋🏽 " * 200)[:1600]
    resp = await post_signed(client, twilio_form(sender=TRUSTED, body=body))
    assert resp.status == 200
    assert message_rows(db)[0].text == body


async def test_unknown_parameters_are_kept_not_refused(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(NewTwilioField="future", AddOns='{"status":"ok"}'))
    assert resp.status == 200
    meta = json.loads(message_rows(db)[0].provider_meta)
    assert meta["NewTwilioField"] == "future"
    assert meta["AddOns"] == '{"status":"ok"}'


async def test_wrong_content_type_is_a_bad_request(client: Client, db: Database) -> None:
    resp = await client.post(
        SMS_PATH,
        data=b'{"From": "x"}',
        headers={"Content-Type": "application/json", "X-Twilio-Signature": "AAAA"},
    )
    assert resp.status == 400
    assert message_rows(db) == []


async def test_non_utf8_body_is_a_bad_request(client: Client) -> None:
    resp = await client.post(
        SMS_PATH,
        data=b"Body=\xff\xfe&From=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
    )
    assert resp.status == 400


async def test_percent_encoded_invalid_utf8_is_a_bad_request(client: Client) -> None:
    resp = await client.post(
        SMS_PATH,
        data=b"Body=%ff%fe&From=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
    )
    assert resp.status == 400


async def test_too_many_fields_is_a_bad_request(client: Client) -> None:
    form = [(f"F{i}", "x") for i in range(300)]
    resp = await post_signed(client, form)
    assert resp.status == 400
    assert "fields" in (await resp.json())["detail"]


async def test_oversized_body_is_refused_with_413(client: Client, db: Database) -> None:
    resp = await post_signed(client, twilio_form(body="x" * 70_000))
    assert resp.status == 413
    assert message_rows(db) == []


async def test_oversized_chunked_body_is_refused_without_reading_it_all(
    client: Client, db: Database
) -> None:
    sent = 0

    async def body() -> Any:
        nonlocal sent
        for _ in range(200):  # 6.4 MB offered, far above the 64 KB webhook limit
            sent += 32 * 1024
            yield b"x" * (32 * 1024)

    resp = await client.post(
        SMS_PATH,
        data=body(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 413
    assert sent < 6_400_000
    assert message_rows(db) == []


async def test_body_declared_over_the_limit_is_refused_before_reading(client: Client) -> None:
    resp = await client.post(
        SMS_PATH,
        data=io.BytesIO(b"x" * 5_000_000),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 413


async def test_num_media_out_of_range_is_a_bad_request(client: Client) -> None:
    resp = await post_signed(client, twilio_form(NumMedia="11"))
    assert resp.status == 400


async def test_mms_media_become_pending_attachments(client: Client, db: Database) -> None:
    form = twilio_form(
        sender=TRUSTED,
        NumMedia="2",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME2",
        MediaContentType1="image/png",
    )
    resp = await post_signed(client, form)
    assert resp.status == 200
    (row,) = message_rows(db)
    assert row.channel == "mms"
    import sqlalchemy as sa

    from inbox.models import attachments_t

    with db.read.connect() as conn:
        atts = list(conn.execute(sa.select(attachments_t).order_by(attachments_t.c.content_type)))
    assert [(a.content_type, a.status) for a in atts] == [
        ("image/jpeg", "pending"),
        ("image/png", "pending"),
    ]


async def test_server_keeps_serving_after_hostile_input(client: Client, db: Database) -> None:
    for body in (b"", b"&&&==", b"%", b"a=%zz", b"\x00" * 100):
        resp = await client.post(
            SMS_PATH,
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "AA==",
            },
        )
        assert resp.status in (400, 403)
    ok = await post_signed(client, twilio_form())
    assert ok.status == 200


async def test_get_on_webhook_is_method_not_allowed(client: Client) -> None:
    resp = await client.get(SMS_PATH)
    assert resp.status == 405
    assert resp.content_type == "application/problem+json"


async def test_signature_over_url_with_connection_override_fragment_needs_config(
    client: Client, settings: Settings, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    fragment = "rc=5&rp=ct,rt,5xx"
    signed_url = PUBLIC_URL + SMS_PATH + "#" + fragment
    refused = await post_signed(client, twilio_form(), signed_url=signed_url)
    assert refused.status == 403
    twilio = settings.bridges.twilio.model_copy(update={"webhook_url_fragment": fragment})
    bridges = settings.bridges.model_copy(update={"twilio": twilio})
    configured = await aiohttp_client(create_app(settings.model_copy(update={"bridges": bridges})))
    accepted = await post_signed(configured, twilio_form(), signed_url=signed_url)
    assert accepted.status == 200


async def test_fifty_concurrent_posts_of_one_sid_store_one_row(
    client: Client, db: Database
) -> None:
    import asyncio

    form = twilio_form(sender=STRANGER)
    responses = await asyncio.gather(*(post_signed(client, form) for _ in range(50)))
    assert [r.status for r in responses] == [200] * 50
    assert len(message_rows(db)) == 1


async def test_store_failure_is_acknowledged_from_the_spool(client: Client, db: Database) -> None:
    # Twilio drops a webhook answered 5xx: the message goes to the local spool instead
    # (tests/integration/test_webhook_spool.py has the outage and the 503 of a full one).
    import sqlalchemy as sa

    with db.write.begin() as conn:
        conn.execute(sa.text("DROP TABLE attachments"))
        conn.execute(sa.text("DROP TABLE messages"))
    resp = await post_signed(client, twilio_form(sender=TRUSTED))
    assert resp.status == 200
    assert await resp.text() == EMPTY_TWIML
    metrics = await (await client.get("/metrics")).text()
    assert 'optmsg_spooled_total{bridge="twilio",kind="sms"} 1.0' in metrics
    assert (await client.get("/healthz")).status == 200
