"""A request id on every HTTP request: taken from the client's ``X-Request-Id`` when it
is a sane token (a load balancer's id ties our log lines to its own), else made here;
bound to the log context for the request's lines and echoed in the response."""

from __future__ import annotations

import re
import secrets

import structlog
from aiohttp import web

from gateway.api_support import Handler

HEADER = "X-Request-Id"
# Anything else (long, spaces, control characters) could forge or break log lines.
_SANE = re.compile(r"[A-Za-z0-9._:-]{8,64}")


def request_id_of(request: web.Request) -> str:
    incoming = request.headers.get(HEADER)
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return secrets.token_hex(8)


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    # Each aiohttp request runs in its own task, so the binding is this request's
    # alone and needs no clean-up when the task ends.
    structlog.contextvars.bind_contextvars(request_id=request_id)
    response = await handler(request)
    if not response.prepared:
        response.headers[HEADER] = request_id
    return response
