"""Accounts over real HTTP on SQLite and PostgreSQL: sign-up, sign-in by SMS code (the
console sender's output read back; Twilio's fake for the Twilio path), limits, the
authentication log, abuse flags, devices, the profile and a change of number. Every
response is checked against the OpenAPI document."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from config import Settings
from gateway.accounts import build_auth_runtime, flush_token_use
from gateway.app import create_app
from gateway.keys import AUTH
from gateway.openapi import openapi_document
from gateway.ratelimit import MemoryLimiter, RedisLimiter
from inbox import store
from inbox.db import Database
from inbox.models import abuse_flags_t, api_tokens_t, auth_log_t, users_t, verifications_t
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.fakes.twilio_api import FakeTwilio
from tests.integration.helpers import make_user
from tests.integration.openapi_check import Reply, checked_call

Client = TestClient[Any, Any]
DOC = openapi_document()
ADA = "+14155550101"
BOB = "+14155550102"
NEW_NUMBER = "+14155550103"
SIGNUP = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "date_of_birth": "1990-12-10",
    "phone": ADA,
    "referral_code": "FRIEND-42",
}
# Input checks happen before any storage: one database is enough for them.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
_CODE_LINE = re.compile(r"OptMsg code for (\+\d+): (\d{6})")


class Codes:
    """The codes the console sender printed, read from captured standard error."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen: list[tuple[str, str]] = []

    def _read(self) -> None:
        self._seen += _CODE_LINE.findall(self._capsys.readouterr().err)

    def sent_to(self, phone: str) -> list[str]:
        self._read()
        return [code for number, code in self._seen if number == phone]

    def last(self, phone: str) -> str:
        codes = self.sent_to(phone)
        assert codes, f"no code was printed for {phone}"
        return codes[-1]


@pytest.fixture
def codes(capsys: pytest.CaptureFixture[str]) -> Codes:
    return Codes(capsys)


MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_client(
    tmp_path: Path, db_url: str, db: Database, aiohttp_client: Callable[..., Awaitable[Client]]
) -> MakeClient:
    """A client of an app on the test's database, with settings overrides by section."""

    async def make(**overrides: Any) -> Client:
        return await aiohttp_client(create_app(make_settings(tmp_path, db_url, **overrides)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


async def call(client: Client, method: str, path: str, **kwargs: Any) -> Reply:
    return await checked_call(client, DOC, method, path, **kwargs)


async def sign_up(client: Client, codes: Codes, form: dict[str, Any] | None = None) -> Reply:
    form = form or SIGNUP
    started = await call(client, "POST", "/auth/signup", json=form)
    assert started.status == 202, started.body
    code = codes.last(form["phone"])
    return await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": started.body["verification_id"], "code": code, "device": "Pixel"},
    )


async def log_in(client: Client, codes: Codes, phone: str, device: str = "Laptop") -> Reply:
    started = await call(client, "POST", "/auth/login", json={"phone": phone})
    assert started.status == 202, started.body
    return await call(
        client,
        "POST",
        "/auth/verify",
        json={
            "verification_id": started.body["verification_id"],
            "code": codes.last(phone),
            "device": device,
        },
    )


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def rows(db: Database, table: Any, *where: Any) -> list[Any]:
    with db.read.connect() as conn:
        return list(conn.execute(sa.select(table).where(*where)))


# --- sign-up and sign-in ------------------------------------------------------------------


async def test_sign_up_then_verify_gives_a_working_token(
    client: Client, codes: Codes, db: Database
) -> None:
    signed = await sign_up(client, codes)
    assert signed.status == 201
    assert signed.body["created"] is True
    user = signed.body["user"]
    assert (user["first_name"], user["last_name"], user["date_of_birth"], user["phone"]) == (
        "Ada",
        "Lovelace",
        "1990-12-10",
        ADA,
    )
    assert user["referral_code"] == "FRIEND-42" and user["region"] == "US"
    token = signed.body["token"]
    assert token.startswith(store.TOKEN_PREFIX)
    account = await call(client, "GET", "/account", token=token)
    assert account.status == 200 and account.body == user
    assert (await call(client, "GET", "/messages", token=token)).status == 200
    # The code and the form are not kept once used; the token only as a hash.
    (verification,) = rows(db, verifications_t)
    assert verification.consumed_at is not None and verification.details is None
    assert "$argon2id$" in verification.code_hash
    (stored,) = rows(db, api_tokens_t)
    assert stored.token_hash != token and stored.name == "Pixel"


async def test_log_in_signs_in_to_the_existing_account(client: Client, codes: Codes) -> None:
    first = await sign_up(client, codes)
    second = await log_in(client, codes, ADA)
    assert second.status == 201
    assert second.body["created"] is False
    assert second.body["user"]["id"] == first.body["user"]["id"]
    assert second.body["token"] != first.body["token"]


async def test_sign_up_for_a_registered_number_signs_in_without_changing_it(
    client: Client, codes: Codes
) -> None:
    first = await sign_up(client, codes)
    again = await sign_up(client, codes, SIGNUP | {"first_name": "Eve"})
    assert again.status == 201 and again.body["created"] is False
    assert again.body["user"]["id"] == first.body["user"]["id"]
    assert again.body["user"]["first_name"] == "Ada"


async def test_log_in_for_an_unknown_number_answers_like_a_known_one(
    client: Client, codes: Codes
) -> None:
    await sign_up(client, codes)
    known = await call(client, "POST", "/auth/login", json={"phone": ADA})
    unknown = await call(client, "POST", "/auth/login", json={"phone": BOB})
    assert known.status == unknown.status == 202
    assert set(known.body) == set(unknown.body) == {"verification_id", "expires_at"}
    assert codes.sent_to(BOB) == []
    # Verifying fails the same way, with the same number of attempts left.
    known_try = await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": known.body["verification_id"], "code": wrong(codes.last(ADA))},
    )
    unknown_try = await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": unknown.body["verification_id"], "code": "123456"},
    )
    assert known_try.status == unknown_try.status == 400
    assert known_try.body["detail"] == unknown_try.body["detail"]


