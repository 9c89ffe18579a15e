"""Logging set-up from ``[log]``: stdlib logging rendered by structlog, as JSON lines
(for log shippers) or for a console. Configured once by the CLI at start."""

from __future__ import annotations

import logging
import sys

import structlog

from config import LogSettings


def configure_logging(settings: LogSettings) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            # The request id bound by gateway.request_ids, on lines logged while a
            # request is handled.
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Per-request lines would dominate the log and carry client addresses; metrics
    # cover request counts and latency.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosmtpd logs every peer address and command at INFO: IP addresses and mail
    # addresses are personal data we keep only where the privacy policy says.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # The twilio package logs every REST request (ten lines per SMS, with numbers).
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
