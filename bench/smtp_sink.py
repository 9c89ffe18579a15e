"""Baseline for bench/smtp.py: a bare aiosmtpd server whose DATA handler answers
``250 OK`` at once, served on the event loop the way gateway/smtp.py serves
(``loop.create_server(lambda: SMTP(handler, ...))``, no Controller thread).

No routing, no storage, no parsing: what is left is aiosmtpd's own SMTP dialogue
and DATA reading, the ceiling the gateway's SMTP path is compared with.

Usage: python bench/smtp_sink.py HOST PORT
Prints "sink: listening on HOST:PORT" when ready; on SIGTERM/SIGINT stops and
prints "sink: received N messages, M bytes".
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

# As the gateway's defaults (config.settings.SmtpSettings.max_message_bytes).
MAX_MESSAGE_BYTES = 26_214_400


class SinkHandler:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        self.messages += 1
        self.bytes += len(content) if content is not None else 0
        return "250 OK"


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = SinkHandler()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname="sink.bench.example",
            ident="ESMTP",
            timeout=300.0,
            loop=loop,
        ),
        host,
        port,
        backlog=1024,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sink: listening on {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        print(f"sink: received {handler.messages} messages, {handler.bytes} bytes", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