async def test_an_unknown_number_never_signs_in_whatever_the_code(
    client: Client, db: Database
) -> None:
    started = await call(client, "POST", "/auth/login", json={"phone": BOB})
    vid = started.body["verification_id"]
    # Even the right code (made known here by replacing the stored hash) fails.
    from inbox.verification import CodeHasher

    with db.write.begin() as conn:
        conn.execute(
            verifications_t.update()
            .where(verifications_t.c.id == vid)
            .values(code_hash=CodeHasher().hash("424242"))
        )
    tried = await call(
        client, "POST", "/auth/verify", json={"verification_id": vid, "code": "424242"}
    )
    assert tried.status == 400
    assert rows(db, users_t) == [] and rows(db, api_tokens_t) == []


async def test_a_wrong_code_is_refused_and_counts_down_the_attempts(
    client: Client, codes: Codes
) -> None:
    started = await call(client, "POST", "/auth/signup", json=SIGNUP)
    vid, code = started.body["verification_id"], codes.last(ADA)
    details = []
    for _ in range(5):  # auth.code_attempts
        tried = await call(
            client, "POST", "/auth/verify", json={"verification_id": vid, "code": wrong(code)}
        )
        assert tried.status == 400
        details.append(tried.body["detail"])
    assert details[0] == "the code is wrong; 4 attempt(s) left"
    assert details[-1].startswith("the code is wrong and no attempts are left")
    # The right code no longer helps.
    late = await call(client, "POST", "/auth/verify", json={"verification_id": vid, "code": code})
    assert late.status == 410 and "too many" in late.body["detail"]


