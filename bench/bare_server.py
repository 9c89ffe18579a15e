"""Baseline for bench/webhook.py: an aiohttp handler that only reads and parses the
Twilio form (as bridges.twilio.parse_form does) and answers the empty TwiML.

Usage: python bench/bare_server.py HOST PORT [--verify]
(prints "bare: listening on ..." when ready)

--verify (webhook.py --breakdown) makes it a step of the breakdown instead of the
baseline: the handler also runs the gateway's own checks, TwilioBridge.verify_sms
(form, signature, normalisation) configured from OPTMSG_CONFIG and the OPTMSG_*
environment, and stores nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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


def verifying_handler() -> Callable[[web.Request], Awaitable[web.Response]]:
    # Imported here: the plain baseline must not pay for (or depend on) the gateway.
    from bridges.base import WebhookRequest
    from bridges.twilio import TwilioBridge
    from config import load_settings
    from gateway.reload_wiring import signature_verifier

    settings = load_settings(os.environ["OPTMSG_CONFIG"])
    bridge = TwilioBridge(
        verifier=signature_verifier(settings),
        default_region=settings.optin.default_region,
        max_body_bytes=settings.http.max_webhook_bytes,
    )

    async def verified_sms(request: web.Request) -> web.Response:
        body = await request.read()
        webhook = WebhookRequest(
            method=request.method, path_qs=request.raw_path, headers=request.headers, body=body
        )
        if bridge.verify_sms(webhook, datetime.now(UTC)).inbound is None:
            raise web.HTTPBadRequest(text="unroutable")
        return web.Response(body=TWIML, content_type="text/xml")

    return verified_sms


async def main(host: str, port: int, verify: bool) -> None:
    app = web.Application()
    app.router.add_post("/bridges/twilio/sms", verifying_handler() if verify else sms)
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
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), "--verify" in sys.argv[3:]))
