"""An email acknowledged with ``250`` survives ``kill -9`` of the gateway, and a client
that resends after a lost reply never gets its message stored twice (DESIGN.md, "One
inbound message" steps 5-6, the SMTP contract "acknowledged once its raw bytes are
durably stored and parsed just after", and the targets "acknowledged messages lost
after kill -9: 0", "duplicates after provider retries: 0").

One scenario, run once for the module: 8 concurrent SMTP clients (smtplib, one thread
each) send 1,000 distinct 5-10 KB text/plain emails from an opted-in sender to a user's
address. After a third of them are acknowledged the gateway is killed with SIGKILL,
restarted on the same ports, and every client resends the same bytes of each message
until it is answered ``250``, as a sending MTA retries a lost connection or a ``4xx``.
Once the restarted gateway has processed the raw spool (pending rows left by the crash
included) the tests read the SQLite file directly and through the client API.

No DNS records exist for sender.example here, so every email fails sender
authentication and, although its sender is trusted, is quarantined for that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import smtplib
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from contextlib import closing
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import POLL_INTERVAL_S, Deadline, Deployment, GatewayServer, create_deployment

pytestmark = pytest.mark.slow

MESSAGES = 1_000
CLIENTS = 8
KILL_AFTER_ACKNOWLEDGED = MESSAGES // 3
RESTART_PAUSE_S = 0.5
RETRY_PAUSE_S = 0.05
SMTP_TIMEOUT_S = 5.0
# Sending, the crash and the processing of the spool together; the API check after it.
SCENARIO_BUDGET_S = 70.0
API_BUDGET_S = 10.0
PAGE_LIMIT = 200
# The system resolver answers for sender.example (NXDOMAIN, or a timeout where there is
# no DNS at all); a short lookup budget keeps a silent resolver from stalling the spool.
DNS_TIMEOUT_S = "0.5"

RECIPIENT = "ada@optmsg.example"
SENDER = "bank@sender.example"
CLIENT_HELO = "mta.sender.example"
MARKER = "durability check "
MIN_SIZE = 5 * 1024
MAX_SIZE = 10 * 1024
FILLER_LINE = b"Statement line %05d: nothing to see here, only padding for the size.\r\n"


@dataclass(frozen=True)
class OutgoingEmail:
    number: int
    message_id: str
    data: bytes


@dataclass
class DeliveryLog:
    """What the clients saw; shared by their threads, changed only under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[str] = field(default_factory=set)
    acknowledged_before_kill: frozenset[str] = frozenset()
    failed_attempts: int = 0
    # DATA sent (in part or whole) but no reply read: the 250 may have been lost.
    unanswered_data: int = 0
    # 5xx replies: the gateway refused a message it should accept; the test fails.
    refused: dict[str, str] = field(default_factory=dict)
    killed_exit_code: int | None = None
    pending_after_kill: int | None = None  # raw rows the killed gateway left unprocessed

    def acknowledge(self, email: OutgoingEmail) -> None:
        with self.lock:
            self.acknowledged.add(email.message_id)

    def count_acknowledged(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def summary(self) -> str:
        with self.lock:
            refused = list(self.refused.items())[:3]
            return (
                f"{len(self.acknowledged)} of {MESSAGES} acknowledged, "
                f"{self.failed_attempts} failed attempts ({self.unanswered_data} with DATA "
                f"unanswered), {len(self.refused)} refused {refused}"
            )

    def count_failure(self, *, unanswered_data: bool) -> None:
        with self.lock:
            self.failed_attempts += 1
            self.unanswered_data += unanswered_data

    def refuse(self, email: OutgoingEmail, reply: str) -> None:
        with self.lock:
            self.refused[email.message_id] = reply


@dataclass(frozen=True)
class CrashRun:
    emails: dict[str, OutgoingEmail]  # by Message-ID
    log: DeliveryLog
    db_path: Path
    base_url: str
    token: str
    send_seconds: float
    processing_seconds: float


@dataclass(frozen=True)
class StoredEmail:
    id: str
    bridge: str
    folder: str
    reason: str
    sender: str
    recipient: str
    text: str
    message_id: str | None  # read back from the raw bytes the row was parsed from


@dataclass(frozen=True)
class RawRow:
    state: str
    sha256: str
    message_id: str | None


# --- building and sending the emails ----------------------------------------------------------


def marker_for(number: int) -> str:
    return f"{MARKER}{number}"


def build_emails() -> list[OutgoingEmail]:
    """1,000 distinct text/plain emails of 5-10 KB, CRLF line endings, each with its own
    Message-ID and a body line ``durability check <n>``."""
    emails = []
    for number in range(MESSAGES):
        message_id = f"<durability-{number:04d}@sender.example>"
        head = (
            f"From: Bank <{SENDER}>\r\n"
            f"To: Ada <{RECIPIENT}>\r\n"
            f"Subject: Statement {number}\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
            f"Message-ID: {message_id}\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="us-ascii"\r\n'
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
            f"{marker_for(number)}\r\n"
        ).encode("ascii")
        target = MIN_SIZE + (number * 977) % (MAX_SIZE - MIN_SIZE - 200)
        body = bytearray(head)
        line = 0
        while len(body) < target:
            body += FILLER_LINE % line
            line += 1
        data = bytes(body)
        assert MIN_SIZE <= len(data) <= MAX_SIZE, len(data)
        emails.append(OutgoingEmail(number, message_id, data))
    return emails


class Refused(Exception):
    """A permanent (5xx) reply."""


class ReplyLost(Exception):
    """The connection failed during DATA: if the data went out, its 250 may be lost."""


def transact(connection: smtplib.SMTP, email: OutgoingEmail) -> int:
    """One MAIL/RCPT/DATA transaction; returns the reply code that ended it."""
    reply: bytes | str
    code, reply = connection.mail(SENDER)
    if code == 250:
        code, reply = connection.rcpt(RECIPIENT)
    if code == 250:
        try:
            code, reply = connection.data(email.data)
        except smtplib.SMTPDataError as exc:  # DATA itself was answered, not with 354
            code, reply = exc.smtp_code, exc.smtp_error  # bytes or str
        except (smtplib.SMTPException, OSError) as exc:
            raise ReplyLost from exc
    if code >= 500:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        raise Refused(f"{code} {text}")
    return code


def deliver_until_acknowledged(
    address: tuple[str, int],
    email: OutgoingEmail,
    log: DeliveryLog,
    connection: smtplib.SMTP | None,
    stop: threading.Event,
) -> smtplib.SMTP | None:
    """Send one email, resending the same bytes on a new connection after any error or
    4xx, until it is answered 250; returns the connection to reuse for the next one."""
    while not stop.is_set():
        try:
            if connection is None:
                connection = smtplib.SMTP(
                    *address, local_hostname=CLIENT_HELO, timeout=SMTP_TIMEOUT_S
                )
                connection.ehlo()  # smtplib's mail() does not greet by itself
            if transact(connection, email) == 250:
                log.acknowledge(email)
                return connection
            log.count_failure(unanswered_data=False)  # a 4xx
        except Refused as exc:
            log.refuse(email, str(exc))
            hang_up(connection)
            return None
        except ReplyLost:
            log.count_failure(unanswered_data=True)
        except (smtplib.SMTPException, OSError):
            log.count_failure(unanswered_data=False)
        hang_up(connection)
        connection = None
        stop.wait(RETRY_PAUSE_S)
    return connection


def hang_up(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        connection.close()


def run_client(
    address: tuple[str, int], queue: deque[OutgoingEmail], log: DeliveryLog, stop: threading.Event
) -> None:
    """One sending MTA: takes emails off the shared queue until it is empty."""
    connection: smtplib.SMTP | None = None
    try:
        while not stop.is_set() and queue:
            try:
                email = queue.popleft()
            except IndexError:  # another client took the last one
                break
            connection = deliver_until_acknowledged(address, email, log, connection, stop)
        if connection is not None:
            # Every email is acknowledged by now; a failed goodbye loses nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
    finally:
        hang_up(connection)


def send_all_with_a_crash(
    address: tuple[str, int],
    emails: list[OutgoingEmail],
    server: GatewayServer,
    db_path: Path,
    deadline: Deadline,
) -> DeliveryLog:
    log = DeliveryLog()
    queue = deque(emails)
    stop = threading.Event()

    def give_up(why: str) -> None:
        stop.set()
        pytest.fail(
            f"{why}: {log.summary()}; starts of the gateway: {server.starts}; "
            f"gateway stderr:\n{server.stderr_tail()}",
            pytrace=False,
        )

    with ThreadPoolExecutor(max_workers=CLIENTS, thread_name_prefix="smtp-client") as pool:
        try:
            clients = [pool.submit(run_client, address, queue, log, stop) for _ in range(CLIENTS)]
            while log.count_acknowledged() < KILL_AFTER_ACKNOWLEDGED:
                if all(client.done() for client in clients):
                    give_up("the clients finished before the kill")
                if deadline.remaining(f"{KILL_AFTER_ACKNOWLEDGED} acknowledged emails") < 1:
                    give_up(f"{KILL_AFTER_ACKNOWLEDGED} emails were not acknowledged in time")
                time.sleep(0.002)
            with log.lock:
                log.acknowledged_before_kill = frozenset(log.acknowledged)
            log.killed_exit_code = server.kill_hard()
            paused_at = time.monotonic()
            log.pending_after_kill = count_pending(db_path)
            time.sleep(max(0.0, RESTART_PAUSE_S - (time.monotonic() - paused_at)))
            server.start(deadline)
            budget = deadline.remaining("sending the emails") - 1
            _, not_done = wait_for_futures(clients, timeout=max(budget, 0))
            if not_done:
                give_up(f"the clients did not finish within {deadline.seconds:.0f} s")
            for client in clients:
                client.result()  # a client's own error (a bug in this test) surfaces here
        finally:
            stop.set()  # bounded: each client stops within one SMTP timeout
    return log


# --- reading the SQLite file ------------------------------------------------------------------


def read_only(db_path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True))


def message_id_of(data: bytes | None) -> str | None:
    if data is None:
        return None
    value = BytesHeaderParser().parsebytes(data)["Message-ID"]
    return None if value is None else str(value).strip()


def count_pending(db_path: Path) -> int:
    with read_only(db_path) as conn:
        (pending,) = conn.execute(
            "SELECT count(*) FROM raw_messages WHERE state = 'pending'"
        ).fetchone()
    return int(pending)


def wait_until_spool_processed(db_path: Path, server: GatewayServer, deadline: Deadline) -> None:
    while (pending := count_pending(db_path)) > 0:
        if not server.running:
            pytest.fail(
                f"the gateway exited with {pending} raw emails pending; stderr:\n"
                f"{server.stderr_tail()}",
                pytrace=False,
            )
        deadline.remaining(f"processing the raw spool ({pending} rows still pending)")
        time.sleep(POLL_INTERVAL_S)


def read_stored_emails(db_path: Path) -> list[StoredEmail]:
    """Every row of the messages table, with the Message-ID of the raw email behind it."""
    with read_only(db_path) as conn:
        rows = conn.execute(
            "SELECT m.id, m.bridge, m.folder, m.reason, m.sender, m.recipient, m.text, r.data "
            "FROM messages m LEFT JOIN raw_messages r ON r.id = m.raw_id"
        ).fetchall()
    return [
        StoredEmail(row_id, bridge, folder, reason, sender, recipient, text, message_id_of(data))
        for row_id, bridge, folder, reason, sender, recipient, text, data in rows
    ]


def read_raw_rows(db_path: Path) -> list[RawRow]:
    with read_only(db_path) as conn:
        rows = conn.execute("SELECT state, sha256, data FROM raw_messages").fetchall()
    return [RawRow(state, sha256, message_id_of(data)) for state, sha256, data in rows]


# --- the scenario -----------------------------------------------------------------------------


def create_user_with_trusted_sender(deployment: Deployment, deadline: Deadline) -> str:
    """Create the user with an email address, opt the sender in; returns an API token."""
    user = deployment.cli(
        *["users", "create", "--first-name", "Ada", "--last-name", "L", "--dob", "1990-01-01"],
        *["--phone", "+442079460958", "--email-address", RECIPIENT],
        deadline=deadline,
    )
    entry = deployment.cli("optin", "add", user["id"], SENDER, deadline=deadline)
    assert entry["address"] == SENDER, f"the opt-in was stored as {entry['address']}"
    return str(deployment.cli("tokens", "create", user["id"], deadline=deadline)["token"])


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRun]:
    deadline = Deadline(SCENARIO_BUDGET_S)
    deployment = create_deployment(tmp_path_factory.mktemp("smtp-crash"), deadline)
    deployment = deployment.with_settings(
        OPTMSG_SMTP__DNS_TIMEOUT_S=DNS_TIMEOUT_S,
        # All the mail comes from one sender: above the flood limit it would be held
        # with the flood reason, and this test checks the authentication reason.
        OPTMSG_LIMITS__SENDER_MESSAGES=str(MESSAGES * 10),
    )
    settings = deployment.load_settings()
    assert settings.smtp.enabled, "the dev config must serve SMTP"
    token = create_user_with_trusted_sender(deployment, deadline)
    emails = build_emails()
    server = GatewayServer(deployment)
    try:
        server.start(deadline)
        started = time.monotonic()
        log = send_all_with_a_crash(
            deployment.smtp_address, emails, server, deployment.db_path, deadline
        )
        sent = time.monotonic()
        wait_until_spool_processed(deployment.db_path, server, deadline)
        processed = time.monotonic()
        # The scenario only proves something if the kill landed in the middle of the traffic.
        assert log.killed_exit_code == -signal.SIGKILL, f"exit status {log.killed_exit_code}"
        assert len(log.acknowledged_before_kill) < MESSAGES, "the kill came after all traffic"
        assert log.failed_attempts > 0, "no client noticed the gateway going down"
        assert server.starts == 2
        print(
            f"\nsmtp crash run: sent in {sent - started:.1f} s, spool processed "
            f"{processed - sent:.1f} s later; {len(log.acknowledged_before_kill)} acknowledged "
            f"before the kill, {log.pending_after_kill} raw rows left pending by it; "
            f"{log.failed_attempts} failed attempts, {log.unanswered_data} "
            f"of them with DATA unanswered"
        )
        yield CrashRun(
            emails={email.message_id: email for email in emails},
            log=log,
            db_path=deployment.db_path,
            base_url=settings.http.public_url,
            token=token,
            send_seconds=sent - started,
            processing_seconds=processed - sent,
        )
    finally:
        server.stop()


def duplicated(values: list[Any]) -> dict[Any, int]:
    return {value: n for value, n in Counter(values).items() if n > 1}


def number_from_text(text: str) -> int | None:
    """The ``n`` of the body line ``durability check <n>``, or None without one."""
    for line in text.splitlines():
        if line.startswith(MARKER) and line.removeprefix(MARKER).isdigit():
            return int(line.removeprefix(MARKER))
    return None


# --- the tests --------------------------------------------------------------------------------


def test_no_email_was_refused_or_abandoned(crash_run: CrashRun) -> None:
    assert not crash_run.log.refused, f"5xx replies: {list(crash_run.log.refused.items())[:5]}"
    assert crash_run.log.acknowledged == set(crash_run.emails), "clients gave up"


def test_every_acknowledged_email_is_stored_exactly_once(crash_run: CrashRun) -> None:
    stored = read_stored_emails(crash_run.db_path)
    counts = Counter(m.message_id for m in stored if m.bridge == "email")
    lost = {mid for mid in crash_run.log.acknowledged if counts[mid] == 0}
    lost_before_kill = lost & crash_run.log.acknowledged_before_kill
    assert not lost, (
        f"{len(lost)} acknowledged emails are not stored ({len(lost_before_kill)} of them "
        f"acknowledged before the kill), e.g. {sorted(lost)[:5]}"
    )
    twice = {mid: counts[mid] for mid in crash_run.log.acknowledged if counts[mid] > 1}
    assert not twice, f"{len(twice)} acknowledged emails stored more than once: {twice}"


