"""The gateway's traffic limits (``[limits]``): floods from one sender to one recipient
address on inbound, and requests per client IP on the client API.

Both count with one limiter per app: in-process (:class:`gateway.ratelimit.MemoryLimiter`)
without Redis, else :class:`gateway.ratelimit_shared.SharedLimiter`, which every gateway
process on that Redis shares. Keys are HMACs (:class:`gateway.ratelimit.KeyHasher`,
the sign-in limits' key), so Redis never holds a phone number, an address or an IP.

Unlike the sign-in limits, which refuse (503) when their Redis is unreachable, these
fail open to per-process counting: an inbound message is never refused for a limit
(it is stored and at worst held), and the API limit is a brake on runaway clients, not
what protects anyone's data (bearer tokens do), so serving on is the lesser harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from config import Settings
from gateway.accounts import Throttle
from gateway.metrics import Metrics
from gateway.ratelimit import (
    Decision,
    KeyHasher,
    MemoryLimiter,
    RateLimiter,
    RateLimitUnavailable,
)
from gateway.ratelimit_shared import SharedLimiter
from inbox.message import Flood, Inbound, IngestResult

log = logging.getLogger(__name__)

Submit = Callable[[Inbound], Awaitable[IngestResult]]
#: A failing Redis is logged at most this often; every failure is counted.
ERROR_LOG_INTERVAL_S = 60.0


class Limits:
    """One app's limits: ``flood`` for inbound, ``api_ip`` for the client API."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        keys: KeyHasher,
        limiter: RateLimiter,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._now = now
        self.settings = settings.limits
        self._metrics = metrics
        self._keys = keys
        self.limiter = limiter
        self._error_log = Throttle(ERROR_LOG_INTERVAL_S)

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics, keys: KeyHasher) -> Limits:
        limiter: RateLimiter
        if settings.redis.url:
            limiter = SharedLimiter.from_url(
                settings.redis.url, prefix=f"{settings.redis.namespace}:limits:"
            )
        else:
            limiter = MemoryLimiter()
        return cls(settings, metrics, keys, limiter)

    def _failed(self, exc: Exception) -> None:
        self._metrics.ratelimit_errors.inc()
        if self._error_log.due("sync"):
            log.warning("flood and API limits counted by this process alone: %s", exc)

    async def flood(self, inbound: Inbound) -> Flood | None:
        """The message's flood verdict: None within the limit, else a Flood (announced
        for the first message held in a window). A message received more than a window
        ago (a backlog being worked off after a restart) is not counted: when it came
        says nothing about a flood now, and the backlog's burst is our own."""
        limits = self.settings
        window = limits.sender_window_s
        if (self._now() - inbound.received_at).total_seconds() > window:
            return None
        pair = f"{inbound.recipient}\x00{inbound.sender}"
        decision = await self.limiter.hit(
            self._keys.key("flood", pair), limits.sender_messages, window
        )
        if decision.allowed:
            return None
        notice = await self.limiter.hit(self._keys.key("flood-notice", pair), 1, window)
        return Flood(limits.sender_messages, window, announce=notice.allowed)

    async def api_ip(self, bucket: str) -> Decision:
        limits = self.settings
        return await self.limiter.hit(
            self._keys.key("api:ip", bucket), limits.api_requests_per_ip, limits.api_window_s
        )

    def guard(self, submit: Submit) -> Submit:
        """``submit`` with the flood verdict attached to each message first, and held
        messages counted (optmsg_flood_held_total)."""
        held = self._metrics.flood_held

        async def guarded(inbound: Inbound) -> IngestResult:
            flood = await self.flood(inbound)
            if flood is not None:
                inbound = dataclasses.replace(inbound, flood=flood)
            result = await submit(inbound)
            if result.held_for_flood:
                held.labels(inbound.bridge).inc()
            return result

        return guarded

    async def sync_periodically(self) -> None:
        """Exchange counts with Redis every ``limits.sync_interval_s`` (SharedLimiter)."""
        limiter = self.limiter
        if not isinstance(limiter, SharedLimiter):
            return
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            try:
                await self.sync_once()
            except Exception:
                log.exception("exchanging rate-limit counts failed; will retry")

    async def sync_once(self) -> None:
        """One exchange (SharedLimiter only); a failing Redis is counted and logged."""
        if isinstance(self.limiter, SharedLimiter):
            try:
                await self.limiter.sync()
            except RateLimitUnavailable as exc:
                self._failed(exc)

    def install(self, app: web.Application) -> None:
        """Keep these limits on ``app`` (LIMITS) and exchange counts while it runs."""
        app[LIMITS] = self

        async def running(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(self.sync_periodically(), name="limits-sync")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await self.close()

        app.cleanup_ctx.append(running)

    async def close(self) -> None:
        if isinstance(self.limiter, SharedLimiter):
            # Hand this process's last hits to the others before leaving, if Redis
            # answers; they only matter for the rest of their window.
            with contextlib.suppress(RateLimitUnavailable):
                await self.limiter.sync()
        await self.limiter.close()


LIMITS = web.AppKey("limits", Limits)
