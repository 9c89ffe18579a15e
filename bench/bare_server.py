"""Baseline for bench/webhook.py: an aiohttp handler that only reads and parses the
Twilio form (as bridges.twilio.parse_form does) and answers the empty TwiML.

Usage: python bench/bare_server.py HOST PORT   (prints "bare: listening on ..." when ready)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from urllib.parse import parse_qsl

from aiohttp import web

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def sms(request: web.Request) -> web.Response:
    body = await request.read()
    parse_qsl(
        body.decode("utf-8"),
        keep_blank_values=True,
        strict_parsing=False,
        encoding="utf-8",
        errors="strict",
        max_num_fields=256,
    )
    return web.Response(body=TWIML, content_type="text/xml")


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/bridges/twilio/sms", sms)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare: listening on http://{host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
