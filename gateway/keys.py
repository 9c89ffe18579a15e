"""Typed application state (aiohttp AppKey): set once in create_app, frozen after start."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from bridges.twilio import TwilioBridge
from config import Settings
from gateway.metrics import Metrics
from inbox.blobs import BlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database
from inbox.message import Inbound, IngestResult

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
BLOBS = web.AppKey("blobs", BlobStore)
METRICS = web.AppKey("metrics", Metrics)
READ_POOL = web.AppKey("read_pool", ThreadPoolExecutor)
COMMITTER = web.AppKey("committer", GroupCommitter[Inbound, IngestResult])
TWILIO = web.AppKey("twilio", TwilioBridge)
