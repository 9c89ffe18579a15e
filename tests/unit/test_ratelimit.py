"""Sliding-window rate limits: the in-process backend with an injected clock, and the
Redis backend against the real Redis on 127.0.0.1:6379 (a unique key prefix per
test, deleted afterwards)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from config import Settings
from gateway.accounts import build_auth_runtime
from gateway.ratelimit import (
    KeyHasher,
    MemoryLimiter,
    RateLimitUnavailable,
    RedisLimiter,
)
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, REDIS_URL, make_settings


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def test_memory_limiter_allows_up_to_the_limit_then_refuses() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    decisions = [await limiter.hit("k", 3, 60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.count for d in decisions] == [1, 2, 3, 3]
    assert decisions[-1].retry_after_s == 60


async def test_memory_limiter_window_slides() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    await limiter.hit("k", 2, 60)
    clock.now += 30
    await limiter.hit("k", 2, 60)
    clock.now += 20
    refused = await limiter.hit("k", 2, 60)
    assert not refused.allowed and refused.retry_after_s == 10  # the first hit leaves at +60
    clock.now += 10
    assert (await limiter.hit("k", 2, 60)).allowed


async def test_memory_limiter_keys_are_independent() -> None:
    limiter = MemoryLimiter(clock=FakeClock())
    assert (await limiter.hit("a", 1, 60)).allowed
    assert not (await limiter.hit("a", 1, 60)).allowed
    assert (await limiter.hit("b", 1, 60)).allowed


async def test_memory_limiter_memory_is_bounded() -> None:
    limiter = MemoryLimiter(clock=FakeClock(), max_keys=10)
    for i in range(100):
        await limiter.hit(f"k{i}", 1, 60)
    assert len(limiter._hits) == 10


def test_key_hasher_hides_the_value_and_is_stable() -> None:
    hasher = KeyHasher(b"secret")
    key = hasher.key("codes:number", "+14155550100")
    assert "14155550100" not in key and key.startswith("codes:number:")
    assert hasher.key("codes:number", "+14155550100") == key
    assert KeyHasher(b"other").key("codes:number", "+14155550100") != key


def test_key_hasher_without_a_secret_uses_a_random_one() -> None:
    assert KeyHasher(b"").key("ip", "1.2.3.4") != KeyHasher(b"").key("ip", "1.2.3.4")


@pytest.fixture
def redis_prefix(redis_namespace: str) -> str:
    """Keys under the test's own namespace, removed afterwards (tests/conftest.py)."""
    return f"{redis_namespace}:"


@pytest.fixture
async def make_redis_limiter(
    redis_prefix: str,
) -> AsyncIterator[Callable[..., RedisLimiter]]:
    made: list[RedisLimiter] = []

    def make(clock: Callable[[], float] | None = None) -> RedisLimiter:
        kwargs = {"prefix": redis_prefix} | ({"clock": clock} if clock else {})
        limiter = RedisLimiter.from_url(REDIS_URL, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def test_redis_limiter_allows_up_to_the_limit_then_refuses(
    make_redis_limiter: Callable[..., RedisLimiter],
) -> None:
    limiter = make_redis_limiter()
    decisions = [await limiter.hit("k", 3, 60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].count == 3
    assert 59 <= decisions[-1].retry_after_s <= 60


async def test_redis_limit_is_shared_by_two_limiters(
    make_redis_limiter: Callable[..., RedisLimiter],
) -> None:
    first, second = make_redis_limiter(), make_redis_limiter()
    assert (await first.hit("shared", 2, 60)).allowed
    assert (await second.hit("shared", 2, 60)).allowed
    refused = await first.hit("shared", 2, 60)
    assert not refused.allowed and refused.count == 2
    assert not (await second.hit("shared", 2, 60)).allowed


async def test_redis_window_slides(make_redis_limiter: Callable[..., RedisLimiter]) -> None:
    clock = FakeClock(1_700_000_000.0)
    limiter = make_redis_limiter(clock)
    await limiter.hit("k", 2, 60)
    clock.now += 30
    await limiter.hit("k", 2, 60)
    clock.now += 20
    refused = await limiter.hit("k", 2, 60)
    assert not refused.allowed and refused.retry_after_s == 10
    clock.now += 10.001
    assert (await limiter.hit("k", 2, 60)).allowed


async def test_redis_keys_expire_with_their_window(
    make_redis_limiter: Callable[..., RedisLimiter], redis_prefix: str
) -> None:
    await make_redis_limiter().hit("k", 5, 60)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        ttl = await client.pttl(redis_prefix + "k")
    finally:
        await client.aclose()
    assert 0 < ttl <= 60_000


async def test_unreachable_redis_is_reported_not_passed() -> None:
    limiter = RedisLimiter.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RateLimitUnavailable):
            await limiter.hit("k", 5, 60)
    finally:
        await limiter.close()


# --- the key of the hashes: the same on every gateway of a deployment --------------------


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    sections: dict[str, Any] = {"redis": {"url": REDIS_URL}}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", **sections)


async def _key_of(settings: Settings) -> str:
    runtime = build_auth_runtime(settings)
    try:
        return runtime.keys.key("codes:number", "+14155550101")
    finally:
        await runtime.close()


async def test_gateways_with_the_same_settings_hash_alike(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert await _key_of(settings) == await _key_of(settings)


async def test_a_different_auth_token_hashes_differently(tmp_path: Path) -> None:
    twilio = {"enabled": True, "account_sid": ACCOUNT_SID, "auth_token": "f" * 32}
    other = _settings(tmp_path, bridges={"twilio": twilio})
    assert await _key_of(other) != await _key_of(_settings(tmp_path))


async def test_the_derived_key_is_not_the_auth_token_itself(tmp_path: Path) -> None:
    derived = await _key_of(_settings(tmp_path))
    assert derived != KeyHasher(AUTH_TOKEN.encode()).key("codes:number", "+14155550101")


async def test_an_explicit_limit_key_wins(tmp_path: Path) -> None:
    explicit = _settings(tmp_path, auth={"limit_key": "k" * 32})
    expected = KeyHasher(b"k" * 32).key("codes:number", "+14155550101")
    assert await _key_of(explicit) == expected
    assert await _key_of(_settings(tmp_path)) != expected


def _tokenless(tmp_path: Path, redis_url: str) -> Settings:
    return _settings(
        tmp_path,
        redis={"url": redis_url},
        bridges={"twilio": {"enabled": False, "auth_token": ""}},
    )


async def test_without_key_or_token_a_shared_redis_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _tokenless(tmp_path, REDIS_URL)
    with caplog.at_level(logging.WARNING, logger="gateway.accounts"):
        first, second = await _key_of(settings), await _key_of(settings)
    assert first != second  # a random key per process
    assert any("auth.limit_key is empty" in r.getMessage() for r in caplog.records)


async def test_without_key_token_or_redis_there_is_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.accounts"):
        await _key_of(_tokenless(tmp_path, ""))
    assert not any("auth.limit_key" in r.getMessage() for r in caplog.records)
