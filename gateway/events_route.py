"""GET /api/v1/events: the user's live updates as Server-Sent Events.

The wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html):
each event is ``id:`` (the event's id, which the client sends back as
``Last-Event-ID`` when it reconnects), ``event:`` (its kind) and one ``data:`` line
of JSON, then a blank line. A ``retry:`` line at the start tells browsers how soon to
reconnect, and a comment line every ``events.keepalive_s`` keeps proxies from
closing an idle connection.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway.api_support import USER_ID, ApiProblem, Handler, db_of, in_pool
from gateway.keys import DATABASE, SETTINGS
from gateway.live import CLOSE, EVENT_HUB, TICK, EventHub, HubClosed, Stream, TooManyStreams, frame
from gateway.problems import problem
from inbox import events, store

log = logging.getLogger(__name__)

#: How soon (ms) an EventSource reconnects after the stream ends.
RETRY_MS = 3000
#: The event that tells a client to refetch its lists: what it missed is unknown.
RESET = "reset"
MAX_EVENT_ID = 2**63 - 1
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
    config = request.config_dict[SETTINGS].events
    hub: EventHub = request.config_dict[EVENT_HUB]
    last = _last_event_id(request)
    start = await in_pool(request, events.start, db_of(request), user_id, last, config.replay_max)
    try:
        stream = hub.open(user_id, start.cursor)
    except TooManyStreams as exc:
        return problem(429, str(exc), headers={"Retry-After": str(int(config.keepalive_s))})
    except HubClosed as exc:
        return problem(503, str(exc))
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
        await response.write(head)
        await _pump(request, response, stream, config.keepalive_s)
    except ConnectionResetError:
        log.debug("event stream client went away")
    finally:
        hub.close(stream)
    return response


async def _pump(
    request: web.Request, response: web.StreamResponse, stream: Stream, keepalive_s: float
) -> None:
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    last_write = time.monotonic()
    while True:
        item = await stream.queue.get()
        if item is TICK:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            if time.monotonic() - last_write < keepalive_s:
                continue
            # A token revoked (or its account deleted) since the stream opened ends it.
            owner = await in_pool(
                request, store.user_for_token, request.config_dict[DATABASE], token
            )
            if owner != stream.user_id:
                return
            await response.write(b": keep-alive\n\n")
            last_write = time.monotonic()
            continue
        chunks: list[bytes] = []
        closing = item is CLOSE
        while not closing:
            if item is not TICK:
                chunks.append(item)
            if stream.queue.empty():
                break
            item = stream.queue.get_nowait()
            closing = item is CLOSE
        if chunks:
            await response.write(b"".join(chunks))
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
