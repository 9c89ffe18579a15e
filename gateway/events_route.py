"""GET /api/v1/events: the user's live updates as Server-Sent Events.

The wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html):
each event is ``id:`` (the event's id, which the client sends back as
``Last-Event-ID`` when it reconnects), ``event:`` (its kind) and one ``data:`` line
of JSON, then a blank line. A ``retry:`` line at the start tells browsers how soon to
reconnect, and a comment line every ``events.keepalive_s`` keeps proxies from
closing an idle connection.

A stream lasts while its token does: the token is looked up again every
``events.keepalive_s`` (at most :data:`TOKEN_CHECK_MAX_S`), and a revoked token or a
suspended account ends it. A client that reads too slowly is cut off (a write not
taken within :data:`WRITE_TIMEOUT_S`, or more than ``gateway.live.MAX_QUEUED_BYTES``
waiting); it resumes with Last-Event-ID and misses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway.api_support import USER_ID, ApiProblem, Handler, db_of, in_pool, quick_read
from gateway.keys import DATABASE, SETTINGS
from gateway.live import (
    CLOSE,
    EVENT_HUB,
    TICK,
    EventHub,
    HubClosed,
    HubFull,
    Stream,
    TooManyStreams,
    frame,
)
from gateway.problems import problem
from inbox import events, store

log = logging.getLogger(__name__)

#: How soon (ms) an EventSource reconnects after the stream ends.
RETRY_MS = 3000
#: The event that tells a client to refetch its lists: what it missed is unknown.
RESET = "reset"
MAX_EVENT_ID = 2**63 - 1
#: A write the client has not taken within this long ends the stream. Without a bound
#: a client that stops reading (a suspended laptop, a hostile peer) holds its handler
#: and connection forever; 20 s is far beyond a slow but live mobile link's stall.
WRITE_TIMEOUT_S = 20.0
#: The stream's token is checked again at least this often, whatever is sent.
TOKEN_CHECK_MAX_S = 15.0
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _last_event_id(request: web.Request) -> int | None:
    """``Last-Event-ID`` (what EventSource sends), else ``?last_event_id=`` (for
    clients that cannot set headers). Empty means none; anything else that is not an
    id this server could have sent is a 400, so that a client bug is not silently
    turned into a stream that skips or repeats events."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.query.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_EVENT_ID:
        raise ApiProblem(400, "Last-Event-ID must be the id of an event this stream sent")
    return int(value)


async def event_stream(request: web.Request) -> web.StreamResponse:
    user_id = request[USER_ID]
    config = request.config_dict[SETTINGS].current.events
    hub: EventHub = request.config_dict[EVENT_HUB]
    last = _last_event_id(request)
    start = await in_pool(request, events.start, db_of(request), user_id, last, config.replay_max)
    retry_after = {"Retry-After": str(int(config.keepalive_s))}
    try:
        stream = hub.open(user_id, start.cursor, on_drop=lambda: _abort(request))
    except TooManyStreams as exc:
        return problem(429, str(exc), headers=retry_after)
    except (HubFull, HubClosed) as exc:
        return problem(503, str(exc), headers=retry_after)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                # nginx buffers proxied responses unless told not to.
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        head = f"retry: {RETRY_MS}\n\n".encode()
        if start.reset:
            head += frame(start.cursor, RESET, {"reason": "refetch your lists"})
        if await _write(request, response, head):
            await _pump(request, response, stream, config.keepalive_s)
    except ConnectionError:  # reset by the client, or aborted here (too slow)
        log.debug("event stream client went away")
    finally:
        hub.close(stream)
    return response


def _abort(request: web.Request) -> None:
    """Drop the connection at once: a pending write fails instead of waiting for a
    client that does not read, and aiohttp's closing write_eof cannot block either."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _write(request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
    """Send ``data``; False (and the connection aborted) when the client has not
    taken it within :data:`WRITE_TIMEOUT_S`."""
    try:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)
    except TimeoutError:
        log.info("event stream client stopped reading; ending the stream")
        _abort(request)
        return False
    return True


async def _token_still_valid(request: web.Request, token: str, user_id: str) -> bool:
    """Whether the stream's token still belongs to its user and the account is not
    suspended. Read from the database, not the auth cache: the point is to notice a
    change made since the stream opened, possibly by another process."""
    try:
        owner = await quick_read(request, store.token_owner, request.config_dict[DATABASE], token)
    except Exception:  # cannot tell: end the stream; the reconnect is authenticated afresh
        log.exception("re-checking an event stream's token failed")
        return False
    return owner is not None and owner.user_id == user_id and not owner.suspended


async def _pump(
    request: web.Request, response: web.StreamResponse, stream: Stream, keepalive_s: float
) -> None:
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    check_every = min(keepalive_s, TOKEN_CHECK_MAX_S)
    last_write = last_check = time.monotonic()
    while True:
        item = await stream.get()
        # Checked on every wake-up once due, busy or idle (ticks come at least every
        # keepalive_s), so that a steady flow of events cannot keep a revoked token's
        # stream open.
        if time.monotonic() - last_check >= check_every:
            if not await _token_still_valid(request, token, stream.user_id):
                return
            last_check = time.monotonic()
        if item is TICK:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            if time.monotonic() - last_write < keepalive_s:
                continue
            if not await _write(request, response, b": keep-alive\n\n"):
                return
            last_write = time.monotonic()
            continue
        chunks: list[bytes] = []
        closing = item is CLOSE
        while not closing:
            if item is not TICK:
                chunks.append(item)
            if stream.queue.empty():
                break
            item = stream.get_nowait()
            closing = item is CLOSE
        if chunks:
            if not await _write(request, response, b"".join(chunks)):
                return
            last_write = time.monotonic()
        if closing:
            return


@web.middleware
async def notify_after_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A successful write through the API may have recorded events (a message read or
    deleted, a screener decision, a message sent): wake the user's streams, here and
    in the other gateway processes. A wake with nothing new costs one indexed query."""
    response = await handler(request)
    if request.method in _WRITE_METHODS and response.status < 400 and USER_ID in request:
        hub = request.config_dict.get(EVENT_HUB)
        if hub is not None:
            hub.notify([request[USER_ID]])
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/events", event_stream)
