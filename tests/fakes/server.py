"""The lifecycle the fakes share: an aiohttp app on 127.0.0.1, a free port, and a
count of TCP connections taken before any routing (so that a test can prove a
refused request never reached the server at all)."""

from __future__ import annotations

import abc
import asyncio
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class FakeServer(abc.ABC):
    """Subclasses build their app in :meth:`app`; ``async with`` starts and stops it."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @abc.abstractmethod
    def app(self) -> web.Application:
        """The fake's routes."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None

        def counted() -> RequestHandler:
            self.connections += 1
            return handlers()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(counted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
