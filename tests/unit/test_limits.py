"""Flood and API limits: the flood verdict in decide() (pure), the flood verdicts the
gateway hands out (in-process limiter, fake clock), and the shared limiter's maths
(fake clock) and exchanges with the real Redis on 127.0.0.1:6379 (unique key prefix
per test, deleted afterwards)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.limits import Limits
from gateway.metrics import Metrics
from gateway.ratelimit import KeyHasher, MemoryLimiter, RateLimitUnavailable
from gateway.ratelimit_shared import SharedLimiter
from inbox.addresses import E164
from inbox.message import Channel, Flood, Inbound, Verdict
from optin.decide import (
    REASON_BLOCKED,
    REASON_TRUSTED,
    REASON_UNKNOWN,
    Policy,
    TrustVerdict,
    decide,
    flood_reason,
)
from tests.conftest import REDIS_URL, make_settings

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
NUMBER = E164("+14155550100")
FLOOD = Flood(limit=30, window_s=60)


class FakeClock:
    def __init__(self, start: float = 1_700_000_040.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# --- decide(): the flood verdict is one more input ---------------------------------------


def test_a_flood_from_an_unknown_sender_is_held_with_a_readable_reason() -> None:
    decision = decide(NUMBER, None, None, Policy(), flood=FLOOD)
    assert decision.verdict is Verdict.QUARANTINE and decision.flood
    assert decision.reason == "held: flood from this sender (over 30 messages in 60 s)"
    assert decision.reason == flood_reason(FLOOD)


def test_without_a_flood_an_unknown_sender_is_quarantined_as_before() -> None:
    decision = decide(NUMBER, None, None, Policy())
    assert decision.reason == REASON_UNKNOWN and not decision.flood


def test_a_trusted_senders_burst_is_delivered_when_trusted_senders_are_exempt() -> None:
    decision = decide(NUMBER, TrustVerdict.TRUSTED, None, Policy(), flood=FLOOD)
    assert decision.verdict is Verdict.ADMIT and decision.reason == REASON_TRUSTED


def test_a_trusted_senders_flood_is_held_when_the_policy_does_not_exempt_them() -> None:
    policy = Policy(flood_exempt_trusted=False)
    decision = decide(NUMBER, TrustVerdict.TRUSTED, None, policy, flood=FLOOD)
    assert decision.verdict is Verdict.QUARANTINE and decision.flood


def test_a_blocked_senders_flood_is_still_dropped() -> None:
    decision = decide(NUMBER, TrustVerdict.BLOCKED, None, Policy(), flood=FLOOD)
    assert decision.verdict is Verdict.DROP and decision.reason == REASON_BLOCKED


# --- Limits.flood: verdicts per (recipient, sender), in-process -------------------------


def _inbound(
    sender: str = "+14155550100", to: str = "+14155550199", received_at: datetime | None = None
) -> Inbound:
    return Inbound(
        bridge="twilio",
        external_id="SM" + secrets.token_hex(16),
        channel=Channel.SMS,
        sender=E164(sender),
        recipient=E164(to),
        text="hi",
        received_at=received_at or datetime.now(UTC),
    )


def _limits(tmp_path: Path, clock: FakeClock, **limits: object) -> Limits:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", limits=limits)
    metrics = Metrics(CollectorRegistry())
    return Limits(settings, metrics, KeyHasher(b"k"), MemoryLimiter(clock=clock))


async def test_messages_over_the_sender_limit_get_a_flood_verdict(tmp_path: Path) -> None:
    limits = _limits(tmp_path, FakeClock(), sender_messages=3, sender_window_s=60)
    verdicts = [await limits.flood(_inbound()) for _ in range(5)]
    assert verdicts[:3] == [None, None, None]
    assert verdicts[3] == Flood(3, 60, announce=True)
    assert verdicts[4] == Flood(3, 60, announce=False)


async def test_only_the_first_held_message_of_a_window_is_announced(tmp_path: Path) -> None:
    clock = FakeClock()
    limits = _limits(tmp_path, clock, sender_messages=1, sender_window_s=60)
    await limits.flood(_inbound())
    first = await limits.flood(_inbound())
    clock.now += 10
    second = await limits.flood(_inbound())
    clock.now += 61
    await limits.flood(_inbound())  # the window has passed: within the limit again
    again = await limits.flood(_inbound())
    assert first is not None and first.announce
    assert second is not None and not second.announce
    assert again is not None and again.announce


async def test_the_sender_limit_counts_each_sender_and_recipient_apart(tmp_path: Path) -> None:
    limits = _limits(tmp_path, FakeClock(), sender_messages=1, sender_window_s=60)
    assert await limits.flood(_inbound()) is None
    assert await limits.flood(_inbound(sender="+14155550101")) is None
    assert await limits.flood(_inbound(to="+14155550198")) is None
    assert await limits.flood(_inbound()) is not None


async def test_a_backlog_received_more_than_a_window_ago_is_not_counted(tmp_path: Path) -> None:
    limits = _limits(tmp_path, FakeClock(), sender_messages=1, sender_window_s=60)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    verdicts = [await limits.flood(_inbound(received_at=long_ago)) for _ in range(3)]
    assert verdicts == [None, None, None]
    assert await limits.flood(_inbound()) is None  # the backlog used none of the budget


# --- SharedLimiter: decisions in-process --------------------------------------------------


def _offline(clock: FakeClock, **kwargs: object) -> SharedLimiter:
    """A shared limiter whose Redis is never reached (no sync in these tests)."""
    return SharedLimiter.from_url(CLOSED_PORT_URL, prefix="unused:", clock=clock, **kwargs)


async def test_shared_limiter_allows_up_to_the_limit_then_refuses() -> None:
    clock = FakeClock(1_700_000_040.0)  # the start of a 60 s window
    limiter = _offline(clock)
    decisions = [await limiter.hit("k", 3, 60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.count for d in decisions] == [1, 2, 3, 3]
    # These hits weigh into the next window too, by how much of it they overlap: one
    # more fits once 3 weigh 2, a third into it (an exact log would say 60 s).
    assert decisions[-1].retry_after_s == 80
    await limiter.close()


async def test_shared_limiter_weighs_the_previous_window_by_its_overlap() -> None:
    clock = FakeClock(1_700_000_040.0)
    limiter = _offline(clock)
    for _ in range(4):
        assert (await limiter.hit("k", 4, 60)).allowed
    clock.now += 60 + 15  # a quarter into the next window: 3 of the 4 hits still count
    assert (await limiter.hit("k", 4, 60)).allowed  # 3 + 1
    refused = await limiter.hit("k", 4, 60)  # 3 + 1 + 1 > 4
    assert not refused.allowed
    # One more fits once the old hits weigh 2: half into the window, 15 s from now.
    assert refused.retry_after_s == 15
    clock.now += 15
    assert (await limiter.hit("k", 4, 60)).allowed
    await limiter.close()


async def test_shared_limiter_forgets_windows_older_than_the_previous_one() -> None:
    clock = FakeClock(1_700_000_040.0)
    limiter = _offline(clock)
    assert (await limiter.hit("k", 1, 60)).allowed
    clock.now += 120
    assert (await limiter.hit("k", 1, 60)).allowed
    await limiter.close()


async def test_shared_limiter_memory_is_bounded() -> None:
    limiter = _offline(FakeClock(), max_keys=10)
    for i in range(100):
        await limiter.hit(f"k{i}", 1, 60)
    assert len(limiter._keys) == 10
    await limiter.close()


# --- SharedLimiter: exchanges with the real Redis -----------------------------------------


@pytest.fixture
def redis_prefix(redis_namespace: str) -> str:
    """Keys under the test's own namespace, removed afterwards (tests/conftest.py)."""
    return f"{redis_namespace}:limits:"


