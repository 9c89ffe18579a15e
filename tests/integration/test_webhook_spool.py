"""The database goes away: webhooks are acknowledged from the local spool and stored
once it is back; SMTP answers 451 meanwhile. Real PostgreSQL behind a TCP proxy
that the test cuts (refuses new connections, resets open ones) and restores; real
SQLite files locked by another connection; signatures by twilio's RequestValidator.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from bridges.dns import StaticResolver
from config import Settings
from gateway.app import create_app
from gateway.keys import RUNTIME, SPOOL
from inbox import outbound, store
from inbox.addresses import E164, EmailAddress
from inbox.db import Database, open_database
from inbox.migrate import upgrade
from inbox.models import messages_t, sms_opt_outs_t, trust_entries_t
from inbox.spool import Spool, requeue_dead_letters
from optin import trust
from tests.conftest import ACCOUNT_SID, make_settings, twilio_form
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.helpers import post_signed

Client = TestClient[Any, Any]
USER_PHONE = "+442079460958"
USER_NUMBER = "+14155550199"
USER_EMAIL = "ada@optmsg.example"
STRANGER = "+14155550111"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
CUT_S = 10.0
# Far below Twilio's 15 s webhook timeout, with room for a loaded test machine.
WEBHOOK_BUDGET_S = 6.0


@dataclass
class World:
    client: Client
    db: Database  # straight to the database, never through the proxy
    proxy: TcpProxy | None
    user_id: str
    smtp_port: int

    @property
    def spool_pending(self) -> int:
        pending: int = self.client.app[SPOOL].pending
        return pending

    async def wait_drained(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.spool_pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert self.spool_pending == 0, f"{self.spool_pending} message(s) still spooled"

    def stored_sids(self) -> list[str]:
        with self.db.read.connect() as conn:
            rows = conn.execute(
                sa.select(messages_t.c.external_id).where(
                    messages_t.c.bridge == "twilio", messages_t.c.direction == "inbound"
                )
            )
            return [r.external_id for r in rows]

    def send_mail(self, subject: str) -> Any:
        raw = (
            f"From: Bank <alerts@bank.example>\r\nTo: {USER_EMAIL}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@bank.example>\r\n\r\nbody\r\n"
        ).encode()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=20) as smtp:
            return smtp.sendmail("alerts@bank.example", [USER_EMAIL], raw)

    async def metric(self, line_start: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _make_user(db: Database) -> str:
    user = store.create_user(
        db,
        first_name="Ada",
        last_name="Tester",
        date_of_birth=date(1990, 1, 1),
        phone=E164(USER_PHONE),
        sms_number=E164(USER_NUMBER),
        email_address=EmailAddress(USER_EMAIL),
    )
    return user.id


async def _world(
    settings: Settings,
    direct: Database,
    proxy: TcpProxy | None,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> World:
    user_id = _make_user(direct)
    app = create_app(settings, resolver=StaticResolver({}))
    client = await aiohttp_client(app)
    port = app[RUNTIME].smtp_port
    assert port is not None
    return World(client, direct, proxy, user_id, port)


@pytest.fixture
async def on_postgres(
    pg_url: str, tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[World]:
    direct = open_database(make_settings(tmp_path, pg_url).database)
    upgrade(direct)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = make_settings(
            tmp_path,
            proxied,
            smtp={"enabled": True},
            spool={"dir": tmp_path / "spool", "replay_interval_s": 0.2},
        )
        world = await _world(settings, direct, proxy, aiohttp_client)
        # Let other components' start-up reads (live events, email recovery) finish:
        # an outage during those is not what these tests are about.
        await asyncio.sleep(0.5)
        try:
            yield world
        finally:
            # The app stops (and flushes) while the proxy still runs.
            proxy.restore()
            await world.client.close()
            direct.dispose()


async def _timed_post(world: World, form: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    resp = await post_signed(world.client, form)
    return resp.status, await resp.text(), time.monotonic() - started


def _mail_refusal_code(world: World, subject: str) -> int:
    try:
        world.send_mail(subject)
    except smtplib.SMTPRecipientsRefused as exc:
        ((code, _),) = exc.recipients.values()
        return int(code)
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
        return int(exc.smtp_code)
    return 250


async def test_a_ten_second_database_outage_loses_and_duplicates_nothing(
    on_postgres: World,
) -> None:
    world = on_postgres
    assert world.proxy is not None
    before = twilio_form(sender=STRANGER, body="before the outage")
    assert (await _timed_post(world, before))[0] == 200

    world.proxy.cut()
    cut_at = time.monotonic()
    during: list[dict[str, str]] = []
    latencies: list[float] = []
    statuses: list[int] = []
    n = 0
    while time.monotonic() - cut_at < CUT_S:
        form = twilio_form(sender=STRANGER, body=f"during {n}")
        during.append(form)
        status, body, took = await _timed_post(world, form)
        statuses.append(status)
        latencies.append(took)
        assert body == EMPTY_TWIML
        if n % 5 == 0:  # Twilio retrying one it already got
            statuses.append((await _timed_post(world, form))[0])
        n += 1
        await asyncio.sleep(0.1)
    stop = twilio_form(sender=STRANGER, body="STOP")
    command = twilio_form(sender=USER_PHONE, body="TRUST +14155550123")
    for form in (stop, command):
        status, body, _ = await _timed_post(world, form)
        statuses.append(status)
        assert body == EMPTY_TWIML  # no TwiML reply while spooled
    forged = await world.client.post(
        "/bridges/twilio/sms",
        data="From=%2B14155550111&To=%2B14155550199&Body=x&MessageSid=SMforged",
        headers={
            "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    malformed = twilio_form(sender=STRANGER)
    del malformed["From"]
    mail_during = await asyncio.to_thread(_mail_refusal_code, world, "during")
    spooled_during = world.spool_pending

    world.proxy.restore()
    await world.wait_drained()
    mail_after = await asyncio.to_thread(_mail_refusal_code, world, "during")
    retried = [(await _timed_post(world, f))[0] for f in during[:3]]

    assert set(statuses) == {200}
    assert max(latencies) < WEBHOOK_BUDGET_S
    assert forged.status == 403
    assert (await post_signed(world.client, malformed)).status == 400
    assert spooled_during >= len(during) + 2
    assert mail_during == 451
    assert mail_after == 250
    assert retried == [200, 200, 200]
    sids = world.stored_sids()
    expected = {f["MessageSid"] for f in [before, stop, *during]}
    assert sorted(sids) == sorted(expected)  # each once; the command is not a message
    with world.db.read.connect() as conn:
        opted_out = conn.execute(sa.select(sms_opt_outs_t.c.address)).scalars().all()
    assert opted_out == [STRANGER]
    assert [str(e.address) for e in trust.list_entries(world.db, world.user_id)] == ["+14155550123"]
    assert await world.metric("optmsg_spool_messages ") == 0
    assert await world.metric('optmsg_spooled_total{bridge="twilio",kind="sms"}') >= len(during)
    assert await world.metric(
        'optmsg_spool_replayed_total{bridge="twilio",kind="sms"}'
    ) == await world.metric('optmsg_spooled_total{bridge="twilio",kind="sms"}')


@pytest.fixture
async def on_sqlite(
    sqlite_url: str, tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[World]:
    settings = make_settings(
        tmp_path,
        sqlite_url,
        smtp={"enabled": True},
        spool={
            "dir": tmp_path / "spool",
            "replay_interval_s": 0.2,
            "store_timeout_s": 0.5,
            "max_bytes": 64 * 1024,
        },
    )
    direct = open_database(settings.database)
    upgrade(direct)
    try:
        yield await _world(settings, direct, None, aiohttp_client)
    finally:
        direct.dispose()


def _hold_write_lock(db: Database) -> sa.Connection:
    """Another process's writer in the middle of a long transaction (a migration, a
    bulk import): SQLite's write lock, held until the returned connection closes."""
    conn = db.write.connect()
    conn.begin()
    return conn


