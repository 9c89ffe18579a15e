"""An acknowledged inbound SMS survives ``kill -9`` of the gateway, and provider retries
never store a message twice (DESIGN.md, "One inbound message" steps 5-6, and the
targets "acknowledged messages lost after kill -9: 0", "duplicates after retries: 0").

One scenario, run once for the module: 20 concurrent clients send 2,000 signed Twilio
inbound-SMS webhooks, half from a sender the user opted in. After a third of them are
acknowledged the gateway is killed with SIGKILL and restarted on the same port; every
client retries each message until it is answered 200, as Twilio retries a connection
failure. The tests then read the SQLite file directly and through the client API.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from config import Settings

from .harness import Deadline, Deployment, GatewayServer, create_deployment

pytestmark = pytest.mark.slow

MESSAGES = 2_000
CLIENTS = 20
KILL_AFTER_ACKNOWLEDGED = MESSAGES // 3
RESTART_PAUSE_S = 0.5
RETRY_PAUSE_S = 0.05
REQUEST_TIMEOUT_S = 5.0
# The scenario and the API check together stay well under 90 s.
SCENARIO_BUDGET_S = 70.0
API_BUDGET_S = 10.0
PAGE_LIMIT = 200

OPTMSG_NUMBER = "+14155550199"
TRUSTED_SENDER = "+14155550100"
TRUSTED_SENDER_AS_TYPED = "(415) 555-0100"
UNKNOWN_SENDER = "+14155550142"
TEXT_PREFIX = "durability check "


@dataclass(frozen=True)
class SignedWebhook:
    sid: str
    expected_folder: str
    body: str
    headers: dict[str, str]


@dataclass
class DeliveryLog:
    acknowledged: set[str] = field(default_factory=set)
    acknowledged_before_kill: frozenset[str] = frozenset()
    failed_attempts: int = 0
    killed_exit_code: int | None = None


@dataclass(frozen=True)
class CrashRun:
    expected_folders: dict[str, str]
    log: DeliveryLog
    db_path: Path
    base_url: str
    token: str


@dataclass(frozen=True)
class StoredMessage:
    id: str
    bridge: str
    external_id: str
    folder: str
    sender: str


# --- building and sending the webhooks --------------------------------------------------------


def webhook_url(settings: Settings) -> str:
    return settings.http.public_url + "/bridges/twilio/sms"


def text_for(sid: str) -> str:
    # The client API does not show the MessageSid, so the text carries it.
    return TEXT_PREFIX + sid


def sid_from_text(text: str) -> str:
    assert text.startswith(TEXT_PREFIX), f"a message this test did not send: {text!r}"
    return text.removeprefix(TEXT_PREFIX)


def build_signed_webhooks(settings: Settings) -> list[SignedWebhook]:
    """2,000 inbound-SMS webhooks with Twilio's 12 fields, alternating trusted and unknown
    senders, each signed by the twilio library itself."""
    twilio = settings.bridges.twilio
    validator = RequestValidator(twilio.auth_token.get_secret_value())
    url = webhook_url(settings)
    webhooks = []
    for i in range(MESSAGES):
        sid = f"SM{i:032x}"
        trusted = i % 2 == 0
        params = {
            "ToCountry": "US",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": text_for(sid),
            "To": OPTMSG_NUMBER,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": twilio.account_sid,
            "From": TRUSTED_SENDER if trusted else UNKNOWN_SENDER,
            "ApiVersion": "2010-04-01",
        }
        headers = {
            "X-Twilio-Signature": validator.compute_signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        folder = "inbox" if trusted else "quarantine"
        webhooks.append(SignedWebhook(sid, folder, urlencode(params), headers))
    return webhooks


async def deliver_until_acknowledged(
    session: aiohttp.ClientSession, url: str, webhook: SignedWebhook, log: DeliveryLog
) -> None:
    """POST one webhook until the gateway answers 200. A connection failure or timeout
    (the gateway is down) is retried like Twilio does; so is a 5xx, counted as a failure."""
    while True:
        try:
            async with session.post(url, data=webhook.body, headers=webhook.headers) as resp:
                answer = await resp.text()
                if resp.status == 200:
                    log.acknowledged.add(webhook.sid)
                    return
                assert resp.status >= 500, (
                    f"the gateway refused {webhook.sid} with HTTP {resp.status}: {answer}"
                )
        except (aiohttp.ClientError, TimeoutError):
            # The gateway is down (killed on purpose) or did not answer: not
            # acknowledged, so resend it, as Twilio retries a connection failure.
            log.failed_attempts += 1
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        log.failed_attempts += 1
        await asyncio.sleep(RETRY_PAUSE_S)


async def run_client(url: str, queue: deque[SignedWebhook], log: DeliveryLog) -> None:
    """One provider connection pool: takes webhooks off the shared queue until it is empty."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while queue:
            await deliver_until_acknowledged(session, url, queue.popleft(), log)


