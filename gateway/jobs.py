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
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware
from prometheus_client import CollectorRegistry

from bridges.media import HostResolver
from bridges.smtp_relay import SmtpRelay
from bridges.twilio_rest import TwilioSender
from config import Settings
from gateway.drafts_send import deliver_email
from gateway.job_metrics import JobMetrics, QueueDepth
from gateway.media_jobs import fetch_message_media
from gateway.outbound import deliver_sms
from gateway.provider_delete import delete_provider_copy
from inbox import export, leases
from inbox.blobs import BlobStore
from inbox.db import Database

log = logging.getLogger(__name__)

MEDIA_QUEUE = "media"
SEND_QUEUE = "send"
EXPORT_QUEUE = "export"
QUEUES = (MEDIA_QUEUE, SEND_QUEUE, EXPORT_QUEUE)
# An archive of a large account takes a while (it is written from the blob files).
EXPORT_TIME_LIMIT_MS = 60 * 60 * 1000
EXPORT_ATTEMPTS = 3
EXPORT_MAX_BACKOFF_MS = 120_000
# The longest one delivery of an export job can keep it pending: every attempt running
# into the time limit, each followed by the longest backoff.
EXPORT_ALL_ATTEMPTS_S = EXPORT_ATTEMPTS * (EXPORT_TIME_LIMIT_MS + EXPORT_MAX_BACKOFF_MS) / 1000
# Sends are retried with backoff (1 s .. 5 min) on 5xx, 429 and connection errors,
# about 20 minutes in all, then marked failed with the provider's error.
SEND_ATTEMPTS = 8
SEND_TIMEOUT_S = 15.0
# Twilio refuses to delete a message it is still processing and asks to wait a minute
# or more: provider deletes back off from a minute up to an hour (about 2 h in all).
PROVIDER_DELETE_ATTEMPTS = 8
# An unacked message of a worker that died is handed to another after this long
# (dramatiq's default of 60 s plus rare maintenance left jobs stuck for minutes).
HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 50_000  # per million: maintenance on 5% of consumer polls


def _media_time_limit_ms(media_timeout_s: float) -> int:
    # All media of a message are fetched concurrently within one timeout.
    return int(media_timeout_s * 1000 * 2 + 10_000)


