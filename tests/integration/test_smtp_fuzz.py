"""Fuzzing the whole MIME-to-message path over a real SMTP connection: smtplib
against the app's SMTP server, through the raw spool, parsing, sender
authentication (DNS from an empty StaticResolver) and the opt-in filter, to rows
in the store.

Every message a client sends either ends stored - one message, in the inbox or
in quarantine, and its raw row done - or is refused with a 4xx/5xx SMTP reply
and leaves nothing behind; and the server keeps serving. The hostile messages
are those of the parser's fuzz test (``tests/unit/test_email_parse_fuzz.py``)
plus some only SMTP sees: oversized headers, lines and messages, and fake
end-of-data sequences. The SMTP limits are set low so that the refusals are
reached by small messages.

One app (and SMTP server) serves all the examples of a test: that is the point
of the "keeps serving" property, and each example is checked against the raw row
it created, so the state earlier examples leave does not matter (hence the
suppressed function_scoped_fixture health check). The runs are bounded and
derandomised.
"""

from __future__ import annotations

import asyncio
import itertools
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridges.dns import StaticResolver
from config import Settings, SmtpSettings
from gateway.app import create_app
from gateway.email_ingest import EmailIngest
from gateway.keys import RUNTIME
from inbox import raw_store
from inbox.addresses import EmailAddress
from inbox.db import Database
from inbox.models import messages_t, raw_messages_t
from optin import trust
from tests.integration.test_email_ingest import BANK, OUR_ADDRESS, create_ada, message
from tests.unit.test_email_parse_fuzz import (
    FOUND_NUL_MEDIA_TYPE,
    FOUND_UTF7_HTML,
    LINE_ENDS,
    charset_messages,
    hostile_messages,
)

Client = TestClient[Any, Any]

# Low limits, so that small messages reach them.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_HEADER_BYTES = 4096
MAX_LINE_BYTES = 4000
SMTP = SmtpSettings(
    enabled=True,
    listen="127.0.0.1:0",
    hostname="mx.optmsg.example",
    max_message_bytes=MAX_MESSAGE_BYTES,
    max_header_bytes=MAX_HEADER_BYTES,
    max_line_bytes=MAX_LINE_BYTES,
    max_mime_depth=4,
    max_mime_parts=12,
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

STORED_FOLDERS = {"inbox", "quarantine"}
# The only refusal a message's content can cause is a size limit (552 5.3.4); the
# server answers a handler crash with 451 4.3.0 and aiosmtpd its own errors with
# 500, so accepting any 4xx/5xx here would hide one.
CONTENT_REFUSALS = {552}


class RawRow(NamedTuple):
    id: str
    state: str
    error: str | None


@dataclass
class Gateway:
    port: int
    db: Database
    email: EmailIngest
    raw_ids: set[str] = field(default_factory=set)  # raw rows seen so far
    serial: itertools.count[int] = field(default_factory=itertools.count)

    def unique(self, raw: bytes) -> bytes:
        """``raw`` made unlike every other example (the store deduplicates by
        Message-ID and checksum): a line of its own after the data."""
        return raw + f"\r\nfuzz-{next(self.serial)}\r\n".encode()

    async def deliver(self, raw: bytes) -> int:
        """Send ``raw`` and wait for its processing; the SMTP reply code (250 when
        accepted). A reply without a code (a dropped connection) fails the test."""
        try:
            refused = await _send(self.port, raw)
        except smtplib.SMTPResponseException as exc:  # MAIL or DATA refused
            code = exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            ((code, _),) = exc.recipients.values()
        else:
            assert refused == {}
            code = 250
        await self.email.drain()
        return code

    def new_raw_rows(self) -> list[RawRow]:
        """The raw rows spooled since the last call."""
        query = sa.select(raw_messages_t.c.id, raw_messages_t.c.state, raw_messages_t.c.error)
        with self.db.read.connect() as conn:
            rows = [RawRow(*row) for row in conn.execute(query) if row.id not in self.raw_ids]
        self.raw_ids.update(row.id for row in rows)
        return rows

    def folders_of(self, raw_id: str) -> list[str]:
        """The folder of each message stored from raw email ``raw_id``."""
        with self.db.read.connect() as conn:
            query = sa.select(messages_t.c.folder).where(messages_t.c.raw_id == raw_id)
            return list(conn.execute(query).scalars())

    def message_count(self) -> int:
        with self.db.read.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(messages_t)).scalar_one()
        return int(count)


