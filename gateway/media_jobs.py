"""Fetching one message's MMS media into the blob store: the work of the media job.

The database rows are the truth: an attachment is ``pending`` until its bytes are in
the blob store (``stored``) or it was refused for good (``failed``, with a reason the
user can read). The job is idempotent (dramatiq delivers at least once): it fetches
only what is still pending, blobs are content-addressed, and a row changes state only
from ``pending``. Retryable trouble (5xx, 429, timeouts) is retried by the broker with
backoff; on the last attempt what is still missing is marked failed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa

from bridges.media import (
    DEFAULT_TYPES,
    Fetched,
    FetchFailed,
    HostResolver,
    MediaPolicy,
    MediaRefused,
    fetch_all,
)
from config import Settings
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.message import AttachmentStatus, Inbound, IngestResult
from inbox.models import attachments_t
from inbox.store import delete_unreferenced_blobs

log = logging.getLogger(__name__)

_PENDING = AttachmentStatus.PENDING.value
# Twilio's media URLs: .../Accounts/AC.../Messages/MM.../Media/ME...
_TWILIO_MEDIA = re.compile(
    r"/Messages/(?P<message>[A-Z]{2}[0-9a-f]{32})/Media/(?P<media>ME[0-9a-f]{32})"
)


class MediaRetry(Exception):
    """Raised by the job when some media failed in a way worth retrying (the broker
    retries the job with backoff); carries how many are still pending."""


@dataclass(frozen=True, slots=True)
class MediaOutcome:
    stored: int
    failed: int
    pending: int


def media_policy(settings: Settings) -> MediaPolicy:
    tw = settings.bridges.twilio
    return MediaPolicy(
        allowed_hosts=frozenset(h.lower() for h in tw.media_hosts),
        allow_http=tw.media_allow_http,
        allow_private=tw.media_allow_private,
        max_bytes=tw.media_max_bytes,
        allowed_types=tuple(tw.media_types) or DEFAULT_TYPES,
        timeout_s=tw.media_timeout_s,
    )


def _pending(db: Database, message_id: str) -> tuple[list[tuple[str, str]], int]:
    """(attachment id, url) still pending, and the bytes already stored for the message."""
    a = attachments_t.c
    with db.read.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(a.id, a.remote_url, a.status, a.size)
                .where(a.message_id == message_id)
                .order_by(a.id)
            )
        )
    pending = [(r.id, r.remote_url) for r in rows if r.status == _PENDING and r.remote_url]
    used = sum(r.size or 0 for r in rows if r.status == AttachmentStatus.STORED.value)
    return pending, used


def _mark_all(
    db: Database, blobs: BlobStore, updates: list[tuple[str, dict[str, object]]]
) -> tuple[int, int]:
    """Apply the new states (only to rows still pending); (stored, failed) counts."""
    stored = failed = 0
    orphans: set[str] = set()
    if not updates:
        return 0, 0
    a = attachments_t.c
    with db.write.begin() as conn:
        for attachment_id, values in updates:
            changed = conn.execute(
                attachments_t.update()
                .where(a.id == attachment_id, a.status == _PENDING)
                .values(**values)
            ).rowcount
            if changed and values["status"] == AttachmentStatus.STORED.value:
                stored += 1
            elif changed:
                failed += 1
            elif values.get("sha256"):
                orphans.add(str(values["sha256"]))
    # The message was deleted while its media were being fetched: the bytes just
    # written belong to nobody (unless another attachment has the same content).
    delete_unreferenced_blobs(db, blobs, orphans)
    return stored, failed


def fetch_message_media(
    settings: Settings,
    db: Database,
    blobs: BlobStore,
    message_id: str,
    *,
    last_attempt: bool,
    resolver: HostResolver | None = None,
    delete_media: Callable[[str, str], None] | None = None,
) -> MediaOutcome:
    """Fetch the message's pending media. Raises MediaRetry when something retryable
    is left and this is not the last attempt."""
    pending, used = _pending(db, message_id)
    if not pending:
        return MediaOutcome(0, 0, 0)
    tw = settings.bridges.twilio
    policy = media_policy(settings)
    budget = max(policy.max_bytes - used, 0)
    results: list[Fetched | MediaRefused] = asyncio.run(
        fetch_all(
            [url for _, url in pending],
            policy=policy,
            auth=(tw.account_sid, tw.auth_token.get_secret_value()),
            max_total_bytes=budget,
            resolver=resolver,
        )
    )
    updates: list[tuple[str, dict[str, object]]] = []
    retry = 0
    for (attachment_id, _), result in zip(pending, results, strict=True):
        if isinstance(result, Fetched):
            digest = blobs.put(result.data)
            values: dict[str, object] = {
                "status": AttachmentStatus.STORED.value,
                "sha256": digest,
                "size": len(result.data),
                "content_type": result.content_type[:255],
                "error": None,
            }
            updates.append((attachment_id, values))
        elif isinstance(result, FetchFailed) and result.retryable and not last_attempt:
            retry += 1
        else:
            failure: dict[str, object] = {
                "status": AttachmentStatus.FAILED.value,
                "error": result.reason[:500],
            }
            updates.append((attachment_id, failure))
            log.info("media refused for message %s: %s", message_id, result.reason)
    # One transaction (one fsync) for all of the message's media, not one each.
    stored, failed = _mark_all(db, blobs, updates)
    if retry:
        raise MediaRetry(f"{retry} media of message {message_id} to retry")
    if delete_media is not None and tw.media_delete_after_fetch:
        for (_, url), result in zip(pending, results, strict=True):
            ids = _TWILIO_MEDIA.search(url)
            if isinstance(result, Fetched) and ids is not None:
                try:
                    delete_media(ids["message"], ids["media"])
                except Exception:  # noqa: BLE001 - best effort; our copy is stored
                    log.warning("could not delete media %s from Twilio", ids["media"])
    return MediaOutcome(stored, failed, 0)


def pending_media_messages(db: Database, *, older_than_s: float, limit: int = 500) -> list[str]:
    """Messages with media still pending for longer than ``older_than_s``: their job
    was lost (broker restart, process killed) or is still retrying; the sweeper
    enqueues them again (the job is idempotent)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    a = attachments_t.c
    with db.read.connect() as conn:
        return list(
            conn.execute(
                sa.select(a.message_id)
                .where(a.status == _PENDING, a.remote_url.is_not(None), a.created_at < cutoff)
                .group_by(a.message_id)
                .limit(limit)
            ).scalars()
        )