async def kill_and_restart_mid_traffic(
    server: GatewayServer, log: DeliveryLog, deadline: Deadline
) -> None:
    while len(log.acknowledged) < KILL_AFTER_ACKNOWLEDGED:
        await asyncio.sleep(0.005)
    log.acknowledged_before_kill = frozenset(log.acknowledged)
    log.killed_exit_code = server.kill_hard()
    await asyncio.sleep(RESTART_PAUSE_S)
    await asyncio.to_thread(server.start, deadline)


async def send_all_with_a_crash(
    url: str, webhooks: list[SignedWebhook], server: GatewayServer, deadline: Deadline
) -> DeliveryLog:
    log = DeliveryLog()
    queue = deque(webhooks)
    budget = deadline.remaining("sending the webhooks")
    timed_out = False
    try:
        async with asyncio.timeout(budget), asyncio.TaskGroup() as tasks:
            tasks.create_task(kill_and_restart_mid_traffic(server, log, deadline))
            for _ in range(CLIENTS):
                tasks.create_task(run_client(url, queue, log))
    except TimeoutError:
        timed_out = True
    if not timed_out:
        return log
    # Failed outside the handler, so that the report is only our message.
    pytest.fail(
        f"only {len(log.acknowledged)} of {len(webhooks)} webhooks were acknowledged within "
        f"{budget:.0f} s (starts of the gateway: {server.starts}; "
        f"failed attempts: {log.failed_attempts})",
        pytrace=False,
    )


# --- the scenario -----------------------------------------------------------------------------


def create_user_with_trusted_sender(deployment: Deployment, deadline: Deadline) -> tuple[str, str]:
    """Create the user, a client API token and the opt-in; returns (user id, token)."""
    user = deployment.cli(
        *["users", "create", "--first-name", "A", "--last-name", "B", "--dob", "1990-01-01"],
        *["--phone", "+442079460958", "--sms-number", OPTMSG_NUMBER],
        deadline=deadline,
    )
    token = deployment.cli("tokens", "create", user["id"], deadline=deadline)["token"]
    entry = deployment.cli("optin", "add", user["id"], TRUSTED_SENDER_AS_TYPED, deadline=deadline)
    assert entry["address"] == TRUSTED_SENDER, f"the opt-in was stored as {entry['address']}"
    return user["id"], token


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRun]:
    deadline = Deadline(SCENARIO_BUDGET_S)
    deployment = create_deployment(tmp_path_factory.mktemp("crash-durability"), deadline)
    _, token = create_user_with_trusted_sender(deployment, deadline)
    settings = deployment.load_settings()
    webhooks = build_signed_webhooks(settings)
    server = GatewayServer(deployment)
    try:
        server.start(deadline)
        log = asyncio.run(send_all_with_a_crash(webhook_url(settings), webhooks, server, deadline))
        # The scenario only proves something if the kill landed in the middle of the traffic.
        assert log.killed_exit_code == -signal.SIGKILL, f"exit status {log.killed_exit_code}"
        assert len(log.acknowledged_before_kill) < MESSAGES, "the kill came after all traffic"
        assert log.failed_attempts > 0, "no client noticed the gateway going down"
        assert server.starts == 2
        yield CrashRun(
            expected_folders={w.sid: w.expected_folder for w in webhooks},
            log=log,
            db_path=deployment.db_path,
            base_url=settings.http.public_url,
            token=token,
        )
    finally:
        server.stop()