async def test_an_expired_code_is_refused(client: Client, codes: Codes, db: Database) -> None:
    await sign_up(client, codes)
    started = await call(client, "POST", "/auth/login", json={"phone": ADA})
    vid = started.body["verification_id"]
    with db.write.begin() as conn:
        conn.execute(
            verifications_t.update()
            .where(verifications_t.c.id == vid)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    tried = await call(
        client, "POST", "/auth/verify", json={"verification_id": vid, "code": codes.last(ADA)}
    )
    assert tried.status == 410 and "expired" in tried.body["detail"]
    outcomes = [r.outcome for r in rows(db, auth_log_t)]
    assert "expired" in outcomes


async def test_a_code_works_only_once(client: Client, codes: Codes) -> None:
    started = await call(client, "POST", "/auth/signup", json=SIGNUP)
    body = {"verification_id": started.body["verification_id"], "code": codes.last(ADA)}
    assert (await call(client, "POST", "/auth/verify", json=body)).status == 201
    again = await call(client, "POST", "/auth/verify", json=body)
    assert again.status == 410 and "already been used" in again.body["detail"]


async def test_concurrent_verifies_of_one_code_issue_exactly_one_token(
    client: Client, codes: Codes, db: Database
) -> None:
    started = await call(client, "POST", "/auth/signup", json=SIGNUP)
    body = {"verification_id": started.body["verification_id"], "code": codes.last(ADA)}
    replies = await asyncio.gather(
        *(call(client, "POST", "/auth/verify", json=body) for _ in range(5))
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201, 410, 410, 410, 410]
    assert len(rows(db, api_tokens_t)) == 1 and len(rows(db, users_t)) == 1


async def test_an_unknown_verification_is_not_found(client: Client) -> None:
    for vid in ("vrf_" + "0" * 32, "nope"):
        tried = await call(
            client, "POST", "/auth/verify", json={"verification_id": vid, "code": "123456"}
        )
        assert tried.status == 404


async def test_a_suspended_account_cannot_sign_in(
    client: Client, codes: Codes, db: Database
) -> None:
    user_id = (await sign_up(client, codes)).body["user"]["id"]
    with db.write.begin() as conn:
        conn.execute(
            users_t.update().where(users_t.c.id == user_id).values(suspended_at=datetime.now(UTC))
        )
    started = await call(client, "POST", "/auth/login", json={"phone": ADA})
    assert started.status == 202
    tried = await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": started.body["verification_id"], "code": codes.last(ADA)},
    )
    assert tried.status == 403 and "suspended" in tried.body["detail"]
    assert len(rows(db, api_tokens_t)) == 1  # only the one from sign-up
    latest = max(rows(db, auth_log_t), key=lambda r: r.id)
    assert latest.outcome == "suspended"


# --- limits and abuse ----------------------------------------------------------------------


async def test_code_requests_per_number_are_limited_alike_for_unknown_numbers(
    make_client: MakeClient, codes: Codes
) -> None:
    client = await make_client(auth={"codes_per_number": 2})
    await sign_up(client, codes)  # one code for ADA
    for phone, allowed in ((ADA, 1), (BOB, 2)):
        for _ in range(allowed):
            assert (await call(client, "POST", "/auth/login", json={"phone": phone})).status == 202
        refused = await call(client, "POST", "/auth/login", json={"phone": phone})
        assert refused.status == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert len(codes.sent_to(ADA)) == 2


async def test_code_requests_per_ip_are_limited_and_flag_the_ip(
    make_client: MakeClient, db: Database
) -> None:
    client = await make_client(auth={"codes_per_ip": 3})
    numbers = [f"+1415555011{i}" for i in range(4)]
    statuses = [
        (await call(client, "POST", "/auth/login", json={"phone": n})).status for n in numbers
    ]
    assert statuses == [202, 202, 202, 429]
    (flag,) = rows(db, abuse_flags_t)
    assert (flag.ip, flag.reason, flag.count) == ("127.0.0.1", "code_request_flood", 1)


async def _logins_from(client: Client, forwarded_for: str, count: int) -> list[int]:
    numbers = [f"+1415555012{i}" for i in range(count)]
    headers = {"X-Forwarded-For": forwarded_for}
    return [
        (await call(client, "POST", "/auth/login", json={"phone": n}, headers=headers)).status
        for n in numbers
    ]


async def test_clients_behind_a_trusted_proxy_are_limited_apart(
    make_client: MakeClient, db: Database
) -> None:
    client = await make_client(http={"trusted_proxies": ["127.0.0.1"]}, auth={"codes_per_ip": 2})
    # The first client prepends a forged hop: only the proxy's own entry counts.
    assert await _logins_from(client, "198.51.100.1, 203.0.113.9", 3) == [202, 202, 429]
    assert await _logins_from(client, "203.0.113.10", 2) == [202, 202]
    (flag,) = rows(db, abuse_flags_t)
    assert (flag.ip, flag.reason) == ("203.0.113.9", "code_request_flood")


async def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(
    make_client: MakeClient, db: Database
) -> None:
    client = await make_client(auth={"codes_per_ip": 2})
    assert await _logins_from(client, "203.0.113.9", 2) == [202, 202]
    assert await _logins_from(client, "203.0.113.10", 1) == [429]
    (flag,) = rows(db, abuse_flags_t)
    assert flag.ip == "127.0.0.1"


