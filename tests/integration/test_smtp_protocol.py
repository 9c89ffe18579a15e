"""The SMTP protocol layer against a real aiosmtpd server on the test's event loop.

Clients run in a thread (``asyncio.to_thread``): smtplib for well-behaved
conversations, raw sockets for pipelining and protocol abuse. ``route`` and
``accept`` are in-test doubles of the gateway's own interfaces.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway import smtp
from gateway.smtp import (
    GatewayHandler,
    ReceivedEmail,
    SmtpLimits,
    header_size,
    normalize_line_endings,
    start_smtp_server,
)
from inbox.errors import StoreUnavailable
from tests.conftest import missing_service

HOSTNAME = "mx.example.com"
ALICE = "alice@example.com"
BOB = "bob@example.com"
SENDER = "sender@example.org"
MESSAGE = b"From: sender@example.org\r\nSubject: hello\r\n\r\nHello there.\r\n"


@dataclass
class Mailbox:
    """Test double of the gateway's ``route`` and ``accept``."""

    users: dict[str, str] = field(
        default_factory=lambda: {
            ALICE: ALICE,
            "alice+tag@example.com": ALICE,
            BOB: BOB,
            "ümlaut@example.com": "ümlaut@example.com",
            f"postmaster@{HOSTNAME}": BOB,
        }
    )
    received: list[ReceivedEmail] = field(default_factory=list)
    route_error: Exception | None = None
    store_error: Exception | None = None
    gate: asyncio.Event | None = None
    storing: asyncio.Event = field(default_factory=asyncio.Event)

    async def route(self, address: str) -> str | None:
        if self.route_error is not None:
            raise self.route_error
        return self.users.get(address.lower())

    async def accept(self, email: ReceivedEmail) -> None:
        self.storing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.store_error is not None:
            raise self.store_error
        self.received.append(email)


@dataclass
class Gateway:
    port: int
    mailbox: Mailbox

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example.org", timeout=10)

    def raw(self) -> Raw:
        return Raw(socket.create_connection(("127.0.0.1", self.port), timeout=10))


