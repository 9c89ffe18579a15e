"""Helpers for integration tests: accounts in the store, signed webhook posts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from gateway.pipeline import IngestPipeline
from inbox import store
from inbox.addresses import E164, EmailAddress
from inbox.db import Database
from inbox.message import Channel, Inbound, IngestResult
from inbox.models import messages_t
from optin import trust
from optin.decide import Policy
from tests.conftest import PUBLIC_URL, twilio_signature

SMS_PATH = "/bridges/twilio/sms"


def make_user(
    db: Database, *, phone: str, sms_number: str, first: str = "Ada", email: str | None = None
) -> str:
    user = store.create_user(
        db,
        first_name=first,
        last_name="Tester",
        date_of_birth=date(1990, 1, 1),
        phone=E164(phone),
        sms_number=E164(sms_number),
        email_address=None if email is None else EmailAddress(email),
    )
    return user.id


def trust_sender(db: Database, user_id: str, address: str) -> None:
    trust.add(db, user_id, E164(address))


def block_sender(db: Database, user_id: str, address: str) -> None:
    trust.add(db, user_id, E164(address), trust.TrustVerdict.BLOCKED)


async def post_signed(
    client: TestClient[Any, Any],
    form: dict[str, str] | list[tuple[str, str]],
    *,
    path: str = SMS_PATH,
    signed_url: str | None = None,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
    algorithm: str | None = None,
) -> Any:
    """POST ``form`` signed exactly as Twilio signs it (by the twilio package)."""
    url = signed_url if signed_url is not None else PUBLIC_URL + path
    as_dict = dict(form)
    kwargs: dict[str, Any] = {} if secret is None else {"secret": secret}
    signature = twilio_signature(url, as_dict, algorithm=algorithm, **kwargs)
    all_headers = {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    all_headers.update(headers or {})
    return await client.post(path, data=urlencode(list(as_dict.items())), headers=all_headers)


def message_rows(db: Database) -> list[Any]:
    with db.read.connect() as conn:
        return list(conn.execute(sa.select(messages_t).order_by(messages_t.c.id)))


USER_NUMBER = "+14155550199"


def inbound(
    sid: str, sender: str = "+14155550111", to: str = "+14155550199", text: str = "hi"
) -> Inbound:
    return Inbound(
        bridge="twilio",
        external_id=sid,
        channel=Channel.SMS,
        sender=E164(sender),
        recipient=E164(to),
        text=text,
        received_at=datetime.now(UTC),
    )


def run_batch(db: Database, batch: list[Inbound]) -> list[IngestResult]:
    pipeline = IngestPipeline(Policy())
    with db.write.begin() as conn:
        return pipeline.process(conn, batch)
