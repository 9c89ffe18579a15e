"""RFC 9457 problem details (application/problem+json) for every error we answer."""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"


def problem(
    status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "type": "about:blank",
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