def test_resent_emails_are_never_stored_twice(crash_run: CrashRun) -> None:
    stored = read_stored_emails(crash_run.db_path)
    assert {m.bridge for m in stored} == {"email"}
    message_ids = [m.message_id for m in stored]
    assert not duplicated(message_ids), f"stored twice: {duplicated(message_ids)}"
    unexpected = set(message_ids) - set(crash_run.emails)
    assert not unexpected, f"rows that no client sent, e.g. {sorted(map(str, unexpected))[:5]}"
    numbers = [number_from_text(m.text) for m in stored]
    assert not duplicated(numbers), f"markers stored twice: {duplicated(numbers)}"
    assert len(stored) == MESSAGES


def test_text_holds_the_marker_of_its_own_email(crash_run: CrashRun) -> None:
    stored = read_stored_emails(crash_run.db_path)
    mismatched = [
        (m.id, m.message_id, m.text[:60])
        for m in stored
        if m.message_id is None or number_from_text(m.text) != crash_run.emails[m.message_id].number
    ]
    assert not mismatched, f"{len(mismatched)} rows without their marker, e.g. {mismatched[:3]}"
    assert {(m.sender, m.recipient) for m in stored} == {(SENDER, RECIPIENT)}


def test_unauthenticated_emails_of_a_trusted_sender_are_quarantined(crash_run: CrashRun) -> None:
    stored = read_stored_emails(crash_run.db_path)
    misfiled = [(m.id, m.folder, m.reason) for m in stored if m.folder != "quarantine"]
    assert not misfiled, f"{len(misfiled)} emails not in quarantine, e.g. {misfiled[:3]}"
    reasons = Counter(m.reason for m in stored)
    assert all("authentication" in reason for reason in reasons), reasons


