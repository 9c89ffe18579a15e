"""Client API: conversations (messages grouped by counterpart or email thread)."""

from __future__ import annotations

from aiohttp import web

from gateway.api_support import fetch_page, json_with_etag
from inbox import conversations


async def list_conversations(request: web.Request) -> web.StreamResponse:
    page = await fetch_page(request, conversations.list_conversations)
    return json_with_etag(request, {"items": page.items, "next": page.next})


async def conversation_messages(request: web.Request) -> web.StreamResponse:
    # Another user's key, an unknown one and an over-long one all give the same
    # empty list: nothing tells them apart.
    key = request.match_info["key"]
    page = await fetch_page(request, conversations.list_conversation_messages, key)
    return json_with_etag(request, {"items": page.items, "next": page.next})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/conversations", list_conversations)
    router.add_get("/conversations/{key}/messages", conversation_messages)
