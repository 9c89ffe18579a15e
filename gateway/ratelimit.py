"""Sliding-window rate limits: at most ``limit`` hits per key within ``window_s``.

Two backends behind one small interface: :class:`MemoryLimiter` (one process; the
embedded default) and :class:`RedisLimiter` (a sorted set per key, updated by one
Lua script so that check-and-record is atomic; shared by every gateway process on
that Redis). A refused hit is not recorded: a client that keeps knocking is let in
again once its earlier hits leave the window, and ``retry_after_s`` says when.

Keys name what is limited (``"codes:number"``) and a value (a phone number, an IP).
The value is never stored as given: :class:`KeyHasher` replaces it by an HMAC
keyed with ``auth.limit_key`` (or a key derived from the Twilio auth token, see
:func:`gateway.accounts.limit_key`) so that Redis never holds a phone number (a plain
hash of a number is reversed by trying the ~10^10 numbers of a country).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

Clock = Callable[[], float]


class RateLimitUnavailable(Exception):
    """Raised when the limiter's store (Redis) cannot be reached. The sign-in limits
    refuse the request (503) rather than let it through unlimited; the flood and API
    limits (gateway.limits) count per process instead."""


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``: the hit was within the limit (and recorded); ``count``: hits in
    the window, this one included when allowed; ``retry_after_s``: whole seconds
    until a refused caller may try again (0 when allowed)."""

    allowed: bool
    count: int
    retry_after_s: int


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> Decision: ...

    async def close(self) -> None: ...


class KeyHasher:
    """Turns (kind, value) into a limiter key that does not reveal the value."""

    def __init__(self, secret: bytes) -> None:
        # No key: a random one, fine for one process only (processes sharing a Redis
        # need the same key to count a number alike; gateway.accounts.limit_key).
        self._secret = secret or secrets.token_bytes(32)

    def key(self, kind: str, value: str) -> str:
        digest = hmac.new(self._secret, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{kind}:{digest[:32]}"


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class MemoryLimiter:
    """In-process sliding windows. Used from the event loop only (no lock). At most
    ``max_keys`` keys are kept; the least recently used go first, so a flood of
    distinct keys costs bounded memory (and can at worst forget an old key)."""

    def __init__(self, *, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) >= limit:
            return Decision(False, len(hits), _retry_after(hits[0] + window_s - now))
        hits.append(now)
        return Decision(True, len(hits), 0)

    async def close(self) -> None:
        self._hits.clear()


# KEYS[1] the sorted set; ARGV: now (ms), window (ms), limit, a unique member.
# Scores are milliseconds, so that every number Lua returns is an integer (Redis
# truncates Lua floats in replies).
_HIT_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, count, tonumber(oldest[2]) + window - now}
"""


class RedisLimiter:
    """Sliding windows in Redis, one sorted set per key under ``prefix``; each key
    expires with its window. Clocks: the calling process's wall clock (gateway hosts
    are expected to run NTP; skew only blurs a window's edge)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "optmsg:ratelimit:",
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._script: Any = client.register_script(_HIT_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisLimiter:
        client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, **kwargs)

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        now_ms = int(self._clock() * 1000)
        window_ms = max(1, int(window_s * 1000))
        member = f"{now_ms}:{secrets.token_hex(6)}"
        try:
            allowed, count, wait_ms = await self._script(
                keys=[self._prefix + key], args=[now_ms, window_ms, limit, member]
            )
        except (RedisError, OSError) as exc:
            raise RateLimitUnavailable(f"the rate limiter's Redis is unreachable: {exc}") from exc
        if allowed:
            return Decision(True, int(count), 0)
        return Decision(False, int(count), _retry_after(int(wait_ms) / 1000))

    async def close(self) -> None:
        await self._client.aclose()