# --- reading back -----------------------------------------------------------------------------


def read_stored_messages(db_path: Path) -> list[StoredMessage]:
    """Every row of the messages table, read straight from the SQLite file."""
    with closing(sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT id, bridge, external_id, folder, sender FROM messages"
        ).fetchall()
    return [StoredMessage(*row) for row in rows]


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


def duplicated(sids: list[str]) -> dict[str, int]:
    return {sid: n for sid, n in Counter(sids).items() if n > 1}


def sids_expected_in(run: CrashRun, folder: str) -> set[str]:
    return {sid for sid, expected in run.expected_folders.items() if expected == folder}


# --- the tests --------------------------------------------------------------------------------


def test_every_acknowledged_message_survives_the_kill(crash_run: CrashRun) -> None:
    stored = read_stored_messages(crash_run.db_path)
    stored_sids = {m.external_id for m in stored if m.bridge == "twilio"}
    lost = crash_run.log.acknowledged - stored_sids
    lost_before_kill = lost & crash_run.log.acknowledged_before_kill
    assert not lost, (
        f"{len(lost)} acknowledged messages are not stored ({len(lost_before_kill)} of them "
        f"acknowledged before the kill), e.g. {sorted(lost)[:5]}"
    )
    assert crash_run.log.acknowledged == set(crash_run.expected_folders), "clients gave up"


def test_retried_messages_are_stored_only_once(crash_run: CrashRun) -> None:
    stored = read_stored_messages(crash_run.db_path)
    sids = [m.external_id for m in stored]
    twice = duplicated(sids)
    assert not twice, f"{len(twice)} MessageSids stored more than once, e.g. {list(twice)[:5]}"
    unexpected = set(sids) - set(crash_run.expected_folders)
    assert not unexpected, f"rows that no webhook asked for, e.g. {sorted(unexpected)[:5]}"
    assert {m.bridge for m in stored} <= {"twilio"}


def test_stored_messages_are_filed_by_sender_trust(crash_run: CrashRun) -> None:
    stored = read_stored_messages(crash_run.db_path)
    misfiled = [m for m in stored if m.folder != crash_run.expected_folders.get(m.external_id)]
    assert not misfiled, f"{len(misfiled)} messages in the wrong folder, e.g. {misfiled[:3]}"
    assert {m.sender for m in stored if m.folder == "inbox"} == {TRUSTED_SENDER}


async def test_client_api_lists_each_message_once_in_its_folder(crash_run: CrashRun) -> None:
    auth = {"Authorization": f"Bearer {crash_run.token}"}
    async with asyncio.timeout(API_BUDGET_S), aiohttp.ClientSession(headers=auth) as session:
        listed = {
            folder: await list_folder(session, crash_run.base_url, folder)
            for folder in ("inbox", "quarantine")
        }
    for folder, items in listed.items():
        sids = [sid_from_text(item["text"]) for item in items]
        assert not duplicated(sids), f"{folder} lists messages twice: {duplicated(sids)}"
        assert {item["folder"] for item in items} <= {folder}
        assert {item["bridge"] for item in items} <= {"twilio"}
        assert set(sids) == sids_expected_in(crash_run, folder), (
            f"{folder}: {len(sids_expected_in(crash_run, folder) - set(sids))} missing, "
            f"{len(set(sids) - sids_expected_in(crash_run, folder))} unexpected"
        )
