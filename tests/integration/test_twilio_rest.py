"""Sending one SMS through Twilio's REST API (the official SDK) against a fake API.

The sender is synchronous (it runs in a worker thread in production); the fake runs
on the test's event loop, so every send goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from bridges.twilio_rest import SendFailed, SentMessage, TwilioSender
from tests.fakes.twilio_api import FakeTwilio

ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "rest-auth-token-" + "0123456789abcdef"
FROM = "+14155550100"
TO = "+14155550123"
BODY = "Hello from OptMsg ✓"
CALLBACK = "https://gw.example.com/bridges/twilio/status"
TIMEOUT_S = 0.5


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def sender(fake: FakeTwilio) -> Iterator[TwilioSender]:
    s = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, fake.base_url, timeout_s=TIMEOUT_S)
    yield s
    s.close()


async def send(sender: TwilioSender, *, status_callback: str | None = CALLBACK) -> SentMessage:
    return await asyncio.to_thread(
        sender.send, from_=FROM, to=TO, body=BODY, status_callback=status_callback
    )


async def send_failure(sender: TwilioSender) -> SendFailed:
    with pytest.raises(SendFailed) as info:
        await send(sender)
    return info.value


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_send_returns_sid_and_status_and_posts_the_message(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    sent = await send(sender)

    assert sent.sid.startswith("SM") and len(sent.sid) == 34
    assert sent.status == "queued"
    [created] = fake.created
    assert created.sid == sent.sid
    assert (created.to, created.from_, created.body) == (TO, FROM, BODY)
    assert created.status_callback == CALLBACK
    assert created.authorization == fake.basic_auth()
    assert created.user_agent is not None and "optmsg-gateway" in created.user_agent
    assert fake.requests == 1


async def test_send_without_status_callback_omits_the_parameter(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    await send(sender, status_callback=None)

    [created] = fake.created
    assert created.status_callback is None
    assert set(created.form) == {"To", "From", "Body"}


async def test_server_error_is_retryable_and_sent_once(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    fake.fail_next(500)

    exc = await send_failure(sender)

    assert exc.retryable
    assert exc.http_status == 500
    assert not exc.maybe_sent
    assert "HTTP 500" in exc.reason
    assert fake.requests == 1  # no retry by the sender or its HTTP client
    assert fake.created == []


async def test_rate_limit_is_retryable(fake: FakeTwilio, sender: TwilioSender) -> None:
    fake.fail_next(429)

    exc = await send_failure(sender)

    assert exc.retryable
    assert exc.http_status == 429
    assert exc.code == 20429
    assert fake.requests == 1


async def test_invalid_to_is_not_retryable_and_gives_twilios_message(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    message = "The 'To' number +1415555012 is not a valid phone number."
    fake.fail_next(400, code=21211, message=message)

    exc = await send_failure(sender)

    assert not exc.retryable
    assert (exc.http_status, exc.code) == (400, 21211)
    assert message in exc.reason
    assert not exc.unsubscribed
    assert str(exc) == exc.reason


async def test_unsubscribed_recipient_is_reported(fake: FakeTwilio, sender: TwilioSender) -> None:
    fake.fail_next(400, code=21610, message="Attempt to send to unsubscribed recipient")

    exc = await send_failure(sender)

    assert exc.unsubscribed
    assert exc.code == 21610
    assert not exc.retryable
    assert "STOP" in exc.reason


async def test_region_not_enabled_is_not_retryable(fake: FakeTwilio, sender: TwilioSender) -> None:
    fake.fail_next(400, code=21408, message="Permission to send an SMS has not been enabled")

    exc = await send_failure(sender)

    assert (exc.code, exc.retryable, exc.unsubscribed) == (21408, False, False)
    assert "country" in exc.reason


async def test_non_json_gateway_error_is_retryable_without_code(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    fake.fail_next(502, json=False)

    exc = await send_failure(sender)

    assert exc.retryable
    assert (exc.http_status, exc.code) == (502, None)


async def test_wrong_credentials_are_not_retryable(fake: FakeTwilio) -> None:
    wrong = TwilioSender(ACCOUNT_SID, "not-the-token", fake.base_url, timeout_s=TIMEOUT_S)
    try:
        exc = await send_failure(wrong)
    finally:
        wrong.close()

    assert exc.http_status == 401
    assert exc.code == 20003
    assert not exc.retryable
    assert "credentials" in exc.reason
    assert fake.created == []


async def test_missing_credentials_fail_without_a_request(fake: FakeTwilio) -> None:
    unconfigured = TwilioSender("", "", fake.base_url)

    exc = await send_failure(unconfigured)

    assert not exc.retryable
    assert fake.requests == 0


async def test_connection_refused_is_retryable_and_not_sent() -> None:
    refused = TwilioSender(
        ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{closed_port()}", timeout_s=TIMEOUT_S
    )
    try:
        exc = await send_failure(refused)
    finally:
        refused.close()

    assert exc.retryable
    assert not exc.maybe_sent
    assert exc.http_status is None and exc.code is None


async def test_no_answer_times_out_within_the_timeout_and_is_retryable(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    fake.hang_next()

    started = time.monotonic()
    exc = await send_failure(sender)
    elapsed = time.monotonic() - started

    assert exc.retryable
    assert exc.maybe_sent  # Twilio may have created the message before going quiet
    assert TIMEOUT_S * 0.8 <= elapsed < TIMEOUT_S + 1.5
    assert fake.requests == 1


async def test_connection_dropped_after_sending_is_retryable_and_maybe_sent(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    fake.drop_next()

    exc = await send_failure(sender)

    assert exc.retryable
    assert exc.maybe_sent
    assert fake.connections == 1  # the HTTP client did not try again


async def test_auth_token_never_appears_in_a_failure(fake: FakeTwilio) -> None:
    # A hostile or buggy upstream echoing the credentials back in its error message.
    fake.fail_next(400, code=21211, message=f"bad request from {ACCOUNT_SID}:{AUTH_TOKEN}")
    fake.fail_next(500)
    fake.hang_next()
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, fake.base_url, timeout_s=TIMEOUT_S)
    wrong = TwilioSender(ACCOUNT_SID, AUTH_TOKEN + "x", fake.base_url, timeout_s=TIMEOUT_S)
    failures = [await send_failure(sender) for _ in range(3)] + [await send_failure(wrong)]
    sender.close()
    wrong.close()

    for exc in failures:
        rendered = [str(exc), repr(exc), exc.reason, "".join(traceback.format_exception(exc))]
        for text in rendered:
            assert AUTH_TOKEN not in text
    assert ACCOUNT_SID not in failures[0].reason
    assert AUTH_TOKEN not in repr(sender)


async def test_sender_is_reused_across_threads(fake: FakeTwilio, sender: TwilioSender) -> None:
    sent = await asyncio.gather(*(send(sender) for _ in range(8)))

    assert len({m.sid for m in sent}) == 8
    assert len(fake.created) == 8


async def test_fake_deletes_media_with_basic_auth(fake: FakeTwilio) -> None:
    url = (
        f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{'a' * 32}"
        f"/Media/ME{'b' * 32}.json"
    )
    async with aiohttp.ClientSession() as http:
        async with http.delete(url) as anonymous:
            assert anonymous.status == 401
        headers = {"Authorization": fake.basic_auth()}
        async with http.delete(url, headers=headers) as response:
            assert response.status == 204

    assert fake.deleted_media == [("SM" + "a" * 32, "ME" + "b" * 32)]


def test_bad_base_url_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="api_base_url"):
        TwilioSender(ACCOUNT_SID, AUTH_TOKEN, "api.twilio.com")
    with pytest.raises(ValueError, match="credentials"):
        TwilioSender(ACCOUNT_SID, AUTH_TOKEN, f"https://{ACCOUNT_SID}:{AUTH_TOKEN}@api.twilio.com")
