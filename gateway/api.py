"""Client API under /api/v1: bearer tokens, every query scoped to the token's user."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from gateway.keys import DATABASE, READ_POOL
from gateway.openapi import openapi_document
from gateway.problems import problem
from inbox import store
from inbox.errors import NotFound
from inbox.ids import looks_like_id
from inbox.message import Folder

API_PREFIX = "/api/v1"
USER_ID = web.RequestKey("user_id", str)
_PUBLIC = frozenset({f"{API_PREFIX}/openapi.json"})

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _in_pool(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Database calls are blocking; they run on the read pool, never on the event loop.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        request.config_dict[READ_POOL], functools.partial(fn, *args, **kwargs)
    )


def _unauthorized(detail: str) -> web.Response:
    return problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="optmsg"'})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token")
    user_id = await _in_pool(
        request, store.user_for_token, request.config_dict[DATABASE], token.strip()
    )
    if user_id is None:
        return _unauthorized("invalid or revoked token")
    request[USER_ID] = user_id
    return await handler(request)


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int | None:
    """The parameter's value, its default when absent, or None when out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        return None
    return int(raw)


async def list_messages(request: web.Request) -> web.StreamResponse:
    folder_raw = request.query.get("folder", "inbox")
    try:
        folder = Folder(folder_raw)
    except ValueError:
        return problem(400, "folder must be one of: inbox, quarantine")
    limit = _query_int(request, "limit", 50, 1, store.MAX_PAGE)
    if limit is None:
        return problem(400, f"limit must be a whole number from 1 to {store.MAX_PAGE}")
    cursor = request.query.get("cursor") or None
    try:
        page = await _in_pool(
            request,
            store.list_messages,
            request.config_dict[DATABASE],
            request[USER_ID],
            folder,
            limit=limit,
            cursor=cursor,
        )
    except store.InvalidCursor as exc:
        return problem(400, str(exc))
    return web.json_response({"items": page.items, "next": page.next})


async def get_message(request: web.Request) -> web.StreamResponse:
    message_id = request.match_info["message_id"]
    if not looks_like_id("msg", message_id):
        return problem(404, "no such message")  # no query for what cannot be an id
    try:
        message = await _in_pool(
            request, store.get_message, request.config_dict[DATABASE], request[USER_ID], message_id
        )
    except NotFound:
        return problem(404, "no such message")
    return web.json_response(message)


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


def api_app() -> web.Application:
    """The client API as a sub-application, so that its middleware (token checks)
    runs for API requests only and never on the provider webhooks' hot path."""
    api = web.Application(middlewares=[bearer_auth])
    api.router.add_get("/openapi.json", openapi)
    api.router.add_get("/messages", list_messages)
    api.router.add_get("/messages/{message_id}", get_message)
    return api