async def test_ipv6_clients_are_limited_per_64(make_client: MakeClient, db: Database) -> None:
    client = await make_client(http={"trusted_proxies": ["127.0.0.1"]}, auth={"codes_per_ip": 2})
    assert await _logins_from(client, "2001:db8:1:2::a", 2) == [202, 202]
    assert await _logins_from(client, "2001:db8:1:2::b", 1) == [429]
    assert await _logins_from(client, "2001:db8:1:3::a", 1) == [202]
    (flag,) = rows(db, abuse_flags_t)
    assert flag.ip == "2001:db8:1:2::/64"


async def test_the_auth_log_keeps_the_forwarded_client_address(
    make_client: MakeClient, codes: Codes, db: Database
) -> None:
    client = await make_client(http={"trusted_proxies": ["127.0.0.0/8"]})
    headers = {"X-Forwarded-For": "2001:db8:1:2::a"}
    started = await call(client, "POST", "/auth/signup", json=SIGNUP, headers=headers)
    body = {"verification_id": started.body["verification_id"], "code": codes.last(ADA)}
    assert (await call(client, "POST", "/auth/verify", json=body, headers=headers)).status == 201
    (entry,) = rows(db, auth_log_t)
    assert entry.ip == "2001:db8:1:2::a"


async def test_code_attempts_per_ip_are_limited(make_client: MakeClient) -> None:
    client = await make_client(auth={"attempts_per_ip": 2})
    started = await call(client, "POST", "/auth/login", json={"phone": BOB})
    body = {"verification_id": started.body["verification_id"], "code": "000000"}
    statuses = [(await call(client, "POST", "/auth/verify", json=body)).status for _ in range(3)]
    assert statuses == [400, 400, 429]


async def test_repeated_failed_codes_flag_the_ip(
    make_client: MakeClient, codes: Codes, db: Database
) -> None:
    client = await make_client(privacy={"abuse_failed_codes": 3})
    started = await call(client, "POST", "/auth/signup", json=SIGNUP)
    body = {"verification_id": started.body["verification_id"], "code": wrong(codes.last(ADA))}
    for _ in range(2):
        await call(client, "POST", "/auth/verify", json=body)
    assert rows(db, abuse_flags_t) == []
    await call(client, "POST", "/auth/verify", json=body)
    (flag,) = rows(db, abuse_flags_t)
    assert (flag.ip, flag.reason) == ("127.0.0.1", "failed_codes")


def test_abuse_flags_are_upserted(db: Database) -> None:
    from inbox.abuse import AbuseReason, flag

    first, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    for when in (first, later):
        with db.write.begin() as conn:
            flag(conn, "203.0.113.9", AbuseReason.FAILED_CODES, when)
    (row,) = rows(db, abuse_flags_t)
    assert row.count == 2
    assert row.first_seen.replace(tzinfo=UTC) == first
    assert row.last_seen.replace(tzinfo=UTC) == later


# --- the authentication log ------------------------------------------------------------------


async def test_the_auth_log_shows_each_attempt_with_its_outcome(
    client: Client, codes: Codes
) -> None:
    token = (await sign_up(client, codes)).body["token"]
    started = await call(client, "POST", "/auth/login", json={"phone": ADA})
    vid, code = started.body["verification_id"], codes.last(ADA)
    await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": vid, "code": wrong(code), "device": "Tablet"},
    )
    await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": vid, "code": code, "device": "Tablet"},
    )
    log = await call(client, "GET", "/account/auth-log", token=token)
    assert log.status == 200
    assert [(e["outcome"], e["method"], e["device"], e["ip"]) for e in log.body["items"]] == [
        ("success", "sms_code", "Tablet", "127.0.0.1"),
        ("wrong_code", "sms_code", "Tablet", "127.0.0.1"),
        ("account_created", "sms_code", "Pixel", "127.0.0.1"),
    ]
    first = await call(client, "GET", "/account/auth-log?limit=2", token=token)
    rest = await call(
        client, "GET", f"/account/auth-log?limit=2&cursor={first.body['next']}", token=token
    )
    assert [e["id"] for e in first.body["items"] + rest.body["items"]] == [
        e["id"] for e in log.body["items"]
    ]
    assert rest.body["next"] is None