async def _send(port: int, raw: bytes) -> dict[str, tuple[int, bytes]]:
    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            return client.sendmail(BANK, [OUR_ADDRESS], raw)

    return await asyncio.to_thread(send)


@pytest.fixture
async def gateway(
    settings: Settings,
    db: Database,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Gateway:
    user_id = create_ada(db)
    trust.add(db, user_id, EmailAddress(BANK))
    app = create_app(settings.model_copy(update={"smtp": SMTP}), resolver=StaticResolver({}))
    await aiohttp_client(app)
    runtime = app[RUNTIME]
    assert runtime.smtp_port is not None and runtime.email is not None
    return Gateway(runtime.smtp_port, db, runtime.email)


# ---------------------------------------------------------------------------
# What only the SMTP layer sees


def _padded(head: bytes, line: bytes, size: int) -> bytes:
    """``head`` and as many copies of ``line`` as take it to at least ``size`` bytes."""
    return head + line * max(0, -(-(size - len(head)) // len(line)))


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    """A message just over one of the SMTP limits (refused), or just within it."""
    slack = draw(st.sampled_from([-100, 100]))
    kind = draw(st.sampled_from(["header", "line", "message"]))
    if kind == "header":  # a header block of many short fields
        start = b"From: " + BANK.encode() + b"\r\n"
        return _padded(start, b"X-Pad: 0123456789\r\n", MAX_HEADER_BYTES + slack) + b"\r\nbody\r\n"
    if kind == "line":
        return message(body="x" * (MAX_LINE_BYTES + slack))
    return _padded(message(), b"y" * 76 + b"\r\n", MAX_MESSAGE_BYTES + slack)


# Sequences that end DATA in some servers (SMTP smuggling): here ordinary content.
FAKE_END_OF_DATA = st.sampled_from(
    [b"\n.\n", b"\r.\r", b"\r\n.\r\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.", b".\r\n", b"\x00.\r\n"]
)


@st.composite
def smuggling(draw: st.DrawFn) -> bytes:
    """A message with fake end-of-data sequences and a second transaction after them."""
    second = b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<" + OUR_ADDRESS.encode() + b">\r\nDATA\r\n"
    cut = draw(FAKE_END_OF_DATA)
    eol = draw(LINE_ENDS)
    return message().rstrip(b"\r\n") + cut + second + b"From: evil@evil.example" + eol + cut


SMTP_MESSAGES = st.one_of(
    hostile_messages(),
    hostile_messages(),
    charset_messages(),
    charset_messages(),
    st.binary(max_size=2000),
    oversized(),
    smuggling(),
)


# ---------------------------------------------------------------------------
# Properties


@settings(FUZZ, max_examples=40)
@given(raw=SMTP_MESSAGES)
@example(raw=FOUND_UTF7_HTML)
@example(raw=FOUND_NUL_MEDIA_TYPE)
async def test_every_message_is_stored_once_or_refused_with_an_smtp_code(
    gateway: Gateway, raw: bytes
) -> None:
    messages_before = gateway.message_count()
    code = await gateway.deliver(gateway.unique(raw))
    rows = gateway.new_raw_rows()
    if code == 250:
        ((raw_id, state, error),) = rows
        assert state == raw_store.DONE, f"raw email {raw_id} left {state} ({error})"
        (folder,) = gateway.folders_of(raw_id)
        assert folder in STORED_FOLDERS
    else:
        assert code in CONTENT_REFUSALS
        assert rows == []
        assert gateway.message_count() == messages_before


@settings(FUZZ, max_examples=8)
@given(raw=SMTP_MESSAGES)
async def test_after_any_hostile_message_a_normal_message_is_still_accepted_and_stored(
    gateway: Gateway, raw: bytes
) -> None:
    await gateway.deliver(gateway.unique(raw))
    gateway.new_raw_rows()
    normal = gateway.unique(message(message_id=f"<{next(gateway.serial)}@bank.example>"))
    assert await gateway.deliver(normal) == 250
    ((raw_id, state, _),) = gateway.new_raw_rows()
    assert state == raw_store.DONE
    assert gateway.folders_of(raw_id) == ["quarantine"]  # trusted sender, unauthenticated