class Jobs:
    """The broker and the actors of one process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        *,
        media_resolver: HostResolver | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self._db = db
        self._blobs = blobs
        self._media_resolver = media_resolver
        middleware: list[dramatiq.Middleware] = [m() for m in default_middleware]
        middleware.append(CurrentMessage())
        if registry is not None:
            # Job durations and outcomes, and the queues' depth, on /metrics.
            middleware.append(JobMetrics(registry))
        self.broker: dramatiq.Broker
        if settings.redis.url:
            self.broker = RedisBroker(  # type: ignore[no-untyped-call]
                url=settings.redis.url,
                namespace=settings.redis.namespace,
                middleware=middleware,
                heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                maintenance_chance=MAINTENANCE_CHANCE,
            )
        else:
            self.broker = StubBroker(middleware=middleware)
        for queue in QUEUES:
            self.broker.declare_queue(queue)
        tw = settings.bridges.twilio
        self._media_attempts = tw.media_attempts
        self.fetch_media: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="fetch_media",
            queue_name=MEDIA_QUEUE,
            max_retries=tw.media_attempts - 1,
            min_backoff=1_000,
            max_backoff=60_000,
            time_limit=_media_time_limit_ms(tw.media_timeout_s),
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
        self.build_export: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="build_export",
            queue_name=EXPORT_QUEUE,
            # Only database trouble is retried: unreadable data marks the export failed.
            max_retries=EXPORT_ATTEMPTS - 1,
            min_backoff=5_000,
            max_backoff=EXPORT_MAX_BACKOFF_MS,
            time_limit=EXPORT_TIME_LIMIT_MS,
        )(self._build_export)
        out = settings.email_out
        host, _, port = out.relay.rpartition(":")
        self._relay = SmtpRelay(
            host.strip("[]"),
            int(port),
            username=out.username,
            password=out.password.get_secret_value(),
            starttls=out.starttls,
            timeout_s=out.timeout_s,
            local_hostname=settings.smtp.hostname,
        )
        # Retried like SMS on a 4xx reply or a connection failure; a 5xx fails it.
        self.send_email: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="send_email",
            queue_name=SEND_QUEUE,
            max_retries=SEND_ATTEMPTS - 1,
            min_backoff=1_000,
            max_backoff=300_000,
            time_limit=int(out.timeout_s * 1000 * 4 + 10_000),
        )(self._send_email)
        # The payload is the provider's Message SID only: the message is deleted here.
        self.delete_provider_message: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker,
            actor_name="delete_provider_message",
            queue_name=SEND_QUEUE,
            max_retries=PROVIDER_DELETE_ATTEMPTS - 1,
            min_backoff=60_000,
            max_backoff=3_600_000,
            time_limit=int(SEND_TIMEOUT_S * 1000 * 3),
        )(self._delete_provider_message)
        self._worker: dramatiq.Worker | None = None

    def retune(self, settings: Settings) -> None:
        """Take reloaded settings (gateway.reload_wiring): media rules, attempts and
        time limit, the Twilio auth token of REST calls, job knobs. The broker, the
        queues and the SMTP relay stay as started."""
        tw = settings.bridges.twilio
        if tw.auth_token != self.settings.bridges.twilio.auth_token:
            # A job already sending keeps the sender it took; the next takes this one.
            self._sender = TwilioSender(
                tw.account_sid,
                tw.auth_token.get_secret_value(),
                tw.api_base_url,
                timeout_s=SEND_TIMEOUT_S,
            )
        self._media_attempts = tw.media_attempts
        # dramatiq reads an actor's options when a message fails or starts.
        self.fetch_media.options["max_retries"] = tw.media_attempts - 1
        self.fetch_media.options["time_limit"] = _media_time_limit_ms(tw.media_timeout_s)
        self.settings = settings

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

    def _build_export(self, export_id: str) -> None:
        # The sweeper may enqueue an export again while a slow build still runs (in
        # this or another worker): one build per export at a time, by a lease that
        # lasts as long as a build may (a crashed build's lease then simply expires).
        lease, holder = f"export:{export_id}", f"{os.getpid()}:{secrets.token_hex(8)}"
        ttl = timedelta(milliseconds=EXPORT_TIME_LIMIT_MS)
        if not leases.try_lease(self._db, lease, holder, ttl):
            log.info("export %s: already being built elsewhere", export_id)
            return
        try:
            # A deleted account's export is gone with it: build() then returns None.
            record = export.build(
                self._db,
                self._blobs,
                export.exports_dir(Path(self.settings.storage.blob_dir)),
                export_id,
                ttl=timedelta(hours=self.settings.privacy.export_ttl_hours),
            )
        finally:
            leases.release(self._db, lease, holder)
        if record is not None:
            log.info("export %s: %s", export_id, record.state)

    def queue_depth(self) -> QueueDepth:
        """A /metrics collector of this broker's queues."""
        return QueueDepth(self.broker, lambda: iter(QUEUES))

    def enqueue_export(self, export_id: str) -> None:
        """Ask for a pending export's archive to be built (blocking: Redis I/O)."""
        self.build_export.send(export_id)

    def _send_email(self, message_id: str) -> None:
        current = CurrentMessage.get_current_message()
        retries = int(current.options.get("retries", 0)) if current is not None else 0
        deliver_email(
            self._db,
            self._blobs,
            self._relay,
            message_id,
            last_attempt=retries >= SEND_ATTEMPTS - 1,
        )

    def _delete_provider_message(self, sid: str) -> None:
        current = CurrentMessage.get_current_message()
        retries = int(current.options.get("retries", 0)) if current is not None else 0
        delete_provider_copy(
            self._sender, sid, last_attempt=retries >= PROVIDER_DELETE_ATTEMPTS - 1
        )

    def enqueue_provider_delete(self, sid: str) -> None:
        """Ask for a message to be deleted at Twilio (blocking: Redis I/O)."""
        self.delete_provider_message.send(sid)

    def enqueue_email(self, message_id: str) -> None:
        """Ask for a pending outbound email to be handed to the SMTP relay."""
        self.send_email.send(message_id)

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
        if isinstance(self.broker, RedisBroker):
            # dramatiq's RedisBroker.close() leaves its connection pool open.
            self.broker.client.connection_pool.disconnect()

    def __repr__(self) -> str:
        kind = "memory" if self.in_memory else "redis"
        return f"Jobs(broker={kind})"
