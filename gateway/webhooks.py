"""Provider webhook routes: thin adapters from aiohttp to the bridges."""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa
from aiohttp import web

from bridges.base import WebhookRequest
from bridges.errors import BridgeError, PayloadTooLarge, SignatureInvalid
from bridges.twilio import parse_status
from gateway import outbound
from gateway.keys import DATABASE, INGEST, METRICS, READ_POOL, SMS_COMMANDS, TWILIO
from gateway.live import EVENT_HUB
from gateway.problems import problem
from inbox.errors import StoreUnavailable
from inbox.message import Outcome

log = logging.getLogger(__name__)

_REJECT_REASON = {SignatureInvalid: "signature", PayloadTooLarge: "too_large"}


def _webhook_request(request: web.Request, body: bytes) -> WebhookRequest:
    # raw_path keeps the percent-encoding Twilio signed; the host part comes from config.
    # aiohttp's headers mapping is already case-insensitive: no copy on the hot path.
    return WebhookRequest(
        method=request.method, path_qs=request.raw_path, headers=request.headers, body=body
    )


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The body, refused before it is read when it is over ``limit``. The app's
    client_max_size is set for the largest API upload, far above a webhook's limit,
    so an unauthenticated sender must not get to make us buffer that much."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        return await request.read()  # exactly Content-Length bytes
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
    return bytes(body)


async def twilio_sms(request: web.Request) -> web.StreamResponse:
    app = request.app
    metrics = app[METRICS]
    bridge = app[TWILIO]
    started = time.perf_counter()
    try:
        body = await _read_bounded(request, bridge.max_body_bytes)
        response, result = await bridge.handle_sms(
            _webhook_request(request, body), app[INGEST], app[SMS_COMMANDS]
        )
    except web.HTTPRequestEntityTooLarge:
        metrics.rejected.labels(bridge.name, "too_large").inc()
        return problem(413, "request body is over the size limit")
    except BridgeError as exc:
        reason = _REJECT_REASON.get(type(exc), "malformed")
        metrics.rejected.labels(bridge.name, reason).inc()
        log.warning("twilio webhook refused (%s): %s", reason, exc)
        return problem(exc.status, str(exc))
    except StoreUnavailable:
        # Twilio does not retry a 5xx by default; operators add #rc=/#rp= to the
        # webhook URL so that it retries connection failures (see README).
        metrics.store_failures.labels(bridge.name).inc()
        return problem(503, "the message could not be stored; try again")
    if result.outcome is Outcome.UNROUTABLE:
        log.warning("twilio webhook unroutable: %s", result.reason)
    metrics.count_inbound(bridge.name, result.outcome, duplicate=result.duplicate)
    metrics.webhook_latency(bridge.name).observe(time.perf_counter() - started)
    return web.Response(
        status=response.status, body=response.body, content_type=response.content_type
    )


async def twilio_status(request: web.Request) -> web.StreamResponse:
    """Delivery status callbacks for messages we sent (StatusCallback)."""
    app = request.app
    metrics = app[METRICS]
    bridge = app[TWILIO]
    try:
        body = await _read_bounded(request, bridge.max_body_bytes)
        update = parse_status(
            bridge.verifier, _webhook_request(request, body), bridge.max_body_bytes
        )
    except BridgeError as exc:
        reason = _REJECT_REASON.get(type(exc), "malformed")
        metrics.rejected.labels(bridge.name, reason).inc()
        log.warning("twilio status callback refused (%s): %s", reason, exc)
        return problem(exc.status, str(exc))
    loop = asyncio.get_running_loop()
    try:
        moved_for = await loop.run_in_executor(
            app[READ_POOL], outbound.apply_status, app[DATABASE], update
        )
    except sa.exc.SQLAlchemyError:
        # Twilio retries a status callback on connection errors only; a 503 costs
        # at most one intermediate status, the final one will come again.
        log.exception("could not store a delivery status")
        return problem(503, "the status could not be stored; try again")
    if moved_for is not None:
        app[EVENT_HUB].notify([moved_for])
    return web.Response(status=200, text="")