async def test_the_auth_log_is_the_users_own(client: Client, codes: Codes) -> None:
    ada = (await sign_up(client, codes)).body["token"]
    bob = (await sign_up(client, codes, SIGNUP | {"phone": BOB})).body["token"]
    log = await call(client, "GET", "/account/auth-log", token=bob)
    assert len(log.body["items"]) == 1
    assert len((await call(client, "GET", "/account/auth-log", token=ada)).body["items"]) == 1


# --- devices -----------------------------------------------------------------------------------


async def test_tokens_are_listed_per_device_with_the_current_one_marked(
    client: Client, codes: Codes
) -> None:
    await sign_up(client, codes)
    token = (await log_in(client, codes, ADA, device="Laptop")).body["token"]
    listed = await call(client, "GET", "/tokens", token=token)
    assert [(t["device"], t["current"]) for t in listed.body["items"]] == [
        ("Laptop", True),
        ("Pixel", False),
    ]


async def test_signing_out_revokes_the_current_token(client: Client, codes: Codes) -> None:
    token = (await sign_up(client, codes)).body["token"]
    assert (await call(client, "DELETE", "/tokens/current", token=token)).status == 204
    assert (await call(client, "GET", "/account", token=token)).status == 401


async def test_a_device_can_be_signed_out_by_its_id(client: Client, codes: Codes) -> None:
    phone_token = (await sign_up(client, codes)).body
    laptop = (await log_in(client, codes, ADA)).body["token"]
    revoked = await call(client, "DELETE", f"/tokens/{phone_token['token_id']}", token=laptop)
    assert revoked.status == 204
    assert (await call(client, "GET", "/tokens", token=phone_token["token"])).status == 401
    assert (await call(client, "GET", "/tokens", token=laptop)).status == 200


async def test_another_users_token_id_is_not_found(client: Client, codes: Codes) -> None:
    ada = (await sign_up(client, codes)).body
    bob = (await sign_up(client, codes, SIGNUP | {"phone": BOB})).body
    for token_id in (ada["token_id"], "tok_" + "0" * 32, "garbage"):
        assert (
            await call(client, "DELETE", f"/tokens/{token_id}", token=bob["token"])
        ).status == 404
    assert (await call(client, "GET", "/account", token=ada["token"])).status == 200


async def test_last_use_is_recorded_without_a_write_per_request(
    client: Client, codes: Codes, db: Database
) -> None:
    token = (await sign_up(client, codes)).body["token"]
    await call(client, "GET", "/messages", token=token)
    # Noted in memory, written by the app's periodic flush (run here directly).
    assert flush_token_use(client.app[AUTH].token_use, db) == 1
    (row,) = rows(db, api_tokens_t)
    assert row.last_used_at is not None
    for _ in range(3):
        await call(client, "GET", "/messages", token=token)
    # Recorded less than a minute ago: nothing more to write.
    assert flush_token_use(client.app[AUTH].token_use, db) == 0
    (again,) = rows(db, api_tokens_t)
    assert again.last_used_at == row.last_used_at
    # Visible in the device list.
    listed = await call(client, "GET", "/tokens", token=token)
    assert listed.body["items"][0]["last_used_at"] is not None


# --- the profile -------------------------------------------------------------------------------


async def test_the_profile_can_be_changed(client: Client, codes: Codes) -> None:
    token = (await sign_up(client, codes)).body["token"]
    changed = await call(
        client,
        "PATCH",
        "/account",
        token=token,
        json={"first_name": " Augusta ", "date_of_birth": "1985-01-02"},
    )
    assert changed.status == 200
    assert (changed.body["first_name"], changed.body["last_name"]) == ("Augusta", "Lovelace")
    assert changed.body["date_of_birth"] == "1985-01-02"
    assert (await call(client, "GET", "/account", token=token)).body == changed.body


@SQLITE_ONLY
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"first_name": ""},
        {"first_name": "x" * 101},
        {"last_name": "bad\nname"},
        {"first_name": None},
        {"date_of_birth": "1990-02-30"},
        {"date_of_birth": "2990-01-01"},
        {"date_of_birth": "1850-01-01"},
        {"date_of_birth": 19900101},
        {"first_name": "Ok", "phone": "+14155550199"},
        {"first_name": "Ok", "suspended": False},
    ],
)
async def test_bad_profile_changes_are_refused_and_change_nothing(
    client: Client, codes: Codes, body: dict[str, Any]
) -> None:
    signed = (await sign_up(client, codes)).body
    refused = await call(client, "PATCH", "/account", token=signed["token"], json=body)
    assert refused.status == 400 and refused.body["detail"]
    assert (await call(client, "GET", "/account", token=signed["token"])).body == signed["user"]


