"""What the client API's per-IP limit costs a request, per limiter backend.

Runs the middleware's work (client IP from the peer, its bucket, the HMAC'd key, one
hit) N times on one event loop and reports CPU and wall time per request for:

(a) the in-process limiter (no Redis: gateway.ratelimit.MemoryLimiter);
(b) the shared limiter on Redis (gateway.ratelimit_shared.SharedLimiter), including
    its exchanges: one per 450 requests, i.e. every 0.25 s at 1,800 req/s;
(c) for comparison, a Redis round trip per request (gateway.ratelimit.RedisLimiter,
    the sign-in limits' backend), which the API limit does not use.

Set the figures against "server CPU per request" of bench/messages_api.py (~470 µs on
the reference machine) for the share of a GET /api/v1/messages request. Redis on
127.0.0.1:6379; keys under a random prefix, deleted afterwards.

Usage: .venv/bin/python bench/api_limits.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from gateway import client_ip  # noqa: E402
from gateway.ratelimit import KeyHasher, MemoryLimiter, RateLimiter, RedisLimiter  # noqa: E402
from gateway.ratelimit_shared import SharedLimiter  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENTS = [f"203.0.113.{i}" for i in range(50)]
SYNC_EVERY = 450
REFERENCE_CPU_US = 470.0


async def measure(name: str, limiter: RateLimiter, requests: int) -> None:
    keys = KeyHasher(secrets.token_bytes(32))
    shared = limiter if isinstance(limiter, SharedLimiter) else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(requests):
        bucket = client_ip.bucket(client_ip.resolve(CLIENTS[i % len(CLIENTS)], (), ()))
        # Never reached: the cost of counting, not of refusing.
        await limiter.hit(keys.key("api:ip", bucket), 10_000_000, 60)
        if shared is not None and i % SYNC_EVERY == 0:
            await shared.sync()
    cpu_us = (time.process_time() - cpu0) / requests * 1e6
    wall_us = (time.perf_counter() - wall0) / requests * 1e6
    share = cpu_us / REFERENCE_CPU_US * 100
    print(f"| {name} | {cpu_us:.1f} | {wall_us:.1f} | {share:.1f}% |")


async def main(requests: int) -> None:
    prefix = f"optmsg-bench-{secrets.token_hex(4)}:"
    print("| backend | CPU µs/request | wall µs/request | share of ~470 µs |")
    print("|---|---:|---:|---:|")
    await measure("(a) in-process", MemoryLimiter(), requests)
    shared = SharedLimiter.from_url(REDIS_URL, prefix=prefix + "shared:")
    per_request = RedisLimiter.from_url(REDIS_URL, prefix=prefix + "lua:")
    try:
        await measure("(b) Redis, shared in batches", shared, requests)
        await measure("(c) Redis, a round trip per request", per_request, requests)
    finally:
        await shared.close()
        await per_request.close()
        client = redis.Redis.from_url(REDIS_URL)
        found = list(client.scan_iter(match=prefix + "*"))
        if found:
            client.delete(*found)
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().requests))
