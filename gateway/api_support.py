"""What every client-API route module shares: authentication, problems, request
parsing (JSON bodies with limits, paging parameters), ETags and the read pool."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gateway.accounts import TOKEN_USE_INTERVAL_S
from gateway.keys import AUTH, DATABASE, READ_POOL, SETTINGS
from gateway.problems import problem
from inbox import store
from inbox.db import Database
from inbox.errors import NotFound

API_PREFIX = "/api/v1"
USER_ID = web.RequestKey("user_id", str)
#: The id of the token the request came with (sign-out revokes it).
TOKEN_ID = web.RequestKey("token_id", str)
_PUBLIC = frozenset({f"{API_PREFIX}/openapi.json"})
#: Sign-up and sign-in happen before the client has a token.
PUBLIC_PREFIX = f"{API_PREFIX}/auth/"

log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def in_pool(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Database calls are blocking; they run on the read pool, never on the event loop.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        request.config_dict[READ_POOL], functools.partial(fn, *args, **kwargs)
    )


async def quick_read(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a small read bounded by an index (a token lookup, one page of messages).

    On SQLite (``database.inline_reads``) it runs right here on the event loop: such
    a read takes a fraction of a millisecond, while handing it to a pool thread and
    back cost about as much again in thread switches and GIL hand-offs (measured:
    GET /messages went from ~800 to ~1,550 req/s on the reference machine). Never
    for PostgreSQL (network round trips), nor for reads without a small fixed bound
    (a page is at most store.MAX_PAGE rows; screener groupings, exports and the like
    stay on the pool).
    """
    if (
        request.config_dict[DATABASE].is_sqlite
        and request.config_dict[SETTINGS].current.database.inline_reads
    ):
        return fn(*args, **kwargs)
    return await in_pool(request, fn, *args, **kwargs)


def unauthorized(detail: str) -> web.Response:
    return problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="optmsg"'})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC or request.path.startswith(PUBLIC_PREFIX):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthorized("missing bearer token")
    token = token.strip()
    cache = request.config_dict[AUTH].tokens
    digest = store.hash_token(token)
    owner = cache.get(digest)
    if owner is None:
        since = cache.generation
        owner = await quick_read(request, store.token_owner, request.config_dict[DATABASE], token)
        if owner is None:
            return unauthorized("invalid or revoked token")
        cache.put(digest, owner, since)
    if owner.suspended:
        return problem(403, "account suspended: the operator has suspended this account")
    request[USER_ID] = owner.user_id
    request[TOKEN_ID] = owner.token_id
    note_token_use(request, digest, owner)
    return await handler(request)


def note_token_use(request: web.Request, digest: str, owner: store.TokenOwner) -> None:
    """Note the token's use in memory when its last use is over a minute old; the app
    writes noted uses every few seconds (gateway.accounts.flush_token_use). The
    cached owner gets the new time, so that the next requests do not note it again."""
    now = datetime.now(UTC)
    last = owner.last_used_at
    if last is None or (now - last).total_seconds() >= TOKEN_USE_INTERVAL_S:
        runtime = request.config_dict[AUTH]
        runtime.token_use.note(owner.token_id, now)
        runtime.tokens.refresh(digest, dataclasses.replace(owner, last_used_at=now))


class ApiProblem(Exception):
    """Raised by request parsing helpers; answered as a problem by :func:`api_problems`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@web.middleware
async def api_problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as exc:
        if exc.status == 401:
            return unauthorized(exc.detail)
        return problem(exc.status, exc.detail)


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int | None:
    """The parameter's value, its default when absent, or None when out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        return None
    return int(raw)


def etag_of(body: bytes) -> str:
    """A strong validator of exactly these bytes (the JSON the response carries)."""
    return hashlib.sha256(body).hexdigest()[:32]


def not_modified(request: web.Request, etag: str) -> bool:
    """True when If-None-Match names ``etag`` or is ``*``. RFC 9110 compares weakly
    here, so ``W/"x"`` matches ``"x"``."""
    tags = request.if_none_match
    return tags is not None and any(t.value in (etag, "*") for t in tags)


def json_with_etag(request: web.Request, data: Any, *, conditional: bool = True) -> web.Response:
    """``data`` as JSON with its ETag; 304 with no body when the client has it already."""
    body = orjson.dumps(data)
    etag = etag_of(body)
    if conditional and not_modified(request, etag):
        response = web.Response(status=304)
    else:
        response = web.Response(body=body, content_type="application/json")
    response.etag = etag
    return response


_READ_CHUNK = 64 * 1024


def db_of(request: web.Request) -> Database:
    return request.config_dict[DATABASE]


def page_params(request: web.Request) -> tuple[int, str | None]:
    limit = query_int(request, "limit", 50, 1, store.MAX_PAGE)
    if limit is None:
        raise ApiProblem(400, f"limit must be a whole number from 1 to {store.MAX_PAGE}")
    return limit, request.query.get("cursor") or None


async def fetch_page(
    request: web.Request,
    fetch: Callable[..., store.Page],
    *args: Any,
    quick: bool = False,
    **kwargs: Any,
) -> store.Page:
    """One page of the user's list from ``fetch(db, user_id, *args, limit=, cursor=,
    **kwargs)``, with the request's limit and cursor (400 for a bad one). ``quick``:
    a keyset page read straight off an index (see :func:`quick_read`)."""
    limit, cursor = page_params(request)
    try:
        return await (quick_read if quick else in_pool)(
            request,
            fetch,
            db_of(request),
            request[USER_ID],
            *args,
            limit=limit,
            cursor=cursor,
            **kwargs,
        )
    except store.InvalidCursor as exc:
        raise ApiProblem(400, str(exc)) from None


def page_response(page: store.Page) -> web.Response:
    return web.Response(
        body=orjson.dumps({"items": page.items, "next": page.next}),
        content_type="application/json",
    )


def query_bool(request: web.Request, name: str, default: T) -> bool | T:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise ApiProblem(400, f"{name} must be true or false")
    return raw == "true"


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes:
    from Content-Length when there is one, and from the bytes actually received (a
    chunked body has no Content-Length; a lying one is not trusted)."""
    too_large = ApiProblem(413, f"the request body is over the limit of {limit:,} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def json_object(request: web.Request, fields: Sequence[str]) -> dict[str, Any]:
    """The JSON object in the body (at most settings.http.max_api_body_bytes), with no
    members other than ``fields``."""
    raw = await read_body(request, request.config_dict[SETTINGS].current.http.max_api_body_bytes)
    if not raw.strip():
        raise ApiProblem(400, "the body must be a JSON object")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiProblem(
            400, f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (UnicodeDecodeError, RecursionError):
        raise ApiProblem(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiProblem(400, f"unknown field {unknown[0]!r}; the fields are: {', '.join(fields)}")
    return body


def string_list(body: dict[str, Any], name: str, max_chars: int) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiProblem(400, f"{name} must be a list of strings")
    if not value:
        raise ApiProblem(400, f"{name} must not be empty")
    if any(not v or len(v) > max_chars for v in value):
        raise ApiProblem(400, f"each of {name} must be 1 to {max_chars} characters")
    return value


async def user_region(request: web.Request) -> str:
    """The authenticated user's region, for numbers written without a country code."""
    try:
        user = await in_pool(request, store.get_user, db_of(request), request[USER_ID])
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None  # deleted meanwhile
    return user.region or request.config_dict[SETTINGS].current.optin.default_region