# --- a change of number ------------------------------------------------------------------------


async def test_the_number_changes_only_once_the_new_one_is_verified(
    client: Client, codes: Codes
) -> None:
    token = (await sign_up(client, codes)).body["token"]
    started = await call(client, "POST", "/account/phone", token=token, json={"phone": NEW_NUMBER})
    assert started.status == 202
    assert (await call(client, "GET", "/account", token=token)).body["phone"] == ADA
    done = await call(
        client,
        "POST",
        "/account/phone/verify",
        token=token,
        json={"verification_id": started.body["verification_id"], "code": codes.last(NEW_NUMBER)},
    )
    assert done.status == 200 and done.body["phone"] == NEW_NUMBER
    assert (await log_in(client, codes, NEW_NUMBER)).status == 201


async def test_a_number_of_another_account_is_refused_at_confirmation_only(
    client: Client, codes: Codes
) -> None:
    ada = (await sign_up(client, codes)).body["token"]
    await sign_up(client, codes, SIGNUP | {"phone": BOB})
    taken = await call(client, "POST", "/account/phone", token=ada, json={"phone": BOB})
    free = await call(client, "POST", "/account/phone", token=ada, json={"phone": NEW_NUMBER})
    assert taken.status == free.status == 202 and set(taken.body) == set(free.body)
    refused = await call(
        client,
        "POST",
        "/account/phone/verify",
        token=ada,
        json={"verification_id": taken.body["verification_id"], "code": codes.last(BOB)},
    )
    assert refused.status == 409
    assert (await call(client, "GET", "/account", token=ada)).body["phone"] == ADA


async def test_a_phone_verification_is_only_for_its_own_account(
    client: Client, codes: Codes
) -> None:
    ada = (await sign_up(client, codes)).body["token"]
    bob = (await sign_up(client, codes, SIGNUP | {"phone": BOB})).body["token"]
    started = await call(client, "POST", "/account/phone", token=ada, json={"phone": NEW_NUMBER})
    body = {"verification_id": started.body["verification_id"], "code": codes.last(NEW_NUMBER)}
    assert (await call(client, "POST", "/account/phone/verify", token=bob, json=body)).status == 404
    # Nor does it sign anyone in.
    assert (await call(client, "POST", "/auth/verify", json=body)).status == 404


# --- hostile input ---------------------------------------------------------------------------


PUBLIC_POSTS = ["/auth/signup", "/auth/login", "/auth/verify"]
PRIVATE_POSTS = ["/account/phone", "/account/phone/verify"]
HOSTILE = [
    b"",
    b"not json",
    b"[1, 2]",
    b'"a string"',
    b'{"unexpected": 1}',
    b"[" * 100_000,
    b'{"phone": ' + b'"' + b"9" * 5000 + b'"}',
    b'{"phone": {"$ne": null}}',
    b'{"phone": "+1415555\\u0000"}',
    b'{"phone": "+14155550101\'; DROP TABLE users; --"}',
]


@SQLITE_ONLY
@pytest.mark.parametrize("path", PUBLIC_POSTS + PRIVATE_POSTS + ["/account"])
@pytest.mark.parametrize("raw", HOSTILE)
async def test_hostile_bodies_are_refused_and_store_nothing(
    client: Client, db: Database, path: str, raw: bytes
) -> None:
    user_id = make_user(db, phone="+442079460958", sms_number="+14155550199")
    token = store.create_token(db, user_id)[1]
    method = "PATCH" if path == "/account" else "POST"
    reply = await call(
        client,
        method,
        path,
        data=raw,
        headers={"Content-Type": "application/json"},
        token=None if path in PUBLIC_POSTS else token,
    )
    assert reply.status == 400, reply.body
    assert reply.content_type == "application/problem+json"
    assert rows(db, verifications_t) == [] and len(rows(db, users_t)) == 1


