"""Client API under /api/v1: bearer tokens, every query scoped to the token's user."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import quote

from aiohttp import web

from bridges.sanitize import safe_filename
from gateway import outbound
from gateway.keys import BLOBS, DATABASE, JOBS, READ_POOL, SETTINGS
from gateway.media_jobs import media_policy
from gateway.openapi import openapi_document
from gateway.problems import problem
from inbox import store
from inbox.addresses import E164
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import AddressError, NotFound
from inbox.ids import looks_like_id
from inbox.outbound import SendRefused
from optin import address_book, screener, trust
from optin.contacts import ContactsTooLarge, MalformedContacts, parse_contacts
from optin.decide import TrustVerdict
from optin.errors import NothingToUndo, TrustEntryNotFound
from optin.screener import DecisionResult

log = logging.getLogger(__name__)
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
            return _unauthorized(exc.detail)
        return problem(exc.status, exc.detail)


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int | None:
    """The parameter's value, its default when absent, or None when out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        return None
    return int(raw)


def _etag_of(body: bytes) -> str:
    """A strong validator of exactly these bytes (the JSON the response carries)."""
    return hashlib.sha256(body).hexdigest()[:32]


def _not_modified(request: web.Request, etag: str) -> bool:
    """True when If-None-Match names ``etag`` or is ``*``. RFC 9110 compares weakly
    here, so ``W/"x"`` matches ``"x"``."""
    tags = request.if_none_match
    return tags is not None and any(t.value in (etag, "*") for t in tags)


def _json_with_etag(request: web.Request, data: Any, *, conditional: bool = True) -> web.Response:
    """``data`` as JSON with its ETag; 304 with no body when the client has it already."""
    body = json.dumps(data).encode("utf-8")
    etag = _etag_of(body)
    if conditional and _not_modified(request, etag):
        response = web.Response(status=304)
    else:
        response = web.Response(body=body, content_type="application/json")
    response.etag = etag
    return response


async def list_messages(request: web.Request) -> web.StreamResponse:
    folder_raw = request.query.get("folder", "inbox")
    folder = next((f for f in store.VISIBLE_FOLDERS if f.value == folder_raw), None)
    if folder is None:
        return problem(400, "folder must be one of: inbox, quarantine, sent")
    unread = _query_bool(request, "unread", None)
    page = await _page(request, store.list_messages, folder, unread=unread)
    return _json_with_etag(request, {"items": page.items, "next": page.next})


def _message_id(request: web.Request) -> str:
    message_id = request.match_info["message_id"]
    if not looks_like_id("msg", message_id):
        raise ApiProblem(404, "no such message")  # no query for what cannot be an id
    return message_id


