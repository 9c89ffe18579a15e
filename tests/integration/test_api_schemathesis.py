"""Property-based test of the whole client API with schemathesis: requests generated
from the OpenAPI document the server serves (valid and invalid ones), sent to a real
gateway on a real port, and every response checked: never a 5xx, and always a
status, content type, headers and body the document describes for the operation.

Every operation in the document at run time is tested, with these exceptions:

- operations that answer ``text/event-stream``: the stream does not end, so there is
  no response to validate (the events tests cover them);

Each operation gets a fresh user (messages in every folder, an attachment, trust
entries, contacts, held senders) and a live token, so that an operation that ends
the session (signing out, deleting the account) leaves the others unaffected. Half
of the generated path parameters are replaced by the ids of that user's own objects
(tests.integration.api_operations.FACTORIES), so that operations reach real data and
not only the 404 path.

Bounded: a fixed seed and a few dozen examples per operation (``MAX_EXAMPLES``),
about half a minute in all; raise it locally to search harder.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from schemathesis import checks

from config import Settings
from gateway.app import create_app
from gateway.keys import BLOBS, DATABASE
from gateway.openapi import openapi_document
from inbox import store
from inbox.addresses import E164
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.message import Channel, Inbound
from optin import address_book, trust
from optin.contacts import parse_contacts
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.api_operations import (
    FRIEND,
    Operation,
    Seed,
    operations,
    own_values,
    receive,
)
from tests.integration.helpers import make_user, run_batch

MAX_EXAMPLES = 40
SEED = 20260601
STREAM = "text/event-stream"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _streams(op: dict[str, Any]) -> bool:
    return any(STREAM in r.get("content", {}) for r in op.get("responses", {}).values())


def fuzzable_document() -> dict[str, Any]:
    """The served document without the operations this test cannot call (see above)."""
    doc = openapi_document()
    for item in doc["paths"].values():
        for method in [m for m, op in item.items() if isinstance(op, dict) and _streams(op)]:
            del item[method]
    return doc


schema = schemathesis.openapi.from_dict(
    fuzzable_document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            # The coverage phase alone sends hundreds of boundary cases per
            # operation; the fuzzing phase finds the same classes of fault in bounds.
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    ),
)


@dataclass
class Session:
    token: str
    real: dict[str, str]  # path parameter -> the id of the user's own object


@dataclass
class LiveGateway:
    base_url: str
    db: Database
    blobs: BlobStore
    settings: Settings
    sessions: dict[str, Session] = field(default_factory=dict)


def _serve(settings: Settings, ready: threading.Event, out: dict[str, Any]) -> None:
    """Run the gateway (and a fake Twilio to send to) on this thread's own loop until
    ``out["stop"]`` is set."""

    async def main() -> None:
        async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio:
            live = settings.model_copy(
                update={
                    "bridges": settings.bridges.model_copy(
                        update={
                            "twilio": settings.bridges.twilio.model_copy(
                                update={"api_base_url": twilio.base_url}
                            )
                        }
                    )
                }
            )
            app = create_app(live)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            out.update(
                base_url=f"http://{host}:{port}/api/v1",
                app=app,
                stop=lambda: loop.call_soon_threadsafe(stop.set),
            )
            ready.set()
            await stop.wait()
            await runner.cleanup()

    try:
        asyncio.run(main())
    except BaseException as exc:
        out["error"] = exc
        ready.set()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(tmp, f"sqlite:///{tmp}/optmsg.db")
    ready, out = threading.Event(), {}
    # A daemon: a gateway that fails to stop must not keep the test run alive.
    thread = threading.Thread(
        target=_serve, args=(settings, ready, out), name="gateway", daemon=True
    )
    thread.start()
    assert ready.wait(30), "the gateway did not start"
    if "error" in out:
        raise out["error"]
    app = out["app"]
    try:
        yield LiveGateway(out["base_url"], app[DATABASE], app[BLOBS], settings)
    finally:
        out["stop"]()
        thread.join(30)


_VCARD = b"""BEGIN:VCARD\r
VERSION:3.0\r
FN:Grace Hopper\r
TEL;TYPE=CELL:+1 415 555 0177\r
EMAIL:grace@example.com\r
END:VCARD\r
BEGIN:VCARD\r
VERSION:3.0\r
FN:Alan Turing\r
TEL:+44 20 7946 0018\r
END:VCARD\r
"""

_count = 0


def _new_user(gw: LiveGateway) -> Seed:
    """A user with something in every list the API serves."""
    global _count
    _count += 1
    number = f"+1415555{3000 + _count:04d}"
    user = make_user(gw.db, phone=f"+1415556{3000 + _count:04d}", sms_number=number)
    seed = Seed(gw.db, gw.blobs, user, number)
    trust.add(gw.db, user, E164(FRIEND))
    trust.add(gw.db, user, E164("+14155550166"), trust.TrustVerdict.BLOCKED)
    for i in range(3):
        receive(seed, f"hello {i}")
    receive(seed, "a photo", photo=True)
    stranger = Inbound(
        bridge="twilio",
        external_id="SM" + hashlib.sha256(number.encode()).hexdigest()[:32],
        channel=Channel.SMS,
        sender=E164("+14155550177"),
        recipient=E164(number),
        text="who is this",
        received_at=datetime.now(UTC),
    )
    run_batch(gw.db, [stranger])  # held: the sender is not trusted
    report = parse_contacts(_VCARD, region="US", filename="contacts.vcf")
    address_book.import_contacts(gw.db, user, report, max_contacts=1000)
    return seed


def _session(gw: LiveGateway, case: schemathesis.Case) -> Session:
    """The operation's user, token and own objects, made at its first example."""
    label = case.operation.label
    if label not in gw.sessions:
        seed = _new_user(gw)
        token = store.create_token(gw.db, seed.user_id, "fuzz")[1]
        try:
            real = own_values(_operation(case), seed)
        except LookupError as exc:
            pytest.fail(f"{label}: no factory for the path parameter {exc.args[0]!r}")
        gw.sessions[label] = Session(token, real)
    return gw.sessions[label]


def _operation(case: schemathesis.Case) -> Operation:
    for op in operations(openapi_document()):
        if op.template == case.operation.path and op.method == case.method.lower():
            return op
    raise AssertionError(f"{case.operation.label} is not in the document")


def _coin(case: schemathesis.Case) -> bool:
    """A deterministic half of the cases (by their generated path)."""
    digest = hashlib.sha256(repr(sorted((case.path_parameters or {}).items())).encode())
    return digest.digest()[0] % 2 == 0


@schema.parametrize()
def test_the_api_answers_as_documented(case: schemathesis.Case, live: LiveGateway) -> None:
    session = _session(live, case)
    if session.real and case.path_parameters is not None and _coin(case):
        case.path_parameters = {**case.path_parameters, **session.real}
    case.call_and_validate(
        base_url=live.base_url,
        headers={"Authorization": f"Bearer {session.token}"},
        checks=CHECKS,
        timeout=10,
    )


def test_every_documented_operation_is_fuzzed_but_streams() -> None:
    tested = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    documented = {
        (op.method.upper(), op.template)
        for op in operations(openapi_document())
        if not _streams(op.spec)
    }
    assert tested == documented
    assert tested
