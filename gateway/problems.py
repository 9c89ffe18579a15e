"""RFC 9457 problem details (application/problem+json) for every error we answer.

Every problem carries a stable ``type``: a tag URI (RFC 4151) naming its class, so a
client can branch on it without parsing ``detail`` (which is for people and may be
reworded). Tag URIs are names, not links: nothing is served at them, and RFC 9457
advises clients never to dereference a type. The list is :data:`PROBLEM_TYPES`; the
OpenAPI document and the README enumerate it from here.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"
TYPE_PREFIX = "tag:optmsg.example,2026:problems/"

#: The class of every status we answer with, as the last part of its type URI.
_BY_STATUS: dict[int, str] = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    410: "gone",
    412: "precondition-failed",
    413: "too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    428: "precondition-required",
    429: "rate-limited",
    500: "internal",
    502: "bad-gateway",
    503: "unavailable",
    504: "gateway-timeout",
}
# A status with no class of its own (rare, e.g. 418) still gets a stable type.
_CLIENT_ERROR = "client-error"
_SERVER_ERROR = "server-error"

#: Every type URI a problem can carry.
PROBLEM_TYPES: tuple[str, ...] = tuple(
    TYPE_PREFIX + slug for slug in (*_BY_STATUS.values(), _CLIENT_ERROR, _SERVER_ERROR)
)


def problem_type(status: int) -> str:
    """The type URI of a problem answered with ``status``."""
    slug = _BY_STATUS.get(status, _SERVER_ERROR if status >= 500 else _CLIENT_ERROR)
    return TYPE_PREFIX + slug


def problem(
    status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "type": problem_type(status),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )
