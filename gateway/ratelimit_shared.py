"""A rate limiter for hot paths, shared through Redis without a round trip per hit.

:class:`gateway.ratelimit.RedisLimiter` asks Redis on every hit: exact, and right for
sign-in codes (a few requests a minute), but one Lua call costs 120-150 µs of
event-loop CPU here, a quarter to a third of a client API request (bench/api_limits.py).
:class:`SharedLimiter` decides each hit in-process instead, from what it knows of
every process's count, and exchanges counts with Redis in one round trip (one Lua call)
per ``sync()`` (run every ``limits.sync_interval_s`` by the app):

- the window is a *sliding window counter*: a counter per fixed window (``INCRBY`` on
  ``<prefix><key>:<window number>``, expiring after two windows), and the sliding
  count estimated as the previous window's count, weighted by how much of it still
  overlaps the sliding window, plus the current one's. Memory is two integers per key
  in Redis whatever the limit, and the estimate slides in-process between exchanges;
- an exchange adds this process's new hits and reads back the totals, so a process
  learns of the others' hits at most one interval late: together the processes may
  let through what they receive in one interval beyond the limit;
- when Redis cannot be reached, each process goes on limiting with what it knows
  (its own hits and the last totals) and ``sync()`` raises
  :class:`~gateway.ratelimit.RateLimitUnavailable`; the hits are sent at the next
  successful exchange.

As with the other limiters, a refused hit is not counted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.ratelimit import Clock, Decision, RateLimitUnavailable


@dataclass(slots=True)
class _Key:
    window_ms: int
    # Window number -> hits known: every process's as of the last exchange, plus this
    # process's since. Only the current and the previous window are kept.
    counts: dict[int, int] = field(default_factory=dict)


def _retry_after_ms(prev: int, cur: int, limit: int, now_ms: int, number: int, w: int) -> float:
    """Milliseconds until one more hit fits, if nothing else is counted meanwhile."""
    start = number * w
    if cur + 1 <= limit:
        # Within this window, once enough of the previous one has slid out.
        fraction = 1 - (limit - 1 - cur) / prev if prev else 0.0
        return start + fraction * w - now_ms
    # Not before the next window, where this window's hits weigh as the previous ones.
    fraction = 1 - (limit - 1) / cur
    return start + w + fraction * w - now_ms


# KEYS: counters; ARGV: per counter, the hits to add (0: only read) and its lifetime
# in ms. Returns each counter's total. One call for many counters: a pipeline of
# separate commands cost ~3x the client CPU (redis-py packs and parses every reply in
# Python; measured with 1,000 distinct senders: 45 against 14 µs per message). Keys
# span hash slots: a single Redis (or a primary with replicas), not Redis Cluster.
_EXCHANGE_SCRIPT = """
local out = {}
for i, name in ipairs(KEYS) do
  local hits = tonumber(ARGV[2 * i - 1])
  if hits > 0 then
    out[i] = redis.call('INCRBY', name, hits)
    redis.call('PEXPIRE', name, ARGV[2 * i])
  else
    out[i] = tonumber(redis.call('GET', name) or '0')
  end
end
return out
"""
#: Counters per script call (a call blocks Redis while it runs: keep each short).
_BATCH = 1000


class SharedLimiter:
    """See the module docstring. Used from the event loop only: ``hit`` never awaits,
    so it is atomic there; ``sync`` swaps out what it sends before its one await."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        clock: Clock = time.time,
        max_keys: int = 100_000,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._max_keys = max_keys
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        # (key, window number) -> hits of this process not yet sent.
        self._pending: dict[tuple[str, int], int] = {}
        # Keys hit (allowed or refused) since the last exchange: their totals are read.
        self._touched: set[str] = set()
        self._script: Any = client.register_script(_EXCHANGE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> SharedLimiter:
        # Short timeouts: an exchange that hangs only delays what others learn.
        client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    def _entry(self, key: str, window_ms: int) -> _Key:
        entry = self._keys.get(key)
        if entry is None or entry.window_ms != window_ms:
            entry = self._keys[key] = _Key(window_ms)
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return entry

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        now_ms = int(self._clock() * 1000)
        w = max(1, int(window_s * 1000))
        number = now_ms // w
        entry = self._entry(key, w)
        counts = entry.counts
        for old in [n for n in counts if n < number - 1]:
            del counts[old]
        prev, cur = counts.get(number - 1, 0), counts.get(number, 0)
        overlap = 1 - (now_ms - number * w) / w
        estimate = prev * overlap + cur
        self._touched.add(key)
        if estimate + 1 > limit:
            wait = _retry_after_ms(prev, cur, limit, now_ms, number, w)
            return Decision(False, math.ceil(estimate), max(1, math.ceil(wait / 1000)))
        counts[number] = cur + 1
        slot = (key, number)
        self._pending[slot] = self._pending.get(slot, 0) + 1
        return Decision(True, math.floor(estimate) + 1, 0)

    def _name(self, key: str, number: int) -> str:
        return f"{self._prefix}{key}:{number}"

    async def sync(self) -> int:
        """One exchange with Redis: send this process's new hits, read the totals of the
        keys hit since the last exchange (their current and previous windows). Returns
        how many counters were exchanged. Raises RateLimitUnavailable when Redis cannot
        be reached (the hits are kept for the next exchange)."""
        if not self._pending and not self._touched:
            return 0
        pending, self._pending = self._pending, {}
        touched, self._touched = self._touched, set()
        now_ms = int(self._clock() * 1000)
        # (key, window number) -> hits to add (0: only read).
        counters: dict[tuple[str, int], int] = {}
        for (key, number), hits in pending.items():
            if key in self._keys:  # else forgotten (bounded memory): uncounted
                counters[(key, number)] = hits
                touched.add(key)
        for key in touched:
            entry = self._keys.get(key)
            if entry is not None:
                current = now_ms // entry.window_ms
                counters.setdefault((key, current - 1), 0)
                counters.setdefault((key, current), 0)
        slots = list(counters)
        try:
            values: list[int] = []
            for start in range(0, len(slots), _BATCH):
                chunk = slots[start : start + _BATCH]
                args: list[int] = []
                for slot in chunk:
                    # The previous window is read during the whole current one.
                    args += (counters[slot], 2 * self._keys[slot[0]].window_ms + 1000)
                names = [self._name(key, number) for key, number in chunk]
                values += await self._script(keys=names, args=args)
        except (RedisError, OSError) as exc:
            for slot, hits in pending.items():
                entry = self._keys.get(slot[0])
                if entry is not None and slot[1] >= now_ms // entry.window_ms - 1:
                    self._pending[slot] = self._pending.get(slot, 0) + hits
            self._touched |= touched
            raise RateLimitUnavailable(f"the rate limiter's Redis is unreachable: {exc}") from exc
        for (key, number), value in zip(slots, values, strict=True):
            entry = self._keys.get(key)
            if entry is not None:
                # Hits made here during the exchange are not in Redis's total yet.
                entry.counts[number] = int(value) + self._pending.get((key, number), 0)
        return len(slots)

    async def close(self) -> None:
        self._keys.clear()
        self._pending.clear()
        await self._client.aclose()
