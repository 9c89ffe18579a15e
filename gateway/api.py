"""Client API under /api/v1: bearer tokens, every query scoped to the token's user."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import quote

from aiohttp import web

from bridges.sanitize import safe_filename
from gateway import (
    api_accounts,
    api_addresses,
    api_conversations,
    api_drafts,
    api_exports,
    events_route,
    outbound,
)
from gateway.api_support import (
    API_PREFIX,
    USER_ID,
    ApiProblem,
    api_problems,
    bearer_auth,
    db_of,
    fetch_page,
    in_pool,
    json_object,
    json_with_etag,
    page_response,
    query_bool,
    quick_read,
    read_body,
    string_list,
    user_region,
)
from gateway.keys import BLOBS, DATABASE, JOBS, SETTINGS
from gateway.media_jobs import media_policy
from gateway.openapi import openapi_document
from gateway.problems import problem
from gateway.provider_delete import provider_sid
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
_MAX_SENDER_CHARS = 320  # "alpha:"/"short:" prefix + the longest address (254)
_MAX_FILENAME_CHARS = 255


def _verdict(raw: Any, name: str) -> TrustVerdict:
    if isinstance(raw, str):
        for verdict in TrustVerdict:
            if verdict.value == raw:
                return verdict
    raise ApiProblem(400, f"{name} must be one of: trusted, blocked")


async def list_messages(request: web.Request) -> web.StreamResponse:
    folder_raw = request.query.get("folder", "inbox")
    folder = next((f for f in store.VISIBLE_FOLDERS if f.value == folder_raw), None)
    if folder is None:
        return problem(400, "folder must be one of: inbox, quarantine, sent")
    unread = query_bool(request, "unread", None)
    page = await fetch_page(request, store.list_messages, folder, quick=True, unread=unread)
    return json_with_etag(request, {"items": page.items, "next": page.next})


def _message_id(request: web.Request) -> str:
    message_id = request.match_info["message_id"]
    if not looks_like_id("msg", message_id):
        raise ApiProblem(404, "no such message")  # no query for what cannot be an id
    return message_id


async def get_message(request: web.Request) -> web.StreamResponse:
    message_id = _message_id(request)
    try:
        message = await quick_read(
            request, store.get_message, request.config_dict[DATABASE], request[USER_ID], message_id
        )
    except NotFound:
        return problem(404, "no such message")
    return json_with_etag(request, message)


async def patch_message(request: web.Request) -> web.StreamResponse:
    """Mark a message read or unread: the body is ``{"read": true|false}``."""
    body = await json_object(request, ("read",))
    read = body.get("read")
    if not isinstance(read, bool):
        raise ApiProblem(400, "read must be true or false")
    message_id = _message_id(request)
    try:
        message = await in_pool(
            request, store.set_read, db_of(request), request[USER_ID], message_id, read
        )
    except NotFound:
        return problem(404, "no such message")
    # The ETag of the new representation, so a client can revalidate it later.
    return json_with_etag(request, message, conditional=False)


async def delete_message(request: web.Request) -> web.StreamResponse:
    """Delete the message here; with ``?provider=true`` also ask for Twilio's copy to
    be deleted (a job, after the commit: the answer does not wait for Twilio)."""
    provider = query_bool(request, "provider", False)  # before anything is deleted
    message_id = _message_id(request)
    try:
        deleted = await in_pool(
            request,
            store.delete_message,
            db_of(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            message_id,
        )
    except NotFound:
        return problem(404, "no such message")
    sid = provider_sid(deleted) if provider else None
    if sid is not None:
        try:
            await in_pool(request, request.config_dict[JOBS].enqueue_provider_delete, sid)
        except Exception:  # noqa: BLE001 - deleted here; the provider copy is best effort
            log.warning("could not enqueue the provider delete of %s", sid)
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
        found = await in_pool(
            request,
            store.read_attachment,
            db_of(request),
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

# --- trusted senders -------------------------------------------------------------------


async def list_trusted_senders(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("verdict")
    verdict = None if raw is None else _verdict(raw, "verdict")
    return page_response(await fetch_page(request, trust.list_page, verdict=verdict))


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
    body = await json_object(request, ("address", "verdict"))
    typed = body.get("address")
    if not isinstance(typed, str):
        raise ApiProblem(400, "address must be a string")
    verdict = _verdict(body.get("verdict", "trusted"), "verdict")
    region = await user_region(request)
    try:
        address = trust.parse_entry(typed, region)
    except AddressError as exc:
        return problem(400, exc.reason)
    record, created = await in_pool(
        request, _add_entry, db_of(request), request[USER_ID], address, verdict
    )
    return web.json_response(
        record.as_json(),
        status=201 if created else 200,
        headers={"Location": _entry_location(record.address)},
    )


async def remove_trusted_sender(request: web.Request) -> web.StreamResponse:
    typed = request.match_info["address"]
    region = await user_region(request)
    unparsable: str | None = None
    try:
        address = trust.parse_entry(typed, region)
    except AddressError as exc:
        # Still try the text exactly as stored: an entry whose number a newer
        # phone-number database no longer accepts must remain removable.
        address, unparsable = cast(trust.TrustTarget, typed), exc.reason
    try:
        await in_pool(request, trust.remove, db_of(request), request[USER_ID], address)
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
    limits = request.config_dict[SETTINGS].current.optin
    content_type = request.headers.get("Content-Type")
    if request.content_type.startswith("multipart/"):
        return problem(415, "send the address book file itself as the body, not a multipart form")
    filename = request.query.get("filename") or None
    if filename is not None and len(filename) > _MAX_FILENAME_CHARS:
        return problem(400, f"filename must be at most {_MAX_FILENAME_CHARS} characters")
    data = await read_body(request, limits.max_contacts_bytes)
    region = await user_region(request)
    try:
        result = await in_pool(
            request,
            _parse_and_import,
            db_of(request),
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
    return page_response(await fetch_page(request, address_book.list_page))


async def delete_contacts(request: web.Request) -> web.StreamResponse:
    untrust = query_bool(request, "untrust", False)
    contacts, entries = await in_pool(
        request, address_book.delete_all, db_of(request), request[USER_ID], untrust=untrust
    )
    return web.json_response({"contacts": contacts, "trusted_senders": entries})


async def opt_in_contacts(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, ("all", "ids"))
    ids: list[str] | None
    if ("all" in body) == ("ids" in body):
        return problem(400, 'send either {"all": true} or {"ids": [contact ids]}')
    if "all" in body:
        if body["all"] is not True:
            return problem(400, 'all must be true; to opt in some contacts send "ids"')
        ids = None
    else:
        ids = string_list(body, "ids", 64)
    try:
        added = await in_pool(request, address_book.opt_in, db_of(request), request[USER_ID], ids)
    except NotFound:
        return problem(404, "no such contact")
    return web.json_response({"added": added})


# --- screener --------------------------------------------------------------------------


async def screener_cards(request: web.Request) -> web.StreamResponse:
    region = await user_region(request)
    quarantine_days = request.config_dict[SETTINGS].current.optin.quarantine_days
    page = await fetch_page(request, screener.cards, region=region, quarantine_days=quarantine_days)
    return page_response(page)


async def _decide(
    request: web.Request, decide: Callable[[Database, str, Sequence[str]], DecisionResult]
) -> web.StreamResponse:
    body = await json_object(request, ("senders",))
    senders = string_list(body, "senders", _MAX_SENDER_CHARS)
    try:
        result = await in_pool(request, decide, db_of(request), request[USER_ID], senders)
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
        result = await in_pool(
            request,
            screener.undo,
            db_of(request),
            request[USER_ID],
            window_seconds=request.config_dict[SETTINGS].current.optin.undo_seconds,
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
    body = await json_object(request, ("to", "text", "media"))
    to_raw, text = body.get("to"), body.get("text", "")
    if not isinstance(to_raw, str) or not to_raw.strip():
        raise ApiProblem(400, "to must be a phone number")
    if not isinstance(text, str):
        raise ApiProblem(400, "text must be a string")
    settings = request.config_dict[SETTINGS].current
    if not settings.bridges.twilio.enabled:
        return problem(409, "SMS sending is not enabled on this gateway")
    media = _media_uploads(body.get("media"), settings)
    region = await user_region(request)
    try:
        to = outbound.parse_recipient(to_raw, (region, settings.optin.default_region))
    except AddressError as exc:
        return problem(400, f"to: {exc.reason}")
    try:
        message = await in_pool(
            request,
            _create_and_read,
            settings,
            db_of(request),
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
        await in_pool(request, jobs.enqueue_send, message["id"])
    except Exception:  # noqa: BLE001 - stored as pending; the sweeper sends it later
        log.warning("could not enqueue sms %s; the sweeper will", message["id"])
    return web.json_response(
        message, status=202, headers={"Location": f"{API_PREFIX}/messages/{message['id']}"}
    )


#: Route modules of further parts of the API: each has ``add_routes(router)``.
ROUTE_MODULES: tuple[Any, ...] = (
    api_exports,
    events_route,
    api_drafts,
    api_conversations,
    api_accounts,
    api_addresses,
)


def api_app() -> web.Application:
    """The client API as a sub-application, so that its middleware (token checks)
    runs for API requests only and never on the provider webhooks' hot path."""
    api = web.Application(middlewares=[bearer_auth, events_route.notify_after_writes, api_problems])
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
    for module in ROUTE_MODULES:
        module.add_routes(api.router)
    return api
