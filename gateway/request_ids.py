"""A request id on every HTTP request: taken from the client's ``X-Request-Id`` when it
is a sane token (a load balancer's id ties our log lines to its own), else made here;
bound to the log context for the request's lines and echoed in the response."""

from __future__ import annotations

import itertools
import re
import secrets

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.api_support import Handler

HEADER = "X-Request-Id"
# Anything else (long, spaces, control characters) could forge or break log lines.
_SANE = re.compile(r"[A-Za-z0-9._:-]{8,64}")


class RequestIds:
    """Ids unique within this process and, by a random prefix, across processes and
    restarts: a counter instead of a random draw per request (a system call each)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFF:08x}"


def request_id_of(request: web.Request, ids: RequestIds) -> str:
    incoming = request.headers.get(HEADER)
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return ids.next()


def request_ids() -> Middleware:
    """The middleware, with its own id source (one per app)."""
    ids = RequestIds()

    @web.middleware
    async def bind_request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_of(request, ids)
        # Each aiohttp request runs in its own task, so the binding is this request's
        # alone and needs no clean-up when the task ends.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = await handler(request)
        if not response.prepared:
            response.headers[HEADER] = request_id
        return response

    return bind_request_id
