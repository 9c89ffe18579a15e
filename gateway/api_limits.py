"""The client API's per-IP limit: at most ``limits.api_requests_per_ip`` requests per
client IP (an IPv6 client: per /64) within ``limits.api_window_s``; one more is a 429
problem with Retry-After.

Every request under /api/v1 counts, whatever its route or outcome (sign-in, the
OpenAPI document, a refused token, a live-events stream), and nothing is exempt: a
runaway client is slowed before its token is even looked up. The client IP is the one
the sign-in limits use (:mod:`gateway.client_ip`): X-Forwarded-For only counts when it
comes from one of ``http.trusted_proxies``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from config import Settings
from gateway import client_ip
from gateway.api_support import Handler
from gateway.keys import AUTH
from gateway.limits import LIMITS
from gateway.metrics import Metrics
from gateway.problems import problem


def per_ip_limit(metrics: Metrics) -> Middleware:
    """The middleware; it finds the app's Limits under ``gateway.limits.LIMITS`` and the
    trusted proxies in the sign-in runtime (which a configuration reload updates)."""
    refused = metrics.api_rate_limited

    @web.middleware
    async def limit_per_ip(request: web.Request, handler: Handler) -> web.StreamResponse:
        proxies = request.config_dict[AUTH].proxies
        forwarded = request.headers.getall("X-Forwarded-For", ()) if proxies else ()
        address = client_ip.resolve(request.remote, forwarded, proxies)
        decision = await request.config_dict[LIMITS].api_ip(client_ip.bucket(address))
        if not decision.allowed:
            refused.inc()
            wait = str(decision.retry_after_s)
            return problem(
                429,
                f"too many requests from this address; try again in {wait} seconds",
                headers={"Retry-After": wait},
            )
        return await handler(request)

    return limit_per_ip


def install(api: web.Application, settings: Settings, metrics: Metrics) -> None:
    """Put the limit first on the API sub-app (before the token check), unless
    ``limits.api_requests_per_ip`` is 0."""
    if settings.limits.api_requests_per_ip:
        api.middlewares.insert(0, per_ip_limit(metrics))