@pytest.fixture
async def make_shared(redis_prefix: str) -> AsyncIterator[Callable[[FakeClock], SharedLimiter]]:
    made: list[SharedLimiter] = []

    def make(clock: FakeClock) -> SharedLimiter:
        limiter = SharedLimiter.from_url(REDIS_URL, prefix=redis_prefix, clock=clock)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def test_two_processes_see_one_count_after_an_exchange(
    make_shared: Callable[[FakeClock], SharedLimiter],
) -> None:
    clock = FakeClock()
    first, second = make_shared(clock), make_shared(clock)
    for _ in range(3):
        assert (await first.hit("k", 4, 60)).allowed
    await first.sync()
    assert (await second.hit("k", 4, 60)).allowed  # second does not know yet: 0 + 1
    await second.sync()  # sends its hit, learns the total: 4
    refused = await second.hit("k", 4, 60)
    assert not refused.allowed and refused.count == 4
    await first.sync()  # first hit nothing since: nothing to exchange
    assert (await first.hit("k", 4, 60)).allowed  # the documented overshoot (3 + 1)
    await first.sync()
    assert not (await first.hit("k", 4, 60)).allowed


async def test_hits_made_during_an_exchange_are_kept(
    make_shared: Callable[[FakeClock], SharedLimiter],
) -> None:
    clock = FakeClock()
    limiter = make_shared(clock)
    await limiter.hit("k", 10, 60)
    exchange = asyncio.create_task(limiter.sync())
    await asyncio.sleep(0)
    assert not limiter._pending  # the exchange took the first hit and awaits Redis
    await limiter.hit("k", 10, 60)  # before the exchange's reply is read
    await exchange
    await limiter.sync()
    other = make_shared(clock)
    await other.hit("k", 10, 60)
    await other.sync()
    assert (await other.hit("k", 10, 60)).count == 4


async def test_counters_expire_after_two_windows(
    make_shared: Callable[[FakeClock], SharedLimiter], redis_prefix: str
) -> None:
    limiter = make_shared(FakeClock())
    await limiter.hit("k", 5, 60)
    await limiter.sync()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        names = [k async for k in client.scan_iter(match=redis_prefix + "*")]
        ttls = [await client.pttl(name) for name in names]
    finally:
        await client.aclose()
    assert len(names) == 1 and 60_000 < ttls[0] <= 121_000


async def test_an_unreachable_redis_is_reported_and_limits_go_on_locally() -> None:
    clock = FakeClock()
    limiter = SharedLimiter.from_url(CLOSED_PORT_URL, prefix="nowhere:", clock=clock)
    try:
        assert (await limiter.hit("k", 2, 60)).allowed
        with pytest.raises(RateLimitUnavailable):
            await limiter.sync()
        assert (await limiter.hit("k", 2, 60)).allowed
        assert not (await limiter.hit("k", 2, 60)).allowed
        # Both hits wait for the next exchange that succeeds.
        assert sum(limiter._pending.values()) == 2
    finally:
        await limiter.close()
