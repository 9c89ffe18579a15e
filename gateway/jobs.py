"""Background work through dramatiq: the broker, the actors, an optional worker.

Redis is the broker when ``[redis] url`` is set (workers run as ``optmsg worker``, or
inside ``optmsg serve``); otherwise an in-memory broker with a worker inside
``optmsg serve``, so that one process is a complete system. Either way the database
rows are the truth and a sweeper re-enqueues work whose message was lost, so an
in-memory queue lost in a crash costs a delay, never data.

Actors are made per :class:`Jobs` with an explicit broker rather than declared at
import time against dramatiq's process-global broker, so that tests and several apps
in one process each have their own.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from bridges.media import HostResolver
from bridges.twilio_rest import TwilioSender
from config import Settings
from gateway.media_jobs import fetch_message_media
from gateway.outbound import deliver_sms
from inbox.blobs import BlobStore
from inbox.db import Database

log = logging.getLogger(__name__)

MEDIA_QUEUE = "media"
SEND_QUEUE = "send"
# Sends are retried with backoff (1 s .. 5 min) on 5xx, 429 and connection errors,
# about 20 minutes in all, then marked failed with the provider's error.
SEND_ATTEMPTS = 8
SEND_TIMEOUT_S = 15.0
# An unacked message of a worker that died is handed to another after this long
# (dramatiq's default of 60 s plus rare maintenance left jobs stuck for minutes).
HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 50_000  # per million: maintenance on 5% of consumer polls


class Jobs:
    """The broker and the actors of one process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        *,
        media_resolver: HostResolver | None = None,
    ) -> None:
        self.settings = settings
        self._db = db
        self._blobs = blobs
        self._media_resolver = media_resolver
        middleware = [m() for m in default_middleware] + [CurrentMessage()]
        self.broker: dramatiq.Broker
        if settings.redis.url:
            self.broker = RedisBroker(  # type: ignore[no-untyped-call]
                url=settings.redis.url,
                namespace="optmsg",
                middleware=middleware,
                heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                maintenance_chance=MAINTENANCE_CHANCE,
            )
        else:
            self.broker = StubBroker(middleware=middleware)
        self.broker.declare_queue(MEDIA_QUEUE)
        self.broker.declare_queue(SEND_QUEUE)
        tw = settings.bridges.twilio
        self._media_attempts = tw.media_attempts
        self.fetch_media: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="fetch_media",
            queue_name=MEDIA_QUEUE,
            max_retries=tw.media_attempts - 1,
            min_backoff=1_000,
            max_backoff=60_000,
            # All media of a message are fetched concurrently within one timeout.
            time_limit=int(tw.media_timeout_s * 1000 * 2 + 10_000),
        )(self._fetch_media)
        self._sender = TwilioSender(
            tw.account_sid,
            tw.auth_token.get_secret_value(),
            tw.api_base_url,
            timeout_s=SEND_TIMEOUT_S,
        )
        self.send_sms: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="send_sms",
            queue_name=SEND_QUEUE,
            max_retries=SEND_ATTEMPTS - 1,
            min_backoff=1_000,
            max_backoff=300_000,
            time_limit=int(SEND_TIMEOUT_S * 1000 * 3),
        )(self._send_sms)
        self._worker: dramatiq.Worker | None = None

    @property
    def in_memory(self) -> bool:
        return isinstance(self.broker, StubBroker)

    def _fetch_media(self, message_id: str) -> None:
        current = CurrentMessage.get_current_message()
        retries = int(current.options.get("retries", 0)) if current is not None else 0
        outcome = fetch_message_media(
            self.settings,
            self._db,
            self._blobs,
            message_id,
            last_attempt=retries >= self._media_attempts - 1,
            resolver=self._media_resolver,
            delete_media=self._sender.delete_media,
        )
        if outcome.stored or outcome.failed:
            log.info(
                "media of %s: %d stored, %d failed", message_id, outcome.stored, outcome.failed
            )

    def _send_sms(self, message_id: str) -> None:
        current = CurrentMessage.get_current_message()
        retries = int(current.options.get("retries", 0)) if current is not None else 0
        deliver_sms(
            self.settings,
            self._db,
            self._sender,
            message_id,
            last_attempt=retries >= SEND_ATTEMPTS - 1,
        )

    def enqueue_send(self, message_id: str) -> None:
        """Ask for a pending outbound message to be handed to the provider."""
        self.send_sms.send(message_id)

    def enqueue_media(self, message_id: str) -> None:
        """Ask for the message's pending media to be fetched (blocking: Redis I/O)."""
        self.fetch_media.send(message_id)

    def start_worker(self, threads: int = 8) -> None:
        # The jobs wait on the network (media hosts, Twilio), not on the CPU.
        worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=50)
        worker.start()
        self._worker = worker

    def stop(self) -> None:
        """Stop the worker (finishing the jobs in hand) and close the broker."""
        if self._worker is not None:
            self._worker.stop(timeout=30_000)
            self._worker = None
        self.broker.close()

    def __repr__(self) -> str:
        kind = "memory" if self.in_memory else "redis"
        return f"Jobs(broker={kind})"

    def queue_sizes(self) -> dict[str, Any]:
        if isinstance(self.broker, StubBroker):
            return {q: self.broker.queues[q].qsize() for q in (MEDIA_QUEUE, SEND_QUEUE)}
        return {}
