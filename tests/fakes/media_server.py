"""A fake media host (Twilio's API or its CDN) on 127.0.0.1, plain http.

Tests give it a host name (``api.test``, ``cdn.test``) and map that name to
127.0.0.1 through the fetcher's injectable resolver, so redirects between "hosts"
go through the same allow-list and address checks as in production.

Every TCP connection and every request is counted before any routing, so a test
can prove that a refused fetch never reached the server at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.server import FakeServer

# A tiny but well-formed JPEG header followed by filler: the fetcher does not
# sniff content, but a realistic prefix keeps the fixture honest.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 8 + b"\xff\xd9"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SLOW_SECONDS = 10.0  # far beyond any test's fetch timeout; cut short by stop()


def media_bytes(n: int) -> bytes:
    """The distinct body served at ``/media/{n}``."""
    return JPEG + f"media-{n}".encode() * 64


@dataclass(frozen=True)
class SeenRequest:
    path: str
    authorization: str | None


class MediaServer(FakeServer):
    """One fake media host. ``credentials`` makes ``/image.jpg`` and ``/media/{n}``
    demand HTTP Basic auth, like Twilio's API with "Enforce HTTP Auth" on;
    ``refuse_authorization`` makes every route answer 400 to a request carrying an
    ``Authorization`` header, like S3 given a second auth mechanism."""

    def __init__(
        self,
        name: str,
        *,
        credentials: tuple[str, str] | None = None,
        refuse_authorization: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.credentials = credentials
        self.refuse_authorization = refuse_authorization
        self.requests: list[SeenRequest] = []

    # -- the app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/image.jpg", self._image)
        app.router.add_get("/media/{n:\\d+}", self._numbered)
        # Twilio's own media URL shape (what Twilio posts as MediaUrlN).
        app.router.add_get(
            "/2010-04-01/Accounts/{account}/Messages/{message}/Media/{media}", self._image
        )
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/loop", self._loop)
        app.router.add_get("/no-location", self._no_location)
        app.router.add_get("/typed", self._typed)
        app.router.add_get("/chunked", self._chunked)
        app.router.add_get("/declared-huge", self._declared_huge)
        app.router.add_get("/status/{code:\\d+}", self._status)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/empty", self._empty)
        return app

    # -- helpers for tests

    def url(self, path: str) -> str:
        return f"http://{self.name}:{self.port}{path}"

    @property
    def authorizations(self) -> list[str | None]:
        return [r.authorization for r in self.requests]

    # -- handlers

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        self.requests.append(SeenRequest(request.path, authorization))
        if self.refuse_authorization and authorization is not None:
            return web.Response(status=400, text="Only one auth mechanism allowed")
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return request.headers.get("Authorization") == expected

    async def _image(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def _numbered(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401)
        return web.Response(
            body=media_bytes(int(request.match_info["n"])), content_type="image/jpeg"
        )

    async def _redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "307"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def _loop(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    async def _no_location(self, request: web.Request) -> web.Response:
        return web.Response(status=302)

    async def _typed(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html></html>", headers={"Content-Type": request.query["ct"]})

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\0" * 16384
        # The client hanging up once it has seen enough is the expected end.
        with contextlib.suppress(ConnectionError):
            for _ in range(size // len(chunk)):
                await resp.write(chunk)
            await resp.write_eof()
        return resp

    async def _declared_huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 50 * 1024 * 1024
        await resp.prepare(request)
        # Never finish the body: a client that reads it would hang here. The test's
        # client refusing it (hanging up) or the server stopping are the expected ends.
        with contextlib.suppress(ConnectionError, TimeoutError):
            await resp.write(b"\0" * 1024)
            await asyncio.wait_for(self._stopping.wait(), SLOW_SECONDS)
        return resp

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {"Retry-After": "7"} if code in (429, 503) else {}
        return web.Response(status=code, text="error", headers=headers)

    async def _slow(self, request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), SLOW_SECONDS)
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="image/jpeg")
