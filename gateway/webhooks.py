"""Provider webhook routes: thin adapters from aiohttp to the bridges."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from aiohttp import web

from bridges.base import WebhookRequest
from bridges.errors import BridgeError, PayloadTooLarge, SignatureInvalid
from bridges.twilio import EMPTY_TWIML, TWIML_TYPE, parse_status
from gateway import outbound
from gateway.keys import DATABASE, INGEST, METRICS, READ_POOL, SMS_COMMANDS, SPOOL, TWILIO
from gateway.live import EVENT_HUB
from gateway.metrics import Metrics
from gateway.problems import problem
from gateway.spool_replay import SMS, STATUS, WebhookSpool, encode_sms, encode_status
from inbox.errors import SpoolError, SpoolFull, StoreUnavailable
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
    spool = app[SPOOL]
    started = time.perf_counter()
    try:
        body = await _read_bounded(request, bridge.max_body_bytes)
        verified = bridge.verify_sms(_webhook_request(request, body), datetime.now(UTC))
    except web.HTTPRequestEntityTooLarge:
        metrics.rejected.labels(bridge.name, "too_large").inc()
        return problem(413, "request body is over the size limit")
    except BridgeError as exc:
        reason = _REJECT_REASON.get(type(exc), "malformed")
        metrics.rejected.labels(bridge.name, reason).inc()
        log.warning("twilio webhook refused (%s): %s", reason, exc)
        return problem(exc.status, str(exc))
    # While earlier messages wait in the spool, this one queues behind them (order:
    # a STOP spooled in an outage is not overtaken by a START stored directly).
    if not spool.pending:
        attempt = asyncio.ensure_future(
            bridge.process_sms(verified, app[INGEST], app[SMS_COMMANDS])
        )
        try:
            # Shielded: on a timeout the attempt goes on (it may still commit), and
            # the replay waits for it before storing anything spooled after it.
            async with asyncio.timeout(spool.settings.store_timeout_s):
                response, result = await asyncio.shield(attempt)
        except (StoreUnavailable, TimeoutError) as exc:
            spool.track_straggler(attempt)
            log.warning("twilio message not stored (%s); spooling it", type(exc).__name__)
        else:
            if result.outcome is Outcome.UNROUTABLE:
                log.warning("twilio webhook unroutable: %s", result.reason)
            metrics.count_inbound(bridge.name, result.outcome, duplicate=result.duplicate)
            metrics.webhook_latency(bridge.name).observe(time.perf_counter() - started)
            return web.Response(
                status=response.status, body=response.body, content_type=response.content_type
            )
    refused = await _spool(spool, metrics, bridge.name, SMS, encode_sms(verified))
    if refused is not None:
        return refused
    metrics.webhook_latency(bridge.name).observe(time.perf_counter() - started)
    # Any TwiML reply (a command's answer, HELP) would need the database; the command
    # runs when the spool is replayed, without a reply.
    return web.Response(status=200, body=EMPTY_TWIML, content_type=TWIML_TYPE)


async def _spool(
    spool: WebhookSpool, metrics: Metrics, bridge: str, kind: str, payload: bytes
) -> web.StreamResponse | None:
    """Append a verified webhook to the spool; None once it is on disk, else the 503
    to answer (Twilio drops it unless the webhook URL has the #rc=/#rp= overrides)."""
    try:
        await spool.add(payload)
    except SpoolFull:
        metrics.store_failures.labels(bridge).inc()
        metrics.spool_refused.labels(bridge, "full").inc()
        log.error(
            "the store is unavailable and the spool is full (%d bytes): webhook refused",
            spool.settings.max_bytes,
        )
        return problem(503, "the message could not be stored; try again")
    except SpoolError as exc:
        metrics.store_failures.labels(bridge).inc()
        metrics.spool_refused.labels(bridge, "error").inc()
        log.error("the store is unavailable and the spool failed: %s", exc)
        return problem(503, "the message could not be stored; try again")
    metrics.spooled.labels(bridge, kind).inc()
    return None


async def twilio_status(request: web.Request) -> web.StreamResponse:
    """Delivery status callbacks for messages we sent (StatusCallback)."""
    app = request.app
    metrics = app[METRICS]
    bridge = app[TWILIO]
    spool = app[SPOOL]
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
    if not spool.pending:
        loop = asyncio.get_running_loop()
        attempt = loop.run_in_executor(app[READ_POOL], outbound.apply_status, app[DATABASE], update)
        try:
            moved_for = await asyncio.wait_for(
                asyncio.shield(attempt), spool.settings.store_timeout_s
            )
        except (sa.exc.SQLAlchemyError, TimeoutError) as exc:
            spool.track_straggler(attempt)
            log.warning("delivery status not stored (%s); spooling it", type(exc).__name__)
        else:
            if moved_for is not None:
                app[EVENT_HUB].notify([moved_for])
            return web.Response(status=200, text="")
    refused = await _spool(spool, metrics, bridge.name, STATUS, encode_status(update))
    return refused or web.Response(status=200, text="")