class MediaAwareIngest:
    """The bridges' ingest callable: commits through the group committer, then asks
    for a new message's media to be fetched. Enqueueing happens after the commit
    (the row is the truth); if it fails, the sweeper enqueues the message later."""

    def __init__(
        self,
        submit: Callable[[Inbound], Awaitable[IngestResult]],
        jobs: JobQueue,
        pool: ThreadPoolExecutor,
    ) -> None:
        self._submit = submit
        self._jobs = jobs
        self._pool = pool

    async def __call__(self, inbound: Inbound) -> IngestResult:
        result = await self._submit(inbound)
        if inbound.attachments and result.message_id and not result.duplicate:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._pool, self._jobs.enqueue_media, result.message_id)
            except Exception:  # noqa: BLE001 - the sweeper finds the pending rows
                log.warning("could not enqueue media of %s; the sweeper will", result.message_id)
        return result


class JobQueue(Protocol):
    def enqueue_media(self, message_id: str) -> None: ...


def sweep_pending_media(db: Database, jobs: JobQueue, *, older_than_s: float) -> int:
    """Enqueue again the messages whose media have been pending too long."""
    found = pending_media_messages(db, older_than_s=older_than_s)
    for message_id in found:
        jobs.enqueue_media(message_id)
    return len(found)
