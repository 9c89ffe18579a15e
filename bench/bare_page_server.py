"""Baseline for bench/messages_api.py: an aiohttp handler answering GET
/api/v1/messages with a fixed page (the bytes of a real 50-message page, read from a
file at start) after checking that an Authorization header is there: HTTP, routing
and response writing, with no token lookup, query or JSON encoding.

Usage: python bench/bare_page_server.py HOST PORT PAGE_FILE
(prints "bare: listening on ..." when ready)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web


def make_app(page: bytes) -> web.Application:
    async def messages(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.Response(status=401)
        return web.Response(body=page, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/messages", messages)
    return app


async def main(host: str, port: int, page_file: Path) -> None:
    runner = web.AppRunner(make_app(page_file.read_bytes()), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare: listening on {host}:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