@SQLITE_ONLY
@pytest.mark.parametrize("path", PUBLIC_POSTS)
async def test_oversized_bodies_are_refused(client: Client, path: str) -> None:
    body = io.BytesIO(b'{"phone": "' + b"1" * 2_000_000 + b'"}')
    reply = await call(client, "POST", path, data=body)
    assert reply.status == 413


@SQLITE_ONLY
@pytest.mark.parametrize(
    "body",
    [
        SIGNUP | {"first_name": ""},
        SIGNUP | {"last_name": "x" * 101},
        SIGNUP | {"date_of_birth": "10/12/1990"},
        SIGNUP | {"phone": "12"},
        SIGNUP | {"phone": "alice@example.com"},
        SIGNUP | {"referral_code": "r" * 41},
        SIGNUP | {"referral_code": 7},
        {k: v for k, v in SIGNUP.items() if k != "phone"},
    ],
)
async def test_bad_sign_up_forms_are_refused(client: Client, db: Database, body: Any) -> None:
    reply = await call(client, "POST", "/auth/signup", json=body)
    assert reply.status == 400 and reply.body["detail"]
    assert rows(db, verifications_t) == []


@SQLITE_ONLY
@pytest.mark.parametrize(
    "body",
    [
        {"verification_id": "vrf_x", "code": "12345"},
        {"verification_id": "vrf_x", "code": "1234567"},
        {"verification_id": "vrf_x", "code": 123456},
        {"verification_id": "vrf_x", "code": "١٢٣٤٥٦"},
        {"verification_id": 5, "code": "123456"},
        {"verification_id": "vrf_x", "code": "123456", "device": ""},
        {"verification_id": "vrf_x", "code": "123456", "device": "d" * 101},
        {"verification_id": "vrf_x", "code": "123456", "device": "a\x00b"},
    ],
)
async def test_bad_verify_bodies_are_refused(client: Client, body: Any) -> None:
    reply = await call(client, "POST", "/auth/verify", json=body)
    assert reply.status == 400


async def test_account_endpoints_need_a_token(client: Client) -> None:
    for method, path in (
        ("GET", "/account"),
        ("GET", "/tokens"),
        ("DELETE", "/tokens/current"),
        ("GET", "/account/auth-log"),
    ):
        assert (await call(client, method, path)).status == 401


# --- delivery -----------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


SERVICE_NUMBER = "+14155550000"


async def test_codes_go_out_by_twilio_from_the_service_number(
    make_client: MakeClient, fake: FakeTwilio, db: Database
) -> None:
    client = await make_client(
        bridges={
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "api_base_url": fake.base_url,
                "service_number": SERVICE_NUMBER,
            }
        }
    )
    started = await call(client, "POST", "/auth/signup", json=SIGNUP)
    assert started.status == 202
    (sent,) = fake.created
    assert (sent.to, sent.from_) == (ADA, SERVICE_NUMBER)
    code = re.search(r"\b(\d{6})\b", sent.body)
    assert code is not None
    verified = await call(
        client,
        "POST",
        "/auth/verify",
        json={"verification_id": started.body["verification_id"], "code": code.group(1)},
    )
    assert verified.status == 201


async def test_a_failed_send_answers_503_and_voids_the_verification(
    make_client: MakeClient, fake: FakeTwilio, db: Database
) -> None:
    client = await make_client(
        bridges={
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "api_base_url": fake.base_url,
                "service_number": SERVICE_NUMBER,
            }
        },
        auth={"code_sender": "twilio"},
    )
    fake.fail_next(500)
    reply = await call(client, "POST", "/auth/signup", json=SIGNUP)
    assert reply.status == 503
    assert rows(db, verifications_t) == []


def test_the_limiter_is_redis_when_redis_is_configured(tmp_path: Path, db_url: str) -> None:
    with_redis = make_settings(tmp_path, db_url, redis={"url": "redis://127.0.0.1:6379/0"})
    without = make_settings(tmp_path, db_url)
    assert isinstance(build_auth_runtime(with_redis).limiter, RedisLimiter)
    assert isinstance(build_auth_runtime(without).limiter, MemoryLimiter)


def test_twilio_sender_without_a_service_number_is_refused(tmp_path: Path, db_url: str) -> None:
    settings: Settings = make_settings(tmp_path, db_url, auth={"code_sender": "twilio"})
    with pytest.raises(ValueError, match="service_number"):
        build_auth_runtime(settings)