def test_raw_spool_is_fully_processed_and_resends_were_identical(crash_run: CrashRun) -> None:
    rows = read_raw_rows(crash_run.db_path)
    assert {row.state for row in rows} == {"done"}
    assert {row.message_id for row in rows} == set(crash_run.emails)
    # Dedup keys on the checksum: a resend only proves something if its bytes were equal.
    checksums: dict[str | None, set[str]] = {}
    for row in rows:
        checksums.setdefault(row.message_id, set()).add(row.sha256)
    differing = {mid: sums for mid, sums in checksums.items() if len(sums) > 1}
    assert not differing, f"resends arrived with different bytes: {list(differing)[:5]}"
    print(f"\nraw spool: {len(rows)} rows for {MESSAGES} emails")


async def list_folder(
    session: aiohttp.ClientSession, base_url: str, folder: str
) -> list[dict[str, Any]]:
    """Every message of one folder through the client API, following the ``next`` cursor."""
    items: list[dict[str, Any]] = []
    query = {"folder": folder, "limit": str(PAGE_LIMIT)}
    for _ in range(MESSAGES // PAGE_LIMIT + 2):
        async with session.get(f"{base_url}/api/v1/messages", params=query) as resp:
            assert resp.status == 200, f"GET {resp.url}: HTTP {resp.status} {await resp.text()}"
            page = await resp.json()
        items.extend(page["items"])
        if page["next"] is None:
            return items
        query = {"folder": folder, "cursor": page["next"], "limit": str(PAGE_LIMIT)}
    pytest.fail(f"the {folder} listing did not end after {len(items)} items", pytrace=False)


async def test_client_api_lists_each_email_once_in_quarantine(crash_run: CrashRun) -> None:
    auth = {"Authorization": f"Bearer {crash_run.token}"}
    async with asyncio.timeout(API_BUDGET_S), aiohttp.ClientSession(headers=auth) as session:
        quarantined = await list_folder(session, crash_run.base_url, "quarantine")
        inbox = await list_folder(session, crash_run.base_url, "inbox")
    assert not inbox, f"{len(inbox)} emails in the inbox"
    numbers = [number_from_text(item["text"]) for item in quarantined]
    assert not duplicated(numbers), f"listed twice: {duplicated(numbers)}"
    assert len(quarantined) == MESSAGES
    assert set(numbers) == {email.number for email in crash_run.emails.values()}
    assert {(item["folder"], item["bridge"], item["channel"]) for item in quarantined} == {
        ("quarantine", "email", "email")
    }
