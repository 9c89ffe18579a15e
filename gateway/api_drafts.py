"""Client API: drafts (create, edit, attach files, send).

A draft is addressed by its message id; a draft of another user, a message that is
not (or no longer) a draft and a missing one are all the same 404.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bridges.media import DEFAULT_TYPES
from bridges.sanitize import safe_filename
from config import Settings
from gateway import drafts_send
from gateway.api_support import (
    API_PREFIX,
    USER_ID,
    ApiProblem,
    db_of,
    fetch_page,
    in_pool,
    json_object,
    page_response,
    read_body,
    user_region,
)
from gateway.keys import BLOBS, JOBS, SETTINGS
from gateway.problems import problem
from inbox import drafts, store
from inbox.errors import NotFound
from inbox.ids import looks_like_id
from inbox.message import Channel
from inbox.outbound import SendRefused

log = logging.getLogger(__name__)

_FIELDS = ("channel", "to", "subject", "text")
_EDITABLE = ("to", "subject", "text")
_MAX_FILENAME_CHARS = 255
#: What an email draft may attach when ``email_out.attachment_types`` is empty: the
#: MMS list plus everyday documents (no HTML, no SVG, no executables).
EMAIL_TYPES: tuple[str, ...] = (
    *DEFAULT_TYPES,
    "text/plain",
    "text/csv",
    "application/zip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
)


def attachment_limits(settings: Settings, channel: str) -> drafts.AttachmentLimits:
    """SMS drafts carry what an MMS may (bridges.twilio media limits); email drafts
    what email_out allows."""
    if channel == Channel.SMS.value:
        tw = settings.bridges.twilio
        return drafts.AttachmentLimits(
            types=tuple(tw.media_types) or DEFAULT_TYPES,
            max_bytes=tw.media_max_bytes,
            max_count=drafts.MAX_ATTACHMENTS,
        )
    out = settings.email_out
    return drafts.AttachmentLimits(
        types=tuple(out.attachment_types) or EMAIL_TYPES,
        max_bytes=out.max_attachment_bytes,
        max_count=drafts.MAX_ATTACHMENTS,
    )


def _draft_id(request: web.Request) -> str:
    draft_id = request.match_info["draft_id"]
    if not looks_like_id("msg", draft_id):
        raise ApiProblem(404, "no such draft")  # no query for what cannot be an id
    return draft_id


def _string(body: dict[str, Any], name: str, *, nullable: bool = False) -> Any:
    value = body.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ApiProblem(400, f"{name} must be a string" + (" or null" if nullable else ""))
    return value


async def _recipients(request: web.Request, channel: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ApiProblem(400, "to must be a list of strings")
    if len(raw) > drafts.MAX_EMAIL_RECIPIENTS:
        raise ApiProblem(400, f"to has at most {drafts.MAX_EMAIL_RECIPIENTS} recipients")
    regions: tuple[str, ...] = ()
    if channel == Channel.SMS.value and raw:
        settings = request.config_dict[SETTINGS].current
        regions = (await user_region(request), settings.optin.default_region)
    try:
        return drafts.parse_recipients(channel, raw, regions)
    except drafts.DraftError as exc:
        raise ApiProblem(400, str(exc)) from None


async def create_draft(request: web.Request) -> web.StreamResponse:
    body = await json_object(request, _FIELDS)
    channel = body.get("channel")
    if channel not in drafts.CHANNELS:
        raise ApiProblem(400, "channel must be sms or email")
    to = await _recipients(request, channel, body.get("to", []))
    subject = _string(body, "subject", nullable=True) if "subject" in body else None
    text = _string(body, "text") if "text" in body else ""
    try:
        draft = await in_pool(
            request,
            drafts.create_draft,
            db_of(request),
            request[USER_ID],
            channel,
            to=to,
            subject=subject,
            text=text,
        )
    except drafts.DraftLimit as exc:
        return problem(409, str(exc))
    except drafts.DraftError as exc:
        return problem(400, str(exc))
    return web.json_response(
        draft, status=201, headers={"Location": f"{API_PREFIX}/drafts/{draft['id']}"}
    )


async def list_drafts(request: web.Request) -> web.StreamResponse:
    return page_response(await fetch_page(request, drafts.list_drafts))


async def get_draft(request: web.Request) -> web.StreamResponse:
    draft_id = _draft_id(request)
    try:
        draft = await in_pool(request, drafts.get_draft, db_of(request), request[USER_ID], draft_id)
    except NotFound:
        return problem(404, "no such draft")
    return web.json_response(draft)


async def patch_draft(request: web.Request) -> web.StreamResponse:
    draft_id = _draft_id(request)
    body = await json_object(request, _EDITABLE)
    if not body:
        raise ApiProblem(400, f"send at least one of: {', '.join(_EDITABLE)}")
    db, user_id = db_of(request), request[USER_ID]
    kwargs: dict[str, Any] = {}
    if "subject" in body:
        kwargs["subject"] = _string(body, "subject", nullable=True)
    if "text" in body:
        kwargs["text"] = _string(body, "text")
    try:
        if "to" in body:
            channel = await in_pool(request, drafts.channel_of, db, user_id, draft_id)
            kwargs["to"] = await _recipients(request, channel, body["to"])
        draft = await in_pool(request, drafts.update_draft, db, user_id, draft_id, **kwargs)
    except NotFound:
        return problem(404, "no such draft")
    except drafts.DraftError as exc:
        return problem(400, str(exc))
    return web.json_response(draft)


async def delete_draft(request: web.Request) -> web.StreamResponse:
    draft_id = _draft_id(request)
    try:
        await in_pool(
            request,
            drafts.delete_draft,
            db_of(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            draft_id,
        )
    except NotFound:
        return problem(404, "no such draft")
    return web.Response(status=204)


async def add_attachment(request: web.Request) -> web.StreamResponse:
    """The body is the file itself; its media type is the Content-Type header, its
    name the ``filename`` query parameter."""
    draft_id = _draft_id(request)
    settings: Settings = request.config_dict[SETTINGS].current
    if request.content_type.startswith("multipart/"):
        return problem(415, "send the file itself as the body, not a multipart form")
    content_type = request.content_type.lower()
    filename = request.query.get("filename")
    if filename is not None and len(filename) > _MAX_FILENAME_CHARS:
        return problem(400, f"filename must be at most {_MAX_FILENAME_CHARS} characters")
    limit = max(settings.email_out.max_attachment_bytes, settings.bridges.twilio.media_max_bytes)
    data = await read_body(request, limit)
    try:
        draft = await in_pool(
            request,
            drafts.add_attachment,
            db_of(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            draft_id,
            content_type=content_type,
            filename=safe_filename(filename),
            data=data,
            limits_for=lambda channel: attachment_limits(settings, channel),
        )
    except NotFound:
        return problem(404, "no such draft")
    except drafts.AttachmentRefused as exc:
        return problem(413 if exc.too_large else 400, str(exc))
    return web.json_response(draft, status=201)


async def remove_attachment(request: web.Request) -> web.StreamResponse:
    draft_id = _draft_id(request)
    attachment_id = request.match_info["attachment_id"]
    if not looks_like_id("att", attachment_id):
        return problem(404, "no such attachment")
    try:
        await in_pool(
            request,
            drafts.remove_attachment,
            db_of(request),
            request.config_dict[BLOBS],
            request[USER_ID],
            draft_id,
            attachment_id,
        )
    except NotFound as exc:
        return problem(404, str(exc))
    return web.Response(status=204)


async def send_draft(request: web.Request) -> web.StreamResponse:
    """202: the draft is now a pending message in ``sent``; a job hands it over."""
    draft_id = _draft_id(request)
    db, user_id = db_of(request), request[USER_ID]
    try:
        channel = await in_pool(
            request,
            drafts_send.send_draft,
            request.config_dict[SETTINGS].current,
            db,
            user_id,
            draft_id,
        )
    except NotFound:
        return problem(404, "no such draft")
    except SendRefused as exc:
        return problem(409, str(exc))
    except ValueError as exc:
        return problem(400, str(exc))
    jobs = request.config_dict[JOBS]
    enqueue = jobs.enqueue_email if channel == Channel.EMAIL.value else jobs.enqueue_send
    try:
        await in_pool(request, enqueue, draft_id)
    except Exception:  # noqa: BLE001 - stored as pending; the sweeper sends it later
        log.warning("could not enqueue message %s; the sweeper will", draft_id)
    message = await in_pool(request, store.get_message, db, user_id, draft_id)
    return web.json_response(
        message, status=202, headers={"Location": f"{API_PREFIX}/messages/{draft_id}"}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/drafts", list_drafts)
    router.add_post("/drafts", create_draft)
    router.add_get("/drafts/{draft_id}", get_draft)
    router.add_patch("/drafts/{draft_id}", patch_draft)
    router.add_delete("/drafts/{draft_id}", delete_draft)
    router.add_post("/drafts/{draft_id}/attachments", add_attachment)
    router.add_delete("/drafts/{draft_id}/attachments/{attachment_id}", remove_attachment)
    router.add_post("/drafts/{draft_id}/send", send_draft)
