"""Typed application state (aiohttp AppKey): set once in create_app, frozen after start."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from bridges.twilio import TwilioBridge
from gateway.accounts import AuthRuntime
from gateway.email_ingest import EmailIngest
from gateway.jobs import Jobs
from gateway.media_jobs import MediaAwareIngest
from gateway.metrics import Metrics
from gateway.reload import LiveSettings
from gateway.sms_commands import SmsCommands
from gateway.spool_replay import WebhookSpool
from inbox.blobs import BlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database
from inbox.message import Inbound, IngestResult

# The settings in force: read ``request.config_dict[SETTINGS].current`` per use, never
# keep it, so that a reload (SIGHUP) reaches every handler (see gateway.reload).
SETTINGS = web.AppKey("settings", LiveSettings)
DATABASE = web.AppKey("database", Database)
BLOBS = web.AppKey("blobs", BlobStore)
METRICS = web.AppKey("metrics", Metrics)
READ_POOL = web.AppKey("read_pool", ThreadPoolExecutor)
COMMITTER = web.AppKey("committer", GroupCommitter[Inbound, IngestResult])
TWILIO = web.AppKey("twilio", TwilioBridge)
SMS_COMMANDS = web.AppKey("sms_commands", SmsCommands)
JOBS = web.AppKey("jobs", Jobs)
INGEST = web.AppKey("ingest", MediaAwareIngest)
AUTH = web.AppKey("auth", AuthRuntime)
SPOOL = web.AppKey("spool", WebhookSpool)


@dataclass
class Runtime:
    """What exists only while the app runs (set in its cleanup context)."""

    smtp_server: asyncio.base_events.Server | None = None
    email: EmailIngest | None = None
    #: The port of the separate /metrics listener (http.metrics_listen) while it runs.
    metrics_port: int | None = None

    @property
    def smtp_port(self) -> int | None:
        if self.smtp_server is None or not self.smtp_server.sockets:
            return None
        return int(self.smtp_server.sockets[0].getsockname()[1])


RUNTIME = web.AppKey("runtime", Runtime)