async def test_a_locked_sqlite_file_spools_webhooks_until_the_lock_is_released(
    on_sqlite: World,
) -> None:
    world = on_sqlite
    holder = await asyncio.to_thread(_hold_write_lock, world.db)
    forms = [twilio_form(sender=STRANGER, body=f"m{i}") for i in range(5)]
    try:
        results = [await _timed_post(world, f) for f in forms]
        assert world.spool_pending == 5
    finally:
        await asyncio.to_thread(holder.close)
    await world.wait_drained()
    assert {status for status, _, _ in results} == {200}
    # The first waits for the store (store_timeout_s), the rest queue behind it.
    assert max(took for _, _, took in results) < WEBHOOK_BUDGET_S
    assert sorted(world.stored_sids()) == sorted(f["MessageSid"] for f in forms)


async def test_spooled_commands_take_effect_in_the_order_they_were_acknowledged(
    on_sqlite: World,
) -> None:
    """BLOCK then TRUST for each of 20 numbers, all spooled: after the replay every
    number is trusted (the later command wins, as it would have without an outage)."""
    world = on_sqlite
    numbers = [f"+1415555{n:04d}" for n in range(20)]
    holder = await asyncio.to_thread(_hold_write_lock, world.db)
    try:
        for number in numbers:
            for command in ("BLOCK", "TRUST"):
                form = twilio_form(sender=USER_PHONE, to=USER_NUMBER, body=f"{command} {number}")
                assert (await post_signed(world.client, form)).status == 200
        assert world.spool_pending == 2 * len(numbers)
    finally:
        await asyncio.to_thread(holder.close)
    await world.wait_drained()
    with world.db.read.connect() as conn:
        verdicts = dict(
            conn.execute(sa.select(trust_entries_t.c.address, trust_entries_t.c.verdict)).all()
        )
    assert {n: verdicts.get(n) for n in numbers if verdicts.get(n) != "trusted"} == {}