class Raw:
    """A socket speaking SMTP byte for byte; replies are read one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buffer = b""
        self.banner = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One (possibly multi-line) reply, lines joined by newlines."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"server closed; partial reply {lines!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode("utf-8"))
            if line[3:4] != b"-":
                return "\n".join(lines)

    def command(self, line: str | bytes) -> str:
        self.send((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def envelope(self, *recipients: str) -> None:
        assert self.command("EHLO client.example.org").startswith("250")
        assert self.command(f"MAIL FROM:<{SENDER}>").startswith("250 ")
        for rcpt in recipients:
            assert self.command(f"RCPT TO:<{rcpt}>").startswith("250 ")

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        self.buffer = b""
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway() -> AsyncIterator[StartGateway]:
    servers: list[asyncio.base_events.Server] = []

    async def start(
        limits: SmtpLimits | None = None,
        tls_context: ssl.SSLContext | None = None,
        mailbox: Mailbox | None = None,
    ) -> Gateway:
        box = mailbox or Mailbox()
        server = await start_smtp_server(
            "127.0.0.1",
            0,
            hostname=HOSTNAME,
            limits=limits or SmtpLimits(max_message_bytes=64 * 1024),
            route=box.route,
            accept=box.accept,
            tls_context=tls_context,
        )
        servers.append(server)
        return Gateway(server.sockets[0].getsockname()[1], box)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        # Skipped locally with this reason; fails in CI (OPTMSG_REQUIRE_SERVICES=1).
        missing_service("openssl", "needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={HOSTNAME}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def code(reply: tuple[int, bytes]) -> str:
    """``(250, b'2.1.5 OK')`` -> ``'250 2.1.5 OK'``."""
    return f"{reply[0]} {reply[1].decode('utf-8')}"


async def run(fn: Callable[[], object]) -> None:
    await asyncio.to_thread(fn)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- EHLO and the session -------------------------------------------------------------


async def test_ehlo_advertises_size_8bitmime_smtputf8_pipelining_and_no_auth(
    gateway: StartGateway,
) -> None:
    gw = await gateway(SmtpLimits(max_message_bytes=123_456))

    def conversation() -> None:
        with gw.smtp() as s:
            reply = s.ehlo()
            assert reply[0] == 250
            assert reply[1].decode().splitlines()[0] == HOSTNAME
            features = s.esmtp_features
            assert features["size"] == "123456"
            assert {"8bitmime", "smtputf8", "pipelining"} <= features.keys()
            assert "starttls" not in features  # no certificate configured
            assert "auth" not in features
            assert code(s.docmd("AUTH", "PLAIN AGZvbwBiYXI=")) == (
                "503 5.5.1 Error: authentication not enabled"
            )

    await run(conversation)


async def test_banner_names_host_but_not_software(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            assert raw.banner == f"220 {HOSTNAME} ESMTP"
            assert raw.command("QUIT") == "221 2.0.0 Bye"

    await run(conversation)


async def test_helo_client_can_deliver(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            assert raw.command("HELO old.example.org") == f"250 {HOSTNAME}"
            assert raw.command(f"MAIL FROM:<{SENDER}>") == "250 2.1.0 Ok"
            assert raw.command(f"RCPT TO:<{ALICE}>") == "250 2.1.5 OK"
            assert raw.command("DATA").startswith("354")
            assert raw.command(MESSAGE + b".") == "250 2.0.0 Ok: queued"

    await run(conversation)
    (email,) = gw.mailbox.received
    assert email.helo == "old.example.org"
    assert email.peer_ip == "127.0.0.1"
    assert (email.mail_from, email.recipients, email.data) == (SENDER, (ALICE,), MESSAGE)


# --- RCPT -----------------------------------------------------------------------------


async def test_unknown_recipient_is_refused_while_another_is_accepted(
    gateway: StartGateway,
) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            assert code(s.mail(SENDER)) == "250 2.1.0 Ok"
            assert code(s.rcpt("Alice@Example.COM")) == "250 2.1.5 OK"
            assert code(s.rcpt("nobody@example.com")) == (
                "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
            )
            assert code(s.rcpt(BOB)) == "250 2.1.5 OK"
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    (email,) = gw.mailbox.received
    assert email.recipients == (ALICE, BOB)  # canonical, as route returned them
    assert email.mail_from == SENDER
    assert email.helo == "client.example.org"
    assert email.data == MESSAGE


async def test_two_addresses_of_one_user_give_one_recipient(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)
            assert code(s.rcpt(ALICE)) == "250 2.1.5 OK"
            assert code(s.rcpt("alice+tag@example.com")) == "250 2.1.5 OK"
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.recipients for e in gw.mailbox.received] == [(ALICE,)]


@pytest.mark.parametrize(
    "rcpt",
    [
        "RCPT TO:<no-at-sign>",
        'RCPT TO:<"quoted local"@example.com>',
        "RCPT TO:<a..b@example.com>",
        "RCPT TO:<alice@-bad-.example>",
        "RCPT TO:<alice@@example.com>",
    ],
)
async def test_recipient_that_does_not_parse_is_a_syntax_error(
    gateway: StartGateway, rcpt: str
) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.envelope()
            reply = raw.command(rcpt)
            assert reply.startswith("501 5.1.3 "), reply
            assert raw.command("DATA").startswith("554 5.5.1")

    await run(conversation)


async def test_postmaster_without_domain_means_ours(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.envelope()
            assert raw.command("RCPT TO:<Postmaster>") == "250 2.1.5 OK"

    await run(conversation)


async def test_too_many_recipients(gateway: StartGateway) -> None:
    gw = await gateway(SmtpLimits(max_message_bytes=64 * 1024, max_recipients=2))

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)
            assert code(s.rcpt(ALICE)) == "250 2.1.5 OK"
            assert code(s.rcpt(BOB)) == "250 2.1.5 OK"
            assert code(s.rcpt(f"postmaster@{HOSTNAME}")) == "452 4.5.3 Error: too many recipients"
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.recipients for e in gw.mailbox.received] == [(ALICE, BOB)]


@pytest.mark.parametrize("error", [StoreUnavailable("db down"), RuntimeError("secret detail")])
async def test_route_failure_is_temporary(gateway: StartGateway, error: Exception) -> None:
    gw = await gateway()
    gw.mailbox.route_error = error

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)
            reply = code(s.rcpt(ALICE))
            assert reply.startswith("451 4.3.0 "), reply
            assert "secret" not in reply and "db down" not in reply

    await run(conversation)


# --- DATA -----------------------------------------------------------------------------


async def test_data_without_an_accepted_recipient(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.envelope()  # EHLO and MAIL, no RCPT
            assert raw.command("DATA") == "554 5.5.1 Error: no valid recipients"
            assert raw.command("RCPT TO:<nobody@example.com>").startswith("550 5.1.1")
            assert raw.command("DATA") == "554 5.5.1 Error: no valid recipients"
            # The session goes on: a valid recipient after all, then DATA.
            assert raw.command(f"RCPT TO:<{ALICE}>") == "250 2.1.5 OK"
            assert raw.command("DATA").startswith("354")
            assert raw.command(MESSAGE + b".") == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert len(gw.mailbox.received) == 1


async def test_data_before_mail_or_rcpt(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            assert raw.command("DATA") == "503 Error: send HELO first"
            raw.command("EHLO client.example.org")
            assert raw.command("DATA") == "503 5.5.1 Error: need RCPT command"
            assert raw.command(f"RCPT TO:<{ALICE}>") == "503 5.5.1 Error: need MAIL command"

    await run(conversation)


async def test_declared_size_over_the_limit_is_refused_at_mail(gateway: StartGateway) -> None:
    gw = await gateway(SmtpLimits(max_message_bytes=10_000))

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            over = code(s.mail(SENDER, ["SIZE=10001"]))
            assert over == "552 5.3.4 Message size exceeds fixed limit"
            assert code(s.mail(SENDER, ["SIZE=10000"])) == "250 2.1.0 Ok"

    await run(conversation)


async def test_data_over_the_limit_is_refused_and_nothing_stored(gateway: StartGateway) -> None:
    gw = await gateway(SmtpLimits(max_message_bytes=10_000))
    big = MESSAGE + (b"x" * 70 + b"\r\n") * 200

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)  # no SIZE: the client did not say
            s.rcpt(ALICE)
            assert code(s.data(big)) == "552 5.3.4 Message size exceeds fixed limit"
            # The transaction is over; the connection still serves the next one.
            s.mail(SENDER)
            s.rcpt(ALICE)
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.data for e in gw.mailbox.received] == [MESSAGE]


async def test_header_block_over_the_limit_is_refused(gateway: StartGateway) -> None:
    limit = 2048
    gw = await gateway(SmtpLimits(max_message_bytes=64 * 1024, max_header_bytes=limit))
    fill = b"".join(b"X-Filler-%02d: %s\r\n" % (i, b"y" * 60) for i in range(25))
    at_limit = fill + b"Subject: " + b"s" * (limit - len(fill) - 11) + b"\r\n"
    assert header_size(at_limit + b"\r\nbody\r\n") == limit
    over = b"X" + at_limit

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            # Over by one octet, with a body and without one (all header).
            for message in (over + b"\r\nbody\r\n", over):
                s.mail(SENDER)
                s.rcpt(ALICE)
                reply = code(s.data(message))
                assert reply == "552 5.3.4 Message header size exceeds fixed limit"
            s.mail(SENDER)
            s.rcpt(ALICE)
            assert code(s.data(at_limit + b"\r\n" + b"b" * 5000 + b"\r\n")) == (
                "250 2.0.0 Ok: queued"
            )

    await run(conversation)
    assert len(gw.mailbox.received) == 1
    assert header_size(gw.mailbox.received[0].data) == limit


async def test_lines_longer_than_998_are_accepted_up_to_max_line_bytes(
    gateway: StartGateway,
) -> None:
    gw = await gateway(SmtpLimits(max_message_bytes=1024 * 1024))
    long_line = b"Subject: long\r\n\r\n" + b"a" * 5000 + b"\r\n"

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)
            s.rcpt(ALICE)
            assert code(s.data(long_line)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.data for e in gw.mailbox.received] == [long_line]


async def test_line_over_max_line_bytes_is_refused_and_nothing_stored(
    gateway: StartGateway,
) -> None:
    limit = 10_000
    gw = await gateway(SmtpLimits(max_message_bytes=1024 * 1024, max_line_bytes=limit))
    # A line of exactly the limit passes: counted as sent, CRLF excluded, so a line
    # of limit - 1 octets that starts with "." counts its transparency dot.
    at_limit = b"Subject: edge\r\n\r\n" + b"b" * limit + b"\r\n"
    dotted = b"Subject: dot\r\n\r\n." + b"d" * (limit - 2) + b"\r\n"  # ".." on the wire

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            for too_long in (limit + 1, 3 * limit):
                s.mail(SENDER)
                s.rcpt(ALICE)
                reply = code(s.data(b"Subject: long\r\n\r\n" + b"a" * too_long + b"\r\n"))
                assert reply == "552 5.3.4 Message line length exceeds fixed limit"
            for message in (at_limit, dotted):
                s.mail(SENDER)
                s.rcpt(ALICE)
                assert code(s.data(message)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.data for e in gw.mailbox.received] == [at_limit, dotted]


async def test_command_line_too_long_is_refused(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.command("EHLO client.example.org")
            reply = raw.command("MAIL FROM:<" + "a" * 2000 + "@example.org>")
            assert reply.startswith("500 ")
            assert raw.command("NOOP") == "250 OK"

    await run(conversation)


# Fake end-of-data sequences used for SMTP smuggling (SEC Consult, 2023). A sender's
# relay that passes them through must never make us end DATA early.
SMUGGLING_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\n.\r"]


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDINGS, ids=repr)
async def test_smuggled_end_of_data_does_not_end_the_message(
    gateway: StartGateway, fake_end: bytes
) -> None:
    gw = await gateway()
    smuggled = (
        b"MAIL FROM:<evil@example.net>\r\n"
        b"RCPT TO:<bob@example.com>\r\n"
        b"DATA\r\n"
        b"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nPay now."
    )
    payload = b"From: sender@example.org\r\nSubject: outer\r\n\r\nouter body" + fake_end + smuggled

    def conversation() -> str:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            assert raw.command("DATA").startswith("354")
            raw.send(payload + b"\r\n.\r\nQUIT\r\n")
            return raw.rest().decode()

    replies = (await asyncio.to_thread(conversation)).splitlines()
    # One reply for the one message, then QUIT's: the smuggled MAIL/RCPT/DATA were data.
    assert replies == ["250 2.0.0 Ok: queued", "221 2.0.0 Bye"]
    (email,) = gw.mailbox.received
    assert email.recipients == (ALICE,)
    assert b"MAIL FROM:<evil@example.net>\r\n" in email.data
    assert b"Pay now." in email.data
    # Every line ending is CRLF now: nothing downstream can read the fake end as one.
    assert email.data.count(b"\r") == email.data.count(b"\n") == email.data.count(b"\r\n")
    assert email.data.endswith(b"Pay now.\r\n")


async def test_bare_lf_message_is_normalised_to_crlf(gateway: StartGateway) -> None:
    gw = await gateway()
    bare = b"From: sender@example.org\nSubject: unix\n\nline one\rline two\r\n"

    def conversation() -> None:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            assert raw.command("DATA").startswith("354")
            assert raw.command(bare + b".") == "250 2.0.0 Ok: queued"

    await run(conversation)
    (email,) = gw.mailbox.received
    assert email.data == (
        b"From: sender@example.org\r\nSubject: unix\r\n\r\nline one\r\nline two\r\n"
    )


async def test_dot_stuffing_is_undone(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            raw.command("DATA")
            assert raw.command(b"Subject: dots\r\n\r\n..\r\n...x\r\n.") == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert gw.mailbox.received[0].data == b"Subject: dots\r\n\r\n.\r\n..x\r\n"


@pytest.mark.parametrize(
    "error", [StoreUnavailable("disk full at /var/spool"), RuntimeError("secret detail")]
)
async def test_store_failure_is_451_and_the_connection_still_works(
    gateway: StartGateway, error: Exception
) -> None:
    gw = await gateway()
    gw.mailbox.store_error = error

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            s.mail(SENDER)
            s.rcpt(ALICE)
            reply = code(s.data(MESSAGE))
            assert reply == "451 4.3.0 Error: queue file write error"
            gw.mailbox.store_error = None
            assert code(s.mail(SENDER)) == "250 2.1.0 Ok"  # the transaction was reset
            s.rcpt(BOB)
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    assert [e.recipients for e in gw.mailbox.received] == [(BOB,)]


async def test_unexpected_handler_error_is_451_without_detail(
    gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> str:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(GatewayHandler, "handle_MAIL", broken)
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.command("EHLO client.example.org")
            reply = raw.command(f"MAIL FROM:<{SENDER}>")
            assert reply == "451 4.3.0 Error: internal error, try again later"
            assert raw.command("NOOP") == "250 OK"  # still serving

    await run(conversation)


async def test_disconnect_mid_data_stores_nothing(gateway: StartGateway) -> None:
    gw = await gateway()

    def cut_off() -> None:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            assert raw.command("DATA").startswith("354")
            raw.send(b"Subject: half\r\n\r\nthe first half of")

    await run(cut_off)
    await asyncio.sleep(0.1)  # let the server see the EOF

    def next_client() -> None:
        with gw.smtp() as s:
            assert s.sendmail(SENDER, [BOB], MESSAGE) == {}

    await run(next_client)
    assert [e.recipients for e in gw.mailbox.received] == [(BOB,)]


async def test_disconnect_while_storing_does_not_interrupt_the_store(
    gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.smtp")
    gate = asyncio.Event()
    gw = await gateway(mailbox=Mailbox(gate=gate))

    def send_and_hang_up() -> None:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            raw.command("DATA")
            raw.send(MESSAGE + b".\r\n")

    await run(send_and_hang_up)
    await asyncio.wait_for(gw.mailbox.storing.wait(), 5)
    # The server sees the EOF while accept() is still waiting...
    await eventually(lambda: "disconnected while its message was being stored" in caplog.text)
    assert gw.mailbox.received == []
    gate.set()  # ...and the store runs to its end all the same.
    await eventually(lambda: len(gw.mailbox.received) == 1)
    await eventually(lambda: "stored all the same" in caplog.text)


async def test_slow_data_is_not_cut_off_but_an_idle_client_is(
    gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp, "IDLE_TIMEOUT_S", 0.5)
    gw = await gateway()

    def slow_sender() -> None:
        with gw.raw() as raw:
            raw.envelope(ALICE)
            assert raw.command("DATA").startswith("354")
            # 1.2 s in all, more than the timeout, but never 0.5 s without a byte.
            for _ in range(8):
                raw.send(b"X-Slow: trickle\r\n")
                time.sleep(0.15)
            assert raw.command(b"\r\nbody\r\n.") == "250 2.0.0 Ok: queued"

    def idle_client() -> None:
        with gw.raw() as raw:
            raw.command("EHLO client.example.org")
            time.sleep(1.0)
            assert raw.rest() == b""  # closed by the server

    await run(slow_sender)
    assert len(gw.mailbox.received) == 1
    await run(idle_client)


# --- addresses ------------------------------------------------------------------------


async def test_smtputf8_addresses_and_8bit_data(gateway: StartGateway) -> None:
    gw = await gateway()
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße, raw 8-bit.\r\n".encode()
    body += b"not even utf-8: \xff\xfe\r\n"

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            assert code(s.mail("ü@example.com", ["SMTPUTF8", "BODY=8BITMIME"])) == "250 2.1.0 Ok"
            assert code(s.rcpt("ümlaut@example.com")) == "250 2.1.5 OK"
            assert code(s.data(body)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    (email,) = gw.mailbox.received
    assert (email.mail_from, email.recipients) == ("ü@example.com", ("ümlaut@example.com",))
    assert email.data == body


async def test_unicode_address_without_smtputf8_is_refused(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.raw() as raw:
            raw.command("EHLO client.example.org")
            assert raw.command("MAIL FROM:<ü@example.com>").startswith("553 5.6.7 ")
            assert raw.command(f"MAIL FROM:<{SENDER}>") == "250 2.1.0 Ok"
            assert raw.command("RCPT TO:<ümlaut@example.com>").startswith("553 5.6.7 ")
            # Not UTF-8 at all: a syntax error, not a lookup.
            assert raw.command(b"RCPT TO:<\xff@example.com>").startswith("501 5.1.3 ")

    await run(conversation)


async def test_null_reverse_path(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            assert code(s.mail("")) == "250 2.1.0 Ok"  # smtplib sends MAIL FROM:<>
            assert code(s.rcpt(ALICE)) == "250 2.1.5 OK"
            assert code(s.data(MESSAGE)) == "250 2.0.0 Ok: queued"

    await run(conversation)
    (email,) = gw.mailbox.received
    assert email.mail_from == ""


# --- pipelining -----------------------------------------------------------------------


async def test_pipelined_mail_rcpt_data_in_one_write(gateway: StartGateway) -> None:
    gw = await gateway()

    def conversation() -> list[str]:
        with gw.raw() as raw:
            assert "PIPELINING" in raw.command("EHLO client.example.org")
            raw.send(
                f"MAIL FROM:<{SENDER}> BODY=8BITMIME\r\n"
                f"RCPT TO:<{ALICE}>\r\n"
                "RCPT TO:<nobody@example.com>\r\n"
                f"RCPT TO:<{BOB}>\r\n"
                "DATA\r\n".encode()
            )
            replies = [raw.reply() for _ in range(5)]
            raw.send(MESSAGE + b".\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n")
            replies += [raw.reply() for _ in range(4)]
            return replies

    replies = await asyncio.to_thread(conversation)
    assert replies[:3] == ["250 2.1.0 Ok", "250 2.1.5 OK", replies[2]]
    assert replies[2].startswith("550 5.1.1 <nobody@example.com>")
    assert replies[3:5] == ["250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>"]
    assert replies[5:] == [
        "250 2.0.0 Ok: queued",
        "250 2.1.0 Ok",
        replies[7],
        "554 5.5.1 Error: no valid recipients",
    ]
    assert [e.recipients for e in gw.mailbox.received] == [(ALICE, BOB)]


# --- STARTTLS -------------------------------------------------------------------------


async def test_starttls_is_offered_and_delivers(
    gateway: StartGateway, server_tls: ssl.SSLContext
) -> None:
    gw = await gateway(tls_context=server_tls)

    def conversation() -> None:
        with gw.smtp() as s:
            s.ehlo()
            assert "starttls" in s.esmtp_features
            assert code(s.starttls(context=client_tls()))[:3] == "220"
            s.ehlo()
            assert "starttls" not in s.esmtp_features
            assert "auth" not in s.esmtp_features  # aiosmtpd would offer it over TLS
            assert code(s.docmd("AUTH", "PLAIN AGZvbwBiYXI=")) == (
                "503 5.5.1 Error: authentication not enabled"
            )
            assert s.sendmail(SENDER, [ALICE], MESSAGE) == {}

    await run(conversation)
    assert len(gw.mailbox.received) == 1


async def test_plaintext_pipelined_after_starttls_is_ignored(
    gateway: StartGateway, server_tls: ssl.SSLContext
) -> None:
    gw = await gateway(tls_context=server_tls)

    def conversation() -> None:
        with gw.raw() as raw:
            raw.command("EHLO client.example.org")
            # A man in the middle appends commands to the cleartext STARTTLS.
            raw.send(
                b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@example.net>\r\n"
                b"RCPT TO:<bob@example.com>\r\n"
            )
            assert raw.reply().startswith("220")
            assert raw.buffer == b""
            raw.sock = client_tls().wrap_socket(raw.sock, server_hostname=HOSTNAME)
            # Had the injected EHLO and MAIL run, this RCPT would be accepted.
            assert raw.command(f"RCPT TO:<{ALICE}>") == "503 Error: send HELO first"
            raw.envelope(ALICE)
            assert raw.command("DATA").startswith("354")
            assert raw.command(MESSAGE + b".") == "250 2.0.0 Ok: queued"
            raw.command("QUIT")

    await run(conversation)
    (email,) = gw.mailbox.received
    assert (email.mail_from, email.recipients, email.helo) == (
        SENDER,
        (ALICE,),
        "client.example.org",
    )


# --- pure helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),
        (b"a\n\rb", b"a\r\n\r\nb"),
        (b"", b""),
    ],
)
def test_normalize_line_endings(raw: bytes, normal: bytes) -> None:
    assert normalize_line_endings(raw) == normal


def test_header_size() -> None:
    assert header_size(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == len(b"A: 1\r\nB: 2\r\n")
    assert header_size(b"A: 1\r\n") == 6
    assert header_size(b"\r\nbody only\r\n") == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_bytes": 0},
        {"max_message_bytes": 1000, "max_recipients": 0},
        {"max_message_bytes": 1000, "max_line_bytes": 500},
    ],
)
def test_limits_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_"):
        SmtpLimits(**kwargs)
