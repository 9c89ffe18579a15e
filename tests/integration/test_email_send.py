"""Sending email drafts: the client API, the send job (in-process dramatiq), smtplib
against a real aiosmtpd relay on 127.0.0.1 (tests/fakes/smtp_sink.py)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from bridges.smtp_relay import SmtpRelay
from config import Settings
from gateway.app import create_app
from gateway.drafts_send import deliver_email, send_draft
from gateway.openapi import openapi_document
from gateway.outbound import SendRetry
from inbox import drafts, store
from inbox.addresses import E164, EmailAddress
from inbox.blobs import DirectoryBlobStore
from inbox.conversations import email_key
from inbox.db import Database
from inbox.models import trust_entries_t
from inbox.outbound import SendRefused
from inbox.suspension import set_suspended
from tests.conftest import missing_service
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.openapi_check import checked_call

ADA = "ada@optmsg.example"
BOB = "bob@example.org"
CAROL = "carol@example.net"
Client = TestClient[Any, Any]
DOC = openapi_document()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = await SmtpSink().start()
    yield server
    await server.stop()


def relay_settings(settings: Settings, port: int, **email_out: Any) -> Settings:
    out = settings.email_out.model_copy(
        update={"enabled": True, "relay": f"127.0.0.1:{port}", "starttls": False, **email_out}
    )
    return settings.model_copy(update={"email_out": out})


@pytest.fixture
def user_id(db: Database) -> str:
    return store.create_user(
        db,
        first_name="Ada",
        last_name="L",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"),
        sms_number=E164("+14155550199"),
        email_address=EmailAddress(ADA),
    ).id


@pytest.fixture
def token(db: Database, user_id: str) -> str:
    return store.create_token(db, user_id)[1]


@pytest.fixture
async def client(
    settings: Settings,
    db: Database,
    user_id: str,
    sink: SmtpSink,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    return await aiohttp_client(create_app(relay_settings(settings, sink.port)))


async def call(client: Client, method: str, path: str, token: str, **kwargs: Any) -> Any:
    return await checked_call(client, DOC, method, path, token=token, **kwargs)


async def email_draft(client: Client, token: str, **fields: Any) -> dict[str, Any]:
    body = {"channel": "email", "to": [BOB], "subject": "Hello", "text": "Hi Bob"} | fields
    reply = await call(client, "POST", "/drafts", token, json=body)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def until_status(
    client: Client, token: str, message_id: str, wanted: str, timeout: float = 15.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = (await call(client, "GET", f"/messages/{message_id}", token)).body
        if found["status"] == wanted or asyncio.get_running_loop().time() > deadline:
            return dict(found)
        await asyncio.sleep(0.05)


async def test_a_sent_draft_reaches_the_relay_with_headers_body_and_attachment(
    client: Client, token: str, sink: SmtpSink
) -> None:
    draft = await email_draft(client, token, to=[BOB, CAROL], subject="Café plans")
    pdf = b"%PDF-1.4 not really a pdf\x00\xff"
    attached = await call(
        client,
        "POST",
        f"/drafts/{draft['id']}/attachments?filename=plan.pdf",
        token,
        data=pdf,
        headers={"Content-Type": "application/pdf"},
    )
    assert attached.status == 201
    sent = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert sent.status == 202
    assert (sent.body["folder"], sent.body["status"], sent.body["sender"]) == (
        "sent",
        "pending",
        ADA,
    )
    assert sent.headers["Location"] == f"/api/v1/messages/{draft['id']}"
    assert (await until_status(client, token, draft["id"], "sent"))["status"] == "sent"
    (got,) = sink.received
    assert (got.mail_from, got.rcpt_tos) == (ADA, (BOB, CAROL))
    msg = got.parsed()
    assert msg["From"] == ADA and msg["To"] == f"{BOB}, {CAROL}"
    assert msg["Subject"] == "Café plans"
    assert msg["Message-ID"] == f"<{draft['id']}@optmsg.example>"
    assert msg["Date"] is not None
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hi Bob"
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "plan.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf


async def test_a_sent_email_starts_a_conversation_its_replies_join(
    client: Client, token: str, sink: SmtpSink
) -> None:
    draft = await email_draft(client, token)
    await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    listed = await call(client, "GET", "/conversations", token)
    (conv,) = listed.body["items"]
    # A reply's References start with our Message-ID: the same key.
    assert conv["key"] == email_key(f"<{draft['id']}@optmsg.example>")
    assert (conv["kind"], conv["counterpart"], conv["subject"]) == ("email", BOB, "Hello")


async def test_a_550_fails_the_message_with_the_relays_reply(
    client: Client, token: str, sink: SmtpSink
) -> None:
    sink.answer_next("550 5.7.1 relaying denied for you")
    draft = await email_draft(client, token)
    await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    found = await until_status(client, token, draft["id"], "failed")
    assert (found["status"], found["error_code"]) == ("failed", 550)
    assert "550 5.7.1 relaying denied for you" in found["reason"]
    assert sink.attempts == 1 and sink.received == []


async def test_sent_recipients_are_trusted(
    client: Client, token: str, db: Database, user_id: str
) -> None:
    draft = await email_draft(client, token)
    await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    with db.read.connect() as conn:
        trusted = set(
            conn.execute(
                sa.select(trust_entries_t.c.address).where(trust_entries_t.c.user_id == user_id)
            ).scalars()
        )
    assert BOB in trusted


async def test_a_user_without_an_email_address_gets_409_and_keeps_the_draft(
    client: Client, db: Database
) -> None:
    plain = store.create_user(
        db,
        first_name="Pat",
        last_name="N",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460957"),
    ).id
    token = store.create_token(db, plain)[1]
    draft = await email_draft(client, token)
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 409 and "email address" in refused.body["detail"]
    assert (await call(client, "GET", f"/drafts/{draft['id']}", token)).status == 200


async def test_a_draft_without_recipients_is_a_400(client: Client, token: str) -> None:
    draft = await email_draft(client, token, to=[])
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 400 and "recipient" in refused.body["detail"]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nthere"},
        {"to": [f"{BOB}\r\nBcc: victim@example.com"]},
        {"to": ["Bob <bob@example.org>"]},
        {"to": ["bob@example.org, eve@example.com"]},
    ],
)
async def test_header_injection_is_refused_before_anything_is_stored(
    client: Client, token: str, fields: dict[str, Any]
) -> None:
    body = {"channel": "email", "to": [BOB], "subject": "x"} | fields
    refused = await call(client, "POST", "/drafts", token, json=body)
    assert refused.status == 400
    assert (await call(client, "GET", "/drafts", token)).body["items"] == []


async def test_email_sending_disabled_is_409(
    settings: Settings,
    db: Database,
    user_id: str,
    token: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await aiohttp_client(create_app(settings))  # email_out.enabled is false
    draft = await email_draft(client, token)
    refused = await call(client, "POST", f"/drafts/{draft['id']}/send", token)
    assert refused.status == 409 and "not enabled" in refused.body["detail"]


# --- the job, step by step -----------------------------------------------------------


async def pending_email(settings: Settings, db: Database, user_id: str, port: int) -> str:
    configured = relay_settings(settings, port)
    draft = drafts.create_draft(db, user_id, "email", to=(BOB,), subject="s", text="t")
    await asyncio.to_thread(send_draft, configured, db, user_id, draft["id"])
    return str(draft["id"])


async def attempt(
    db: Database, tmp_path: Path, relay: SmtpRelay, message_id: str, *, last: bool = False
) -> str:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    return await asyncio.to_thread(deliver_email, db, blobs, relay, message_id, last_attempt=last)


async def test_a_suspended_user_cannot_send_an_email_draft(
    settings: Settings, db: Database, user_id: str, sink: SmtpSink
) -> None:
    draft = drafts.create_draft(db, user_id, "email", to=(BOB,), subject="s", text="t")
    set_suspended(db, user_id, True)
    with pytest.raises(SendRefused, match="suspended"):
        await asyncio.to_thread(
            send_draft, relay_settings(settings, sink.port), db, user_id, draft["id"]
        )
    assert store.get_message(db, user_id, draft["id"])["folder"] == "drafts"
    assert sink.received == []


async def test_a_451_is_retried_and_then_sent(
    settings: Settings, db: Database, user_id: str, sink: SmtpSink, tmp_path: Path
) -> None:
    message_id = await pending_email(settings, db, user_id, sink.port)
    relay = SmtpRelay("127.0.0.1", sink.port, starttls=False, timeout_s=5)
    sink.answer_next("451 4.3.0 try again later")
    with pytest.raises(SendRetry, match="451"):
        await attempt(db, tmp_path, relay, message_id)
    assert store.get_message(db, user_id, message_id)["status"] == "pending"
    assert await attempt(db, tmp_path, relay, message_id) == "sent"
    assert len(sink.received) == 1
    # Done is done: a repeated job sends nothing more.
    assert await attempt(db, tmp_path, relay, message_id) == "sent"
    assert len(sink.received) == 1


async def test_a_451_on_the_last_attempt_fails_with_the_reply(
    settings: Settings, db: Database, user_id: str, sink: SmtpSink, tmp_path: Path
) -> None:
    message_id = await pending_email(settings, db, user_id, sink.port)
    relay = SmtpRelay("127.0.0.1", sink.port, starttls=False, timeout_s=5)
    sink.answer_next("451 4.3.0 still busy")
    assert await attempt(db, tmp_path, relay, message_id, last=True) == "failed"
    found = store.get_message(db, user_id, message_id)
    assert found["error_code"] == 451 and "still busy" in found["reason"]


async def test_a_relay_that_is_not_listening_is_retried(
    settings: Settings, db: Database, user_id: str, sink: SmtpSink, tmp_path: Path
) -> None:
    message_id = await pending_email(settings, db, user_id, sink.port)
    port = sink.port
    await sink.stop()
    relay = SmtpRelay("127.0.0.1", port, starttls=False, timeout_s=2)
    with pytest.raises(SendRetry, match="could not be reached"):
        await attempt(db, tmp_path, relay, message_id)
    await sink.start()  # for the fixture's stop()


async def test_the_relay_login_is_used_when_a_username_is_set(
    settings: Settings, db: Database, user_id: str, tmp_path: Path
) -> None:
    sink = await SmtpSink(users={"gateway": "s3cret"}).start()
    try:
        message_id = await pending_email(settings, db, user_id, sink.port)
        wrong = SmtpRelay(
            "127.0.0.1", sink.port, username="gateway", password="nope", starttls=False
        )
        assert await attempt(db, tmp_path, wrong, message_id) == "failed"
        assert store.get_message(db, user_id, message_id)["error_code"] == 535
    finally:
        await sink.stop()
    sink = await SmtpSink(users={"gateway": "s3cret"}).start()
    try:
        other = await pending_email(settings, db, user_id, sink.port)
        right = SmtpRelay(
            "127.0.0.1", sink.port, username="gateway", password="s3cret", starttls=False
        )
        assert await attempt(db, tmp_path, right, other) == "sent"
        (got,) = sink.received
        assert got.login == "gateway"
    finally:
        await sink.stop()


@pytest.fixture(scope="module")
def relay_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_service("openssl", "needed to make a test certificate")
    directory = tmp_path_factory.mktemp("relay-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=relay.test", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_starttls_is_used_and_the_relays_certificate_checked(
    settings: Settings,
    db: Database,
    user_id: str,
    tmp_path: Path,
    relay_cert: tuple[Path, Path],
) -> None:
    cert, key = relay_cert
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    sink = await SmtpSink(users={"gateway": "s3cret"}, tls_context=server_context).start()
    try:
        first = await pending_email(settings, db, user_id, sink.port)
        untrusted = SmtpRelay("127.0.0.1", sink.port, username="gateway", password="s3cret")
        with pytest.raises(SendRetry, match="TLS"):
            await attempt(db, tmp_path, untrusted, first)
        trusted = SmtpRelay(
            "127.0.0.1",
            sink.port,
            username="gateway",
            password="s3cret",
            tls_context=ssl.create_default_context(cafile=str(cert)),
        )
        assert await attempt(db, tmp_path, trusted, first) == "sent"
        assert sink.received[0].login == "gateway"
    finally:
        await sink.stop()


async def test_a_relay_without_starttls_is_not_sent_to_in_clear(
    settings: Settings, db: Database, user_id: str, sink: SmtpSink, tmp_path: Path
) -> None:
    message_id = await pending_email(settings, db, user_id, sink.port)
    relay = SmtpRelay("127.0.0.1", sink.port, starttls=True, timeout_s=5)
    with pytest.raises(SendRetry, match="STARTTLS"):
        await attempt(db, tmp_path, relay, message_id)
    assert sink.received == []
