"""The route Twilio fetches outbound MMS media from (see gateway.media_urls)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.keys import BLOBS, DATABASE, READ_POOL, SETTINGS
from gateway.media_urls import valid
from gateway.problems import problem
from inbox import outbound
from inbox.ids import looks_like_id


async def serve_outbound_media(request: web.Request) -> web.StreamResponse:
    attachment_id = request.match_info["attachment_id"]
    settings = request.config_dict[SETTINGS].current
    expires = request.query.get("expires", "")
    signature = request.query.get("signature", "")
    if not looks_like_id("att", attachment_id) or not valid(
        settings, attachment_id, expires, signature
    ):
        return problem(403, "this media link is invalid or has expired")
    db = request.config_dict[DATABASE]

    def lookup() -> tuple[str, bytes] | None:
        with db.read.connect() as conn:
            found = outbound.media_for_provider(conn, attachment_id)
        if found is None:
            return None
        content_type, digest = found
        return content_type, request.config_dict[BLOBS].get(digest)

    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(request.config_dict[READ_POOL], lookup)
    if found is None:
        return problem(404, "no such media")
    content_type, data = found
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )
