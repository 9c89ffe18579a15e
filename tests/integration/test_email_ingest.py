"""Email end to end: a real SMTP client (smtplib) against the gateway's SMTP server,
through the raw spool, parsing, sender authentication (DNS from a StaticResolver)
and the opt-in filter, to messages the client API shows."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from bridges.dns import StaticResolver
from config import Settings, SmtpSettings
from gateway.app import create_app
from gateway.keys import RUNTIME
from inbox import store
from inbox.addresses import E164, EmailAddress, parse_email_domain
from inbox.db import Database
from inbox.models import attachments_t, messages_t, raw_messages_t
from optin import trust
from tests.fakes.dns_server import FakeDnsServer
from tests.unit import dkim_keys

Client = TestClient[Any, Any]
OUR_ADDRESS = "ada@optmsg.example"
BANK = "alerts@bank.example"
CLIENT_IP = "127.0.0.1"


@dataclass
class Mail:
    client: Client
    port: int
    token: str
    db: Database
    keys: dkim_keys.KeyPair
    user_id: str

    def send(self, raw: bytes, *, to: list[str] | None = None, mail_from: str = BANK) -> Any:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            return smtp.sendmail(mail_from, to or [OUR_ADDRESS], raw)

    async def send_async(self, raw: bytes, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.send, raw, **kwargs)

    async def messages(self, folder: str) -> list[dict[str, Any]]:
        resp = await self.client.get(
            f"/api/v1/messages?folder={folder}", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert resp.status == 200
        return list((await resp.json())["items"])

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.messages("inbox") + await self.messages("quarantine")
            if len(found) >= count or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.05)


def create_ada(db: Database) -> str:
    user = store.create_user(
        db,
        first_name="Ada",
        last_name="L",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"),
        email_address=EmailAddress(OUR_ADDRESS),
    )
    return user.id


def app_with_smtp(settings: Settings, resolver: StaticResolver) -> Any:
    smtp = SmtpSettings(enabled=True, listen="127.0.0.1:0", hostname="mx.optmsg.example")
    return create_app(settings.model_copy(update={"smtp": smtp}), resolver=resolver)


def message(
    subject: str = "Statement",
    body: str = "Your statement is ready.",
    *,
    sender: str = BANK,
    message_id: str = "<1@bank.example>",
) -> bytes:
    return (
        f"From: Bank <{sender}>\r\nTo: {OUR_ADDRESS}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def signed(raw: bytes, keys: dkim_keys.KeyPair, domain: str = "bank.example") -> bytes:
    signature = dkim.sign(
        raw,
        b"sel",
        domain.encode(),
        keys.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(signature) + raw


@pytest.fixture
async def mail(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Mail:
    keys = dkim_keys.generate()
    resolver = StaticResolver(
        {
            "sel._domainkey.bank.example": {"TXT": [keys.dns_record()]},
            "_dmarc.bank.example": {"TXT": ["v=DMARC1; p=reject"]},
            "bank.example": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
        }
    )
    user_id = create_ada(db)
    trust.add(db, user_id, EmailAddress(BANK))
    app = app_with_smtp(settings, resolver)
    client = await aiohttp_client(app)
    port = app[RUNTIME].smtp_port
    assert port is not None
    return Mail(client, port, store.create_token(db, user_id)[1], db, keys, user_id)


async def test_dkim_aligned_mail_from_trusted_sender_lands_in_inbox(mail: Mail) -> None:
    await mail.send_async(signed(message(), mail.keys))
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "inbox"
    assert found["channel"] == "email"
    assert found["subject"] == "Statement"
    assert found["text"].strip() == "Your statement is ready."
    assert found["auth"]["dmarc"] == "pass"


async def test_trusted_but_unauthenticated_mail_is_quarantined_saying_why(mail: Mail) -> None:
    await mail.send_async(message())
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "quarantine"
    assert "authentication" in found["reason"]


async def test_mail_from_unknown_sender_is_quarantined(mail: Mail) -> None:
    raw = signed(message(sender="news@bank.example"), mail.keys)
    await mail.send_async(raw, mail_from="news@bank.example")
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "quarantine"
    assert "unknown sender" in found["reason"]


async def test_trusted_domain_admits_authenticated_mail_from_any_address_there(
    mail: Mail,
) -> None:
    trust.add(mail.db, mail.user_id, parse_email_domain("@bank.example"))
    raw = signed(message(sender="news@bank.example"), mail.keys)
    await mail.send_async(raw, mail_from="news@bank.example")
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "inbox"
    assert "domain" in found["reason"]


async def test_trusted_domain_holds_unauthenticated_mail_claiming_to_be_from_it(
    mail: Mail,
) -> None:
    trust.add(mail.db, mail.user_id, parse_email_domain("@bank.example"))
    await mail.send_async(message(sender="news@bank.example"), mail_from="news@bank.example")
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "quarantine"
    assert "domain" in found["reason"] and "authentication" in found["reason"]


async def test_unknown_recipient_is_refused_at_rcpt(mail: Mail) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await mail.send_async(message(), to=["nobody@optmsg.example"])
    code, _ = info.value.recipients["nobody@optmsg.example"]
    assert code == 550


async def test_resending_the_same_message_stores_it_once(mail: Mail) -> None:
    raw = signed(message(), mail.keys)
    await mail.send_async(raw)
    await mail.wait_for(1)
    await mail.send_async(raw)
    await asyncio.sleep(0.5)
    assert len(await mail.wait_for(2, timeout=1)) == 1


async def test_unparseable_mail_is_kept_raw_and_quarantined(mail: Mail) -> None:
    garbage = b"\x00\x01 not a header at all\r\n\r\nbody"  # no header fields
    await mail.send_async(garbage)
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "quarantine"
    assert found["reason"].startswith("unparseable")
    with mail.db.read.connect() as conn:
        data = conn.execute(sa.select(raw_messages_t.c.data)).scalar_one()
    assert garbage in data


async def test_attachment_is_stored_in_the_blob_store(mail: Mail, settings: Settings) -> None:
    raw = (
        f"From: {BANK}\r\nTo: {OUR_ADDRESS}\r\nSubject: pdf\r\nMessage-ID: <a@bank.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="st.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    ).encode()
    await mail.send_async(signed(raw, mail.keys))
    (found,) = await mail.wait_for(1)
    (att,) = found["attachments"]
    assert (att["filename"], att["content_type"], att["status"]) == (
        "st.pdf",
        "application/pdf",
        "stored",
    )
    with mail.db.read.connect() as conn:
        digest = conn.execute(sa.select(attachments_t.c.sha256)).scalar_one()
    blob = settings.storage.blob_dir / digest[:2] / digest[2:4] / digest
    assert blob.read_bytes() == b"%PDF-1.4\n"


async def test_forged_authentication_results_claiming_our_id_are_replaced(mail: Mail) -> None:
    forged = b"Authentication-Results: mx.optmsg.example; dmarc=pass header.from=bank.example\r\n"
    await mail.send_async(forged + message())
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "quarantine"
    from inbox import raw_store

    for _ in range(100):
        if not raw_store.pending_ids(mail.db):
            break
        await asyncio.sleep(0.05)
    with mail.db.read.connect() as conn:
        raw_id, ours = conn.execute(
            sa.select(raw_messages_t.c.id, raw_messages_t.c.auth_results)
        ).one()
    eml = raw_store.as_eml(raw_store.load(mail.db, raw_id), ours)
    assert forged not in eml
    assert eml.startswith(b"Authentication-Results: mx.optmsg.example;")
    assert b"dmarc=" in eml.split(b"\r\n", 1)[0]


async def test_pending_raw_mail_is_processed_at_start(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    from inbox import raw_store

    create_ada(db)
    raw = raw_store.new_raw(
        peer_ip=CLIENT_IP, helo="client", mail_from=BANK, recipients=[OUR_ADDRESS], data=message()
    )
    with db.write.begin() as conn:
        raw_store.insert_raw_batch(conn, [raw])  # spooled, then the process "crashed"
    await aiohttp_client(app_with_smtp(settings, StaticResolver({})))
    for _ in range(100):
        with db.read.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(messages_t)).scalar_one():
                break
        await asyncio.sleep(0.05)
    assert raw_store.pending_ids(db) == []
    with db.read.connect() as conn:
        assert conn.execute(sa.select(messages_t.c.raw_id)).scalar_one() == raw.id


# Inserts into the raw spool fail (as on a full disk) while everything else, the
# app's own background sweeps and retention reads of the table included, works.
_REFUSE_RAW = {
    "sqlite": [
        "CREATE TRIGGER refuse_raw BEFORE INSERT ON raw_messages "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_raw() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
        "CREATE TRIGGER refuse_raw BEFORE INSERT ON raw_messages "
        "FOR EACH ROW EXECUTE FUNCTION refuse_raw()",
    ],
}
_ACCEPT_RAW = {
    "sqlite": ["DROP TRIGGER refuse_raw"],
    "postgresql": ["DROP TRIGGER refuse_raw ON raw_messages", "DROP FUNCTION refuse_raw()"],
}


def _run_sql(db: Database, statements: dict[str, list[str]]) -> None:
    with db.write.begin() as conn:
        for statement in statements[conn.dialect.name]:
            conn.execute(sa.text(statement))


async def test_store_failure_answers_451_and_the_server_keeps_serving(mail: Mail) -> None:
    _run_sql(mail.db, _REFUSE_RAW)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await mail.send_async(message())
    assert info.value.smtp_code == 451
    assert info.value.smtp_error.startswith(b"4.3.0")
    assert b"disk full" not in info.value.smtp_error  # no internal detail
    _run_sql(mail.db, _ACCEPT_RAW)
    await mail.send_async(signed(message(), mail.keys))
    (found,) = await mail.wait_for(1)
    assert found["folder"] == "inbox"


async def test_every_pending_raw_mail_is_processed_at_start_not_just_one_page(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    from inbox import raw_store

    create_ada(db)
    raws = [
        raw_store.new_raw(
            peer_ip=CLIENT_IP,
            helo="client",
            mail_from=BANK,
            recipients=[OUR_ADDRESS],
            data=message(message_id=f"<{n}@bank.example>"),
        )
        for n in range(620)  # more than one recovery page (500)
    ]
    with db.write.begin() as conn:
        raw_store.insert_raw_batch(conn, raws)
    await aiohttp_client(app_with_smtp(settings, StaticResolver({})))
    for _ in range(600):
        if not raw_store.pending_ids(db):
            break
        await asyncio.sleep(0.05)
    assert raw_store.pending_ids(db) == []
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages_t)).scalar_one() == 620


async def test_mail_from_a_blocked_sender_is_dropped_and_counted(mail: Mail) -> None:
    from optin.decide import TrustVerdict

    trust.add(mail.db, mail.user_id, EmailAddress(BANK), TrustVerdict.BLOCKED)
    await mail.send_async(signed(message(), mail.keys))
    deadline = asyncio.get_running_loop().time() + 10
    metrics = ""
    while asyncio.get_running_loop().time() < deadline:
        metrics = await (await mail.client.get("/metrics")).text()
        if 'outcome="dropped"' in metrics:
            break
        await asyncio.sleep(0.05)
    assert 'optmsg_messages_total{bridge="email",outcome="dropped"} 1.0' in metrics
    assert await mail.messages("inbox") == [] and await mail.messages("quarantine") == []


def _raw_count(db: Database) -> int:
    with db.read.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(raw_messages_t)).scalar_one()
        )


async def test_deleting_the_account_deletes_its_raw_emails(mail: Mail, settings: Settings) -> None:
    from inbox.blobs import DirectoryBlobStore

    await mail.send_async(signed(message(), mail.keys))
    await mail.wait_for(1)
    assert _raw_count(mail.db) == 1
    store.delete_user(mail.db, DirectoryBlobStore(settings.storage.blob_dir), mail.user_id)
    assert _raw_count(mail.db) == 0


async def test_retention_deletes_raw_emails_no_message_refers_to(
    mail: Mail, settings: Settings
) -> None:
    from optin.decide import TrustVerdict

    trust.add(mail.db, mail.user_id, EmailAddress(BANK), TrustVerdict.BLOCKED)
    await mail.send_async(signed(message(), mail.keys))  # dropped: no message row
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        with mail.db.read.connect() as conn:
            states = list(conn.execute(sa.select(raw_messages_t.c.state)).scalars())
        if states == ["done"]:
            break
        await asyncio.sleep(0.05)
    from gateway.retention import run_retention
    from inbox.blobs import DirectoryBlobStore

    result = run_retention(settings, mail.db, DirectoryBlobStore(settings.storage.blob_dir))
    assert result.raw_deleted == 1 and _raw_count(mail.db) == 0


async def test_retention_keeps_raw_emails_of_stored_messages(
    mail: Mail, settings: Settings
) -> None:
    from gateway.retention import run_retention
    from inbox.blobs import DirectoryBlobStore

    await mail.send_async(signed(message(), mail.keys))
    await mail.wait_for(1)
    run_retention(settings, mail.db, DirectoryBlobStore(settings.storage.blob_dir))
    assert _raw_count(mail.db) == 1


def _zone_txt(value: str) -> str:
    # A TXT record longer than 255 octets is several strings (a DKIM key is).
    return " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))


async def test_smtp_dns_servers_are_asked_for_sender_authentication(
    settings: Settings, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    keys = dkim_keys.generate()
    records = {
        "sel._domainkey.bank.example": {"TXT": [_zone_txt(keys.dns_record())]},
        "_dmarc.bank.example": {"TXT": [_zone_txt("v=DMARC1; p=reject")]},
        "bank.example": {"TXT": [_zone_txt("v=spf1 ip4:127.0.0.1 -all")]},
    }
    user_id = create_ada(db)
    trust.add(db, user_id, EmailAddress(BANK))
    with FakeDnsServer(records) as dns_server:
        smtp = SmtpSettings(
            enabled=True,
            listen="127.0.0.1:0",
            hostname="mx.optmsg.example",
            dns_servers=[dns_server.server],
        )
        app = create_app(settings.model_copy(update={"smtp": smtp}))  # no resolver injected
        client = await aiohttp_client(app)
        port = app[RUNTIME].smtp_port
        assert port is not None
        mail = Mail(client, port, store.create_token(db, user_id)[1], db, keys, user_id)
        await mail.send_async(signed(message(), keys))
        (found,) = await mail.wait_for(1)
        assert dns_server.queries > 0
    assert found["folder"] == "inbox"
    assert (found["auth"]["spf"], found["auth"]["dkim"], found["auth"]["dmarc"]) == (
        "pass",
        "pass",
        "pass",
    )


async def test_a_sweep_that_reaches_an_email_processed_since_does_not_process_it_again(
    mail: Mail,
) -> None:
    await mail.send_async(signed(message(), mail.keys))
    (found,) = await mail.wait_for(1)
    email = mail.client.app[RUNTIME].email
    assert email is not None
    await email.drain()
    with mail.db.read.connect() as conn:
        (raw_id,) = conn.execute(sa.select(raw_messages_t.c.id)).scalars()
    metrics = await (await mail.client.get("/metrics")).text()
    await email.process(raw_id)  # as a sweep holding an out-of-date page of ids would
    assert await (await mail.client.get("/metrics")).text() == metrics  # nothing counted
    assert [m["id"] for m in await mail.wait_for(1)] == [found["id"]]