async def test_a_full_spool_answers_503_and_counts_it(on_sqlite: World) -> None:
    world = on_sqlite
    holder = await asyncio.to_thread(_hold_write_lock, world.db)
    statuses: list[int] = []
    try:
        # ~700-byte records in a 64 KiB spool.
        for i in range(200):
            status = (await _timed_post(world, twilio_form(sender=STRANGER, body=f"m{i}")))[0]
            statuses.append(status)
            if status == 503:
                break
        refused = await post_signed(world.client, twilio_form(sender=STRANGER))
        body = await refused.json()
    finally:
        await asyncio.to_thread(holder.close)
    assert statuses[-1] == 503
    assert set(statuses[:-1]) == {200}
    assert refused.status == 503
    assert body["detail"] == "the message could not be stored; try again"
    assert "sqlite" not in str(body).lower()
    assert await world.metric('optmsg_spool_refused_total{bridge="twilio",reason="full"}') == 2
    await world.wait_drained()
    assert len(world.stored_sids()) == statuses.count(200)


async def _dead_letter(world: World, form: dict[str, str], *broken: str) -> Spool:
    """Post ``form`` while the ``broken`` SQL statements keep the store refusing it
    with the database up, and wait until it is in dead.log; the gateway's spool."""
    with world.db.write.begin() as conn:
        for statement in broken:
            conn.execute(sa.text(statement))
    resp = await post_signed(world.client, form)
    assert resp.status == 200
    await world.wait_drained()  # failed on every pass with the database up: dead.log
    spool = world.client.app[SPOOL].spool
    assert spool is not None
    assert (spool.path / "dead.log").stat().st_size > 0
    return spool


async def test_a_message_the_store_refuses_with_the_database_up_goes_to_dead_log(
    on_sqlite: World,
) -> None:
    world = on_sqlite
    await _dead_letter(
        world, twilio_form(sender=STRANGER), "DROP TABLE attachments", "DROP TABLE messages"
    )
    assert await world.metric("optmsg_spool_dead_letters_total ") == 1


async def test_readiness_stays_200_while_the_spool_stands_in_for_the_database(
    on_postgres: World,
) -> None:
    world = on_postgres
    assert world.proxy is not None
    world.proxy.cut()
    try:
        resp = await world.client.get("/readyz")
        body = await resp.json()
    finally:
        world.proxy.restore()
    assert resp.status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["database"].startswith("unreachable")
    assert body["checks"]["spool"] == "ok (0 pending)"


async def test_a_delivery_status_during_the_outage_is_applied_once_it_is_back(
    on_postgres: World,
) -> None:
    world = on_postgres
    assert world.proxy is not None
    provider_sid = "SM" + "5" * 32
    with world.db.write.begin() as conn:
        sent = outbound.insert_outbound_sms(conn, world.user_id, E164(STRANGER), "hello")
        outbound.mark_handed_over(conn, sent.message_id, provider_sid, "queued")
    form = {"MessageSid": provider_sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID}
    world.proxy.cut()
    try:
        resp = await post_signed(world.client, form, path="/bridges/twilio/status")
    finally:
        world.proxy.restore()
    await world.wait_drained()
    assert resp.status == 200
    with world.db.read.connect() as conn:
        status = conn.execute(
            sa.select(messages_t.c.status).where(messages_t.c.id == sent.message_id)
        ).scalar_one()
    assert status == "delivered"
    assert await world.metric('optmsg_spool_replayed_total{bridge="twilio",kind="status"}') == 1


async def test_requeued_dead_letters_are_replayed_by_the_running_gateway(
    on_sqlite: World,
) -> None:
    world = on_sqlite
    form = twilio_form(sender=STRANGER)
    spool = await _dead_letter(world, form, "ALTER TABLE messages RENAME TO messages_away")
    with world.db.write.begin() as conn:  # the fault is fixed
        conn.execute(sa.text("ALTER TABLE messages_away RENAME TO messages"))
    done = requeue_dead_letters(spool.path.parent, 64 * 1024)
    assert done.records == 1 and done.slot != spool.path
    deadline = time.monotonic() + 10
    while not world.stored_sids() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert world.stored_sids() == [form["MessageSid"]]
    assert not (spool.path / "dead.log").exists()