async def get_message(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    try:
        message = await _in_pool(
            request, store.get_message, request.config_dict[DATABASE], request[USER_ID], message_id
        )
    except NotFound:
        return problem(404, "no such message")
    return _json_with_etag(request, message)


async def patch_message(request: web.Request) -> web.StreamResponse:
    """Mark a message read or unread: the body is ``{"read": true|false}``."""
    body = await _json_object(request, ("read",))
    read = body.get("read")
    if not isinstance(read, bool):
        raise ApiProblem(400, "read must be true or false")
    message_id = _message_id(request)
    try:
        message = await _in_pool(
            request, store.set_read, _db(request), request[USER_ID], message_id, read
        )
    except NotFound:
        return problem(404, "no such message")
    # The ETag of the new representation, so a client can revalidate it later.
    return _json_with_etag(request, message, conditional=False)


async def delete_message(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    try:
        await _in_pool(
            request,
            store.delete_message,
            _db(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            message_id,
        )
    except NotFound:
        return problem(404, "no such message")
    return web.Response(status=204)


# RFC 6838 type/subtype names, lower-cased; parameters are dropped.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# RFC 5987 attr-char minus ALPHA/DIGIT and what quote() never escapes ("-._~").
_ATTR_CHAR_SAFE = "!#$&+^`|"


def _download_type(stored: str) -> str:
    """The stored media type when it is one, else application/octet-stream: it came
    from a sender or a provider, and goes into a response header."""
    media_type = stored.split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.fullmatch(media_type) else "application/octet-stream"


def _content_disposition(stored: str | None) -> str:
    """``attachment``, with the sanitised stored name as an RFC 5987 ``filename*``
    (UTF-8, percent-encoded: quotes, semicolons and non-ASCII cannot break out)."""
    name = safe_filename(stored)
    if not name:
        return "attachment"
    encoded = quote(name.encode("utf-8", "replace"), safe=_ATTR_CHAR_SAFE)
    return f"attachment; filename*=UTF-8''{encoded}"


async def download_attachment(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    attachment_id = request.match_info["attachment_id"]
    if not looks_like_id("att", attachment_id):
        return problem(404, "no such attachment")
    try:
        found = await _in_pool(
            request,
            store.read_attachment,
            _db(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            message_id,
            attachment_id,
            unless=[t.value for t in request.if_none_match or ()],
        )
    except NotFound:
        return problem(404, "no such attachment")
    except store.AttachmentUnavailable as exc:
        return problem(409, str(exc))
    except FileNotFoundError:
        log.error("attachment %s is stored but its blob is missing", attachment_id)
        return problem(500, "the attachment's content is missing")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private"}
    # Content-addressed and immutable: the digest is the validator.
    if found.data is None:
        response = web.Response(status=304, headers=headers)
    else:
        headers |= {
            "Content-Type": _download_type(found.content_type),
            "Content-Disposition": _content_disposition(found.filename),
            # Opened in a tab anyway, an HTML or SVG attachment runs nothing on our origin.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        response = web.Response(body=found.data, headers=headers)
    response.etag = found.sha256
    return response


# --- request parsing ------------------------------------------------------------------

_READ_CHUNK = 64 * 1024
_MAX_SENDER_CHARS = 320  # "alpha:"/"short:" prefix + the longest address (254)
_MAX_FILENAME_CHARS = 255


def _db(request: web.Request) -> Database:
    return request.config_dict[DATABASE]


def _page_params(request: web.Request) -> tuple[int, str | None]:
    limit = _query_int(request, "limit", 50, 1, store.MAX_PAGE)
    if limit is None:
        raise ApiProblem(400, f"limit must be a whole number from 1 to {store.MAX_PAGE}")
    return limit, request.query.get("cursor") or None


async def _page(
    request: web.Request, fetch: Callable[..., store.Page], *args: Any, **kwargs: Any
) -> store.Page:
    """One page of the user's list from ``fetch(db, user_id, *args, limit=, cursor=,
    **kwargs)``, with the request's limit and cursor (400 for a bad one)."""
    limit, cursor = _page_params(request)
    try:
        return await _in_pool(
            request,
            fetch,
            _db(request),
            request[USER_ID],
            *args,
            limit=limit,
            cursor=cursor,
            **kwargs,
        )
    except store.InvalidCursor as exc:
        raise ApiProblem(400, str(exc)) from None


def _page_response(page: store.Page) -> web.Response:
    return web.json_response({"items": page.items, "next": page.next})


def _query_bool(request: web.Request, name: str, default: T) -> bool | T:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise ApiProblem(400, f"{name} must be true or false")
    return raw == "true"


async def _read_body(request: web.Request, limit: int) -> bytes:
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


async def _json_object(request: web.Request, fields: Sequence[str]) -> dict[str, Any]:
    """The JSON object in the body (at most settings.http.max_api_body_bytes), with no
    members other than ``fields``."""
    raw = await _read_body(request, request.config_dict[SETTINGS].http.max_api_body_bytes)
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


def _string_list(body: dict[str, Any], name: str, max_chars: int) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiProblem(400, f"{name} must be a list of strings")
    if not value:
        raise ApiProblem(400, f"{name} must not be empty")
    if any(not v or len(v) > max_chars for v in value):
        raise ApiProblem(400, f"each of {name} must be 1 to {max_chars} characters")
    return value


def _verdict(raw: Any, name: str) -> TrustVerdict:
    if isinstance(raw, str):
        for verdict in TrustVerdict:
            if verdict.value == raw:
                return verdict
    raise ApiProblem(400, f"{name} must be one of: trusted, blocked")


async def _region(request: web.Request) -> str:
    """The authenticated user's region, for numbers written without a country code."""
    try:
        user = await _in_pool(request, store.get_user, _db(request), request[USER_ID])
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None  # deleted meanwhile
    return user.region or request.config_dict[SETTINGS].optin.default_region


# --- trusted senders -------------------------------------------------------------------


async def list_trusted_senders(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("verdict")
    verdict = None if raw is None else _verdict(raw, "verdict")
    return _page_response(await _page(request, trust.list_page, verdict=verdict))


def _add_entry(
    db: Database, user_id: str, address: trust.TrustTarget, verdict: TrustVerdict
) -> tuple[trust.TrustRecord, bool]:
    """Add or replace the entry; True when there was none before (201 rather than 200)."""
    try:
        trust.get(db, user_id, address)
    except TrustEntryNotFound:
        created = True
    else:
        created = False
    return trust.add(db, user_id, address, verdict), created


def _entry_location(address: str) -> str:
    return f"{API_PREFIX}/trusted-senders/{quote(address, safe='@:+')}"


async def add_trusted_sender(request: web.Request) -> web.StreamResponse:
    body = await _json_object(request, ("address", "verdict"))
    typed = body.get("address")
    if not isinstance(typed, str):
        raise ApiProblem(400, "address must be a string")
    verdict = _verdict(body.get("verdict", "trusted"), "verdict")
    region = await _region(request)
    try:
        address = trust.parse_entry(typed, region)
    except AddressError as exc:
        return problem(400, exc.reason)
    record, created = await _in_pool(
        request, _add_entry, _db(request), request[USER_ID], address, verdict
    )
    return web.json_response(
        record.as_json(),
        status=201 if created else 200,
        headers={"Location": _entry_location(record.address)},
    )


async def remove_trusted_sender(request: web.Request) -> web.StreamResponse:
    typed = request.match_info["address"]
    region = await _region(request)
    unparsable: str | None = None
    try:
        address = trust.parse_entry(typed, region)
    except AddressError as exc:
        # Still try the text exactly as stored: an entry whose number a newer
        # phone-number database no longer accepts must remain removable.
        address, unparsable = cast(trust.TrustTarget, typed), exc.reason
    try:
        await _in_pool(request, trust.remove, _db(request), request[USER_ID], address)
    except TrustEntryNotFound:
        if unparsable is not None:
            return problem(400, unparsable)
        return problem(404, f"{address} is not on the list")
    return web.Response(status=204)


# --- address book ----------------------------------------------------------------------


def _parse_and_import(
    db: Database,
    user_id: str,
    data: bytes,
    *,
    region: str,
    filename: str | None,
    content_type: str | None,
    max_bytes: int,
    max_contacts: int,
) -> address_book.ImportResult:
    # Parsing a large file is CPU work: it runs on the pool too, never on the loop.
    report = parse_contacts(
        data,
        region=region,
        filename=filename,
        content_type=content_type,
        max_bytes=max_bytes,
        max_contacts=max_contacts,
    )
    return address_book.import_contacts(db, user_id, report, max_contacts=max_contacts)


async def upload_contacts(request: web.Request) -> web.StreamResponse:
    limits = request.config_dict[SETTINGS].optin
    content_type = request.headers.get("Content-Type")
    if request.content_type.startswith("multipart/"):
        return problem(415, "send the address book file itself as the body, not a multipart form")
    filename = request.query.get("filename") or None
    if filename is not None and len(filename) > _MAX_FILENAME_CHARS:
        return problem(400, f"filename must be at most {_MAX_FILENAME_CHARS} characters")
    data = await _read_body(request, limits.max_contacts_bytes)
    region = await _region(request)
    try:
        result = await _in_pool(
            request,
            _parse_and_import,
            _db(request),
            request[USER_ID],
            data,
            region=region,
            filename=filename,
            content_type=content_type,
            max_bytes=limits.max_contacts_bytes,
            max_contacts=limits.max_contacts,
        )
    except ContactsTooLarge as exc:
        return problem(413, str(exc))
    except MalformedContacts as exc:
        return problem(400, str(exc))
    return web.json_response(result.as_json(), status=201 if result.imported else 200)


async def list_contacts(request: web.Request) -> web.StreamResponse:
    return _page_response(await _page(request, address_book.list_page))


async def delete_contacts(request: web.Request) -> web.StreamResponse:
    untrust = _query_bool(request, "untrust", False)
    contacts, entries = await _in_pool(
        request, address_book.delete_all, _db(request), request[USER_ID], untrust=untrust
    )
    return web.json_response({"contacts": contacts, "trusted_senders": entries})


async def opt_in_contacts(request: web.Request) -> web.StreamResponse:
    body = await _json_object(request, ("all", "ids"))
    ids: list[str] | None
    if ("all" in body) == ("ids" in body):
        return problem(400, 'send either {"all": true} or {"ids": [contact ids]}')
    if "all" in body:
        if body["all"] is not True:
            return problem(400, 'all must be true; to opt in some contacts send "ids"')
        ids = None
    else:
        ids = _string_list(body, "ids", 64)
    try:
        added = await _in_pool(request, address_book.opt_in, _db(request), request[USER_ID], ids)
    except NotFound:
        return problem(404, "no such contact")
    return web.json_response({"added": added})


# --- screener --------------------------------------------------------------------------


async def screener_cards(request: web.Request) -> web.StreamResponse:
    region = await _region(request)
    quarantine_days = request.config_dict[SETTINGS].optin.quarantine_days
    page = await _page(request, screener.cards, region=region, quarantine_days=quarantine_days)
    return _page_response(page)


async def _decide(
    request: web.Request, decide: Callable[[Database, str, Sequence[str]], DecisionResult]
) -> web.StreamResponse:
    body = await _json_object(request, ("senders",))
    senders = _string_list(body, "senders", _MAX_SENDER_CHARS)
    try:
        result = await _in_pool(request, decide, _db(request), request[USER_ID], senders)
    except NotFound as exc:
        return problem(404, str(exc))
    except ValueError as exc:
        return problem(400, str(exc))
    return web.json_response(result.as_json())


async def screener_allow(request: web.Request) -> web.StreamResponse:
    return await _decide(request, screener.allow)


async def screener_block(request: web.Request) -> web.StreamResponse:
    return await _decide(request, screener.block)


async def screener_undo(request: web.Request) -> web.StreamResponse:
    try:
        result = await _in_pool(
            request,
            screener.undo,
            _db(request),
            request[USER_ID],
            window_seconds=request.config_dict[SETTINGS].optin.undo_seconds,
        )
    except NothingToUndo as exc:
        return problem(409, str(exc))
    return web.json_response(result.as_json())


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


# --- sending -----------------------------------------------------------------------------


def _create_and_read(
    settings: Any,
    db: Database,
    blobs: BlobStore,
    user_id: str,
    to: E164,
    text: str,
    media: list[outbound.MediaUpload],
) -> dict[str, Any]:
    created = outbound.create_sms(settings, db, user_id, to, text, media, blobs)
    return store.get_message(db, user_id, created.message_id)


def _media_uploads(raw: Any, settings: Any) -> list[outbound.MediaUpload]:
    """The ``media`` member: a list of {content_type, data (base64), filename?}."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > outbound.MAX_MEDIA:
        raise ApiProblem(400, f"media must be a list of at most {outbound.MAX_MEDIA} items")
    policy = media_policy(settings)
    uploads = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"content_type", "data", "filename"}:
            raise ApiProblem(400, f"media[{i}] must be an object with content_type, data, filename")
        content_type, data, filename = (
            item.get("content_type"),
            item.get("data"),
            item.get("filename"),
        )
        if not isinstance(content_type, str) or not policy.type_allowed(content_type):
            raise ApiProblem(400, f"media[{i}].content_type is not a type that can be sent")
        if filename is not None and (not isinstance(filename, str) or len(filename) > 255):
            raise ApiProblem(400, f"media[{i}].filename must be a string of at most 255 characters")
        if not isinstance(data, str):
            raise ApiProblem(400, f"media[{i}].data must be base64 text")
        try:
            decoded = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise ApiProblem(400, f"media[{i}].data is not valid base64") from None
        if not decoded:
            raise ApiProblem(400, f"media[{i}].data is empty")
        uploads.append(outbound.MediaUpload(content_type.lower(), filename, decoded))
    return uploads


async def send_message(request: web.Request) -> web.StreamResponse:
    """Send an SMS from the user's OptMsg number: stored as pending, answered 202,
    handed to the provider by a job; its status moves as the provider reports."""
    body = await _json_object(request, ("to", "text", "media"))
    to_raw, text = body.get("to"), body.get("text", "")
    if not isinstance(to_raw, str) or not to_raw.strip():
        raise ApiProblem(400, "to must be a phone number")
    if not isinstance(text, str):
        raise ApiProblem(400, "text must be a string")
    settings = request.config_dict[SETTINGS]
    if not settings.bridges.twilio.enabled:
        return problem(409, "SMS sending is not enabled on this gateway")
    media = _media_uploads(body.get("media"), settings)
    region = await _region(request)
    try:
        to = outbound.parse_recipient(to_raw, (region, settings.optin.default_region))
    except AddressError as exc:
        return problem(400, f"to: {exc.reason}")
    try:
        message = await _in_pool(
            request,
            _create_and_read,
            settings,
            _db(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            to,
            text,
            media,
        )
    except SendRefused as exc:
        return problem(409, str(exc))
    except ValueError as exc:
        return problem(400, str(exc))
    jobs = request.config_dict[JOBS]
    try:
        await _in_pool(request, jobs.enqueue_send, message["id"])
    except Exception:  # noqa: BLE001 - stored as pending; the sweeper sends it later
        log.warning("could not enqueue sms %s; the sweeper will", message["id"])
    return web.json_response(
        message, status=202, headers={"Location": f"{API_PREFIX}/messages/{message['id']}"}
    )


def api_app() -> web.Application:
    """The client API as a sub-application, so that its middleware (token checks)
    runs for API requests only and never on the provider webhooks' hot path."""
    api = web.Application(middlewares=[bearer_auth, api_problems])
    api.router.add_get("/openapi.json", openapi)
    api.router.add_get("/messages", list_messages)
    api.router.add_post("/messages", send_message)
    api.router.add_get("/messages/{message_id}", get_message)
    api.router.add_patch("/messages/{message_id}", patch_message)
    api.router.add_delete("/messages/{message_id}", delete_message)
    api.router.add_get("/messages/{message_id}/attachments/{attachment_id}", download_attachment)
    api.router.add_get("/trusted-senders", list_trusted_senders)
    api.router.add_post("/trusted-senders", add_trusted_sender)
    api.router.add_delete("/trusted-senders/{address}", remove_trusted_sender)
    api.router.add_get("/contacts", list_contacts)
    api.router.add_post("/contacts", upload_contacts)
    api.router.add_delete("/contacts", delete_contacts)
    api.router.add_post("/contacts/opt-in", opt_in_contacts)
    api.router.add_get("/screener", screener_cards)
    api.router.add_post("/screener/allow", screener_allow)
    api.router.add_post("/screener/block", screener_block)
    api.router.add_post("/screener/undo", screener_undo)
    return api
