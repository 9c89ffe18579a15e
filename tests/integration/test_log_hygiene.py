"""The logs of a whole run carry no message bodies, sign-in codes or secrets.

One gateway with JSON logs at DEBUG: sign-up by an SMS code (sent through the fake
Twilio), inbound SMS from a trusted and an unknown sender, an email over SMTP, an
outbound SMS with its status callback, reads through the API, a bad signature and
a bad token. Everything any logger wrote is then searched for each secret value.
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config import LogSettings, Settings
from gateway.app import create_app
from gateway.keys import DATABASE, RUNTIME
from gateway.logs import configure_logging
from inbox import store
from inbox.addresses import E164, EmailAddress
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SHARED_KEY_ID,
    SHARED_KEY_SECRET,
    make_settings,
)
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import post_signed

Client = TestClient[Any, Any]
SERVICE_NUMBER = "+14155550000"
ADA_MOBILE = "+14155550123"
ADA_SMS = "+14155550199"
ADA_EMAIL = "ada@optmsg.test"
TRUSTED_BODY = "trusted-body-7f1e2d secret meeting at noon"
UNKNOWN_BODY = "unknown-body-93ab41 your parcel is held"
EMAIL_BODY = "email-body-c0ffee the quarterly numbers"
OUTBOUND_BODY = "outbound-body-5150 see you there"
LIMIT_KEY = "rate-limit-key-" + "4d3c2b1a" * 4


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LogSettings(format="json", level="debug"))
    handler = Captured()
    # The same formatter as the configured stderr handler: what an operator's
    # log shipper would receive.
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    yield handler
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, fake: FakeTwilio) -> Settings:
    return make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'logs.db'}",
        smtp={"enabled": True, "hostname": "mx.optmsg.test"},
        bridges={
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "webhook_shared_keys": {SHARED_KEY_ID: SHARED_KEY_SECRET},
                "api_base_url": fake.base_url,
                "service_number": SERVICE_NUMBER,
            }
        },
        auth={"code_sender": "twilio", "limit_key": LIMIT_KEY},
        optin={"require_email_auth": False},
    )


async def _sign_up(client: Client, fake: FakeTwilio) -> tuple[str, str]:
    form = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "date_of_birth": "1990-12-10",
        "phone": ADA_MOBILE,
    }
    started = await client.post("/api/v1/auth/signup", json=form)
    assert started.status == 202
    found = re.search(r"\b(\d{6})\b", fake.created[-1].body)
    assert found is not None
    code = found.group(1)
    wrong = "000000" if code != "000000" else "111111"
    verification = (await started.json())["verification_id"]
    await client.post("/api/v1/auth/verify", json={"verification_id": verification, "code": wrong})
    verified = await client.post(
        "/api/v1/auth/verify",
        json={"verification_id": verification, "code": code, "device": "Pixel"},
    )
    assert verified.status == 201
    return code, str((await verified.json())["token"])


def _sms(sid: str, sender: str, body: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": ADA_SMS,
        "Body": body,
        "NumMedia": "0",
    }


def _send_email(port: int) -> None:
    message = EmailMessage()
    message["From"] = "Bob <bob@example.org>"
    message["To"] = ADA_EMAIL
    message["Subject"] = "numbers"
    message["Message-ID"] = "<log-hygiene-1@example.org>"
    message.set_content(EMAIL_BODY)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


async def test_a_full_run_logs_no_bodies_codes_or_secrets(
    settings: Settings,
    fake: FakeTwilio,
    captured: Captured,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await aiohttp_client(create_app(settings))
    code, token = await _sign_up(client, fake)
    auth = {"Authorization": f"Bearer {token}"}
    account = await (await client.get("/api/v1/account", headers=auth)).json()
    user_id = account["id"]

    # The operator gives the account its OptMsg number and address (what
    # `optmsg users add-address` does).
    db = client.app[DATABASE]
    store.add_address(db, user_id, E164(ADA_SMS), "sms")
    store.add_address(db, user_id, EmailAddress(ADA_EMAIL), "email")

    await client.post("/api/v1/trusted-senders", json={"address": "+14155550111"}, headers=auth)
    assert (
        await post_signed(client, _sms("SM" + "1" * 32, "+14155550111", TRUSTED_BODY))
    ).status == 200
    assert (
        await post_signed(client, _sms("SM" + "2" * 32, "+14155550222", UNKNOWN_BODY))
    ).status == 200
    forged = await client.post(
        "/bridges/twilio/sms",
        data=_sms("SM" + "3" * 32, "+14155550333", "forged"),
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    )
    assert forged.status == 403
    await asyncio.to_thread(_send_email, client.app[RUNTIME].smtp_port)

    sent = await client.post(
        "/api/v1/messages", json={"to": "+14155550111", "text": OUTBOUND_BODY}, headers=auth
    )
    assert sent.status == 202
    for _ in range(100):
        if fake.created and fake.created[-1].body == OUTBOUND_BODY:
            break
        await asyncio.sleep(0.05)
    await client.get("/api/v1/messages?folder=inbox", headers=auth)
    subjects: list[str | None] = []
    for _ in range(100):  # email is parsed just after its 250
        held = await (await client.get("/api/v1/messages?folder=quarantine", headers=auth)).json()
        subjects = [m["subject"] for m in held["items"]]
        if "numbers" in subjects:
            break
        await asyncio.sleep(0.05)
    assert "numbers" in subjects, "the email never arrived: the run is incomplete"
    await client.get("/api/v1/messages", headers={"Authorization": "Bearer optmsg_wrong"})

    logs = "\n".join(captured.lines)
    # The run did log (the check would prove nothing otherwise), the refusal included.
    assert "twilio webhook refused" in logs
    for name, value in {
        "an inbound SMS body": TRUSTED_BODY,
        "a held SMS body": UNKNOWN_BODY,
        "an email body": EMAIL_BODY,
        "an outbound SMS body": OUTBOUND_BODY,
        "the sign-in code": code,
        "the bearer token": token,
        "the Twilio auth token": AUTH_TOKEN,
        "the webhook shared key": SHARED_KEY_SECRET,
        "the rate-limit key": LIMIT_KEY,
    }.items():
        assert value not in logs, f"{name} appears in the logs"
