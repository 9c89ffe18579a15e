"""The user's data rights through the client API: exports of all their data
(requested, built by a job, downloaded until they expire) and account deletion."""

from __future__ import annotations

import logging
from pathlib import Path

import redis
from aiohttp import web

from gateway import erasure
from gateway.api_support import (
    API_PREFIX,
    USER_ID,
    ApiProblem,
    db_of,
    fetch_page,
    in_pool,
    json_object,
    page_response,
)
from gateway.keys import AUTH, BLOBS, JOBS, SETTINGS
from gateway.problems import problem
from inbox import export
from inbox.errors import NotFound
from inbox.ids import looks_like_id

log = logging.getLogger(__name__)

#: What DELETE /account must carry, so that no stray request deletes an account.
DELETE_CONFIRMATION = "delete my account"


def _exports_dir(request: web.Request) -> Path:
    return export.exports_dir(Path(request.config_dict[SETTINGS].current.storage.blob_dir))


def _export_id(request: web.Request) -> str:
    export_id = request.match_info["export_id"]
    if not looks_like_id("exp", export_id):
        raise ApiProblem(404, "no such export")  # no query for what cannot be an id
    return export_id


def _location(export_id: str) -> str:
    return f"{API_PREFIX}/exports/{export_id}"


async def request_export(request: web.Request) -> web.StreamResponse:
    """202 with the pending export; its archive is built by a job."""
    try:
        record = await in_pool(request, export.request_export, db_of(request), request[USER_ID])
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None  # deleted meanwhile
    except export.TooManyExports as exc:
        return problem(429, str(exc))
    if record.state == export.PENDING:
        try:
            await in_pool(request, request.config_dict[JOBS].enqueue_export, record.id)
        except Exception:  # noqa: BLE001 - the row is pending; the sweeper enqueues it
            log.warning("could not enqueue export %s; the sweeper will", record.id)
    return web.json_response(
        record.as_json(), status=202, headers={"Location": _location(record.id)}
    )


async def list_exports(request: web.Request) -> web.StreamResponse:
    return page_response(await fetch_page(request, export.list_exports))


async def get_export(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    try:
        record = await in_pool(
            request, export.get_export, db_of(request), request[USER_ID], export_id
        )
    except NotFound:
        return problem(404, "no such export")
    return web.json_response(record.as_json())


async def download_export(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    try:
        path, record = await in_pool(
            request,
            export.ready_archive,
            db_of(request),
            _exports_dir(request),
            request[USER_ID],
            export_id,
        )
    except NotFound:
        return problem(404, "no such export")
    except export.ExportExpired as exc:
        return problem(410, str(exc))
    except export.ExportNotReady as exc:
        return problem(409, str(exc))
    day = record.created_at.strftime("%Y-%m-%d")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="optmsg-export-{day}.zip"',
            "X-Content-Type-Options": "nosniff",
        },
    )


async def delete_account(request: web.Request) -> web.StreamResponse:
    """Delete the account and all its data, for good: the body must confirm it."""
    body = await json_object(request, ("confirm",))
    if body.get("confirm") != DELETE_CONFIRMATION:
        raise ApiProblem(
            400,
            f'to delete the account and all its data, send {{"confirm": "{DELETE_CONFIRMATION}"}}',
        )
    settings = request.config_dict[SETTINGS].current
    try:
        await in_pool(
            request,
            erasure.delete_account,
            settings,
            db_of(request),
            request.config_dict[BLOBS],
            request[USER_ID],
        )
    except NotFound:
        raise ApiProblem(401, "invalid or revoked token") from None  # deleted meanwhile
    except redis.RedisError:
        # The account is gone from the database (and with it every token); only its
        # Redis keys are left, which `optmsg users delete ID` removes when run again.
        log.exception("account %s deleted, but its Redis keys could not be", request[USER_ID])
    request.config_dict[AUTH].tokens.forget_user(request[USER_ID])
    log.info("account %s deleted by its owner", request[USER_ID])
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/exports", request_export)
    router.add_get("/exports", list_exports)
    router.add_get("/exports/{export_id}", get_export)
    router.add_get("/exports/{export_id}/download", download_export)
    router.add_delete("/account", delete_account)
