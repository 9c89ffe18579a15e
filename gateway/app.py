"""The aiohttp application: routes, middlewares and the resources they share."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from aiohttp import web

from bridges.dns import Resolver, SystemResolver
from bridges.media import HostResolver
from bridges.twilio import SignatureVerifier, TwilioBridge
from config import Settings
from gateway import api, api_support, cors, health, live, media_route, webhooks
from gateway.accounts import (
    TOKEN_USE_FLUSH_S,
    AuthRuntime,
    build_auth_runtime,
    flush_token_use,
)
from gateway.drafts_send import pending_emails
from gateway.job_metrics import PoolUse
from gateway.jobs import EXPORT_ALL_ATTEMPTS_S, EXPORT_TIME_LIMIT_MS, Jobs
from gateway.keys import (
    AUTH,
    BLOBS,
    COMMITTER,
    DATABASE,
    INGEST,
    JOBS,
    METRICS,
    READ_POOL,
    RUNTIME,
    SETTINGS,
    SMS_COMMANDS,
    TWILIO,
    Runtime,
)
from gateway.live import EventHub
from gateway.mail import run_mail
from gateway.media_jobs import MediaAwareIngest, sweep_pending_media
from gateway.media_urls import MEDIA_PATH
from gateway.metrics import Metrics
from gateway.outbound import SEND_SWEEP_GRACE_S, pending_sends
from gateway.pipeline import IngestPipeline
from gateway.problems import problem
from gateway.request_ids import request_ids
from gateway.retention import RETENTION_LEASE, run_retention_if_elected
from gateway.sms_commands import SmsCommands
from inbox import export, leases
from inbox.blobs import BlobStore, DirectoryBlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database, checkpoint, open_database
from inbox.message import Inbound, IngestResult
from inbox.migrate import upgrade
from optin.decide import Policy

log = logging.getLogger(__name__)

# The media sweeper: how often it looks, and how long media may stay pending
# (beyond two fetch timeouts) before their message is enqueued again.
MEDIA_SWEEP_INTERVAL_S = 60.0
MEDIA_SWEEP_GRACE_S = 60.0
# How often the WAL is folded back into the SQLite file (see inbox.db.checkpoint).
CHECKPOINT_INTERVAL_S = 1.0
# An export still pending this long lost its job (a build may take up to the job's
# time limit, so a slow one is not started twice).
EXPORT_SWEEP_GRACE_S = EXPORT_TIME_LIMIT_MS / 1000 + 600.0
# An export still pending this long never will be ready: even a job lost just before
# the grace and enqueued again by the sweeper has had every attempt (each up to the
# time limit, with the longest backoff between). The sweeper marks it failed instead
# of rebuilding it forever, and the user may request a new one.
EXPORT_GIVE_UP_S = EXPORT_SWEEP_GRACE_S + EXPORT_ALL_ATTEMPTS_S


@web.middleware
async def errors_as_problems(
    request: web.Request, handler: api_support.Handler
) -> web.StreamResponse:
    """Every error leaves as application/problem+json, never as a traceback."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, exc.reason, headers=headers or None)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal error")
    if request.path.startswith(api_support.API_PREFIX):
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _twilio_bridge(settings: Settings) -> TwilioBridge:
    tw = settings.bridges.twilio
    verifier = SignatureVerifier(
        public_url=settings.http.public_url,
        auth_token=tw.auth_token.get_secret_value().encode("utf-8"),
        shared_keys={
            k: v.get_secret_value().encode("utf-8") for k, v in tw.webhook_shared_keys.items()
        },
        url_fragment=tw.webhook_url_fragment.lstrip("#"),
    )
    return TwilioBridge(
        verifier=verifier,
        default_region=settings.optin.default_region,
        max_body_bytes=settings.http.max_webhook_bytes,
        help_reply=tw.help_reply,
    )


async def _flush_token_use_periodically(
    runtime: AuthRuntime, db: Database, pool: ThreadPoolExecutor
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(TOKEN_USE_FLUSH_S)
        try:
            await loop.run_in_executor(pool, flush_token_use, runtime.token_use, db)
        except Exception:
            log.exception("recording token use failed; will retry")


async def _checkpoint_periodically(db: Database, pool: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(CHECKPOINT_INTERVAL_S)
        try:
            await loop.run_in_executor(pool, checkpoint, db)
        except sa.exc.SQLAlchemyError:
            log.exception("WAL checkpoint failed; will retry")


async def _retention_periodically(
    settings: Settings, db: Database, blobs: BlobStore, pool: ThreadPoolExecutor
) -> None:
    """Retention (held-message expiry, blocked mail purge, IP erasure, old exports,
    codes and events) once per ``optin.retention_interval_s`` across all gateway
    processes: each asks for the retention lease; its holder does the run."""
    loop = asyncio.get_running_loop()
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    try:
        while True:
            try:
                await loop.run_in_executor(
                    pool, run_retention_if_elected, settings, db, blobs, holder
                )
            except Exception:
                log.exception("retention run failed; will retry")
            await asyncio.sleep(settings.optin.retention_interval_s)
    finally:
        # Stopping: let another process take over at once rather than at expiry.
        with contextlib.suppress(Exception):
            await loop.run_in_executor(pool, leases.release, db, RETENTION_LEASE, holder)


async def _sweep_media_periodically(
    settings: Settings, db: Database, jobs: Jobs, pool: ThreadPoolExecutor
) -> None:
    """Re-enqueue media whose job was lost. A job still retrying is enqueued again too;
    the job is idempotent, so that costs only a repeated look at the rows."""
    loop = asyncio.get_running_loop()
    grace = settings.bridges.twilio.media_timeout_s * 2 + MEDIA_SWEEP_GRACE_S
    while True:
        await asyncio.sleep(MEDIA_SWEEP_INTERVAL_S)
        try:
            found = await loop.run_in_executor(
                pool, functools.partial(sweep_pending_media, db, jobs, older_than_s=grace)
            )
            if found:
                log.info("media sweeper: %d message(s) enqueued again", found)
            sends = await loop.run_in_executor(
                pool,
                functools.partial(pending_sends, db, older_than_s=SEND_SWEEP_GRACE_S),
            )
            for message_id in sends:
                await loop.run_in_executor(pool, jobs.enqueue_send, message_id)
            if sends:
                log.info("send sweeper: %d message(s) enqueued again", len(sends))
            given_up = await loop.run_in_executor(
                pool,
                functools.partial(export.fail_stale_exports, db, older_than_s=EXPORT_GIVE_UP_S),
            )
            if given_up:
                log.warning("export sweeper: %d export(s) never built, failed", len(given_up))
            exports = await loop.run_in_executor(
                pool,
                functools.partial(
                    export.pending_exports,
                    db,
                    older_than_s=EXPORT_SWEEP_GRACE_S,
                    younger_than_s=EXPORT_GIVE_UP_S,
                ),
            )
            for export_id in exports:
                await loop.run_in_executor(pool, jobs.enqueue_export, export_id)
            if exports:
                log.info("export sweeper: %d export(s) enqueued again", len(exports))
            emails = await loop.run_in_executor(
                pool,
                functools.partial(pending_emails, db, older_than_s=SEND_SWEEP_GRACE_S),
            )
            for message_id in emails:
                await loop.run_in_executor(pool, jobs.enqueue_email, message_id)
            if emails:
                log.info("send sweeper: %d email(s) enqueued again", len(emails))
        except Exception:
            log.exception("media sweep failed; will retry")


def create_app(
    settings: Settings,
    *,
    migrate: bool = True,
    resolver: Resolver | None = None,
    worker: bool = True,
    media_resolver: HostResolver | None = None,
) -> web.Application:
    """Build the app. The database, writer, pools and SMTP server start with the app
    (``cleanup_ctx``) and stop with it; ``migrate`` applies migrations first.
    ``resolver`` answers the email bridge's DNS queries (default: the system's);
    ``worker`` runs background jobs in this process (always, without Redis);
    ``media_resolver`` resolves media hosts (tests map names to 127.0.0.1)."""
    app = web.Application(
        middlewares=[request_ids(), errors_as_problems],
        # The largest body any route accepts; each handler enforces its own limit.
        client_max_size=max(
            settings.http.max_webhook_bytes,
            settings.http.max_api_body_bytes,
            settings.optin.max_contacts_bytes,
        ),
    )
    # Created here (nothing connects yet) so that app state is complete before the
    # app is frozen; threads start and connections open in ``resources``.
    db = open_database(settings.database, background_checkpoint=True)
    pool = ThreadPoolExecutor(max_workers=settings.database.pool_size, thread_name_prefix="db-read")
    pipeline = IngestPipeline(Policy(require_email_auth=settings.optin.require_email_auth))
    # Every writer of this process takes turns through one lock (see GroupCommitter).
    write_lock = asyncio.Lock()
    hub = EventHub(settings, db, pool)
    committer: GroupCommitter[Inbound, IngestResult] = GroupCommitter(
        db.write,
        pipeline.process,
        max_batch=settings.database.batch_max,
        lock_timeout=settings.database.busy_timeout_ms / 1000,
        write_lock=write_lock,
        name="ingest-writer",
        on_commit=lambda results: hub.notify(r.user_id for r in results if r.user_id),
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[DATABASE] = db
    app[READ_POOL] = pool
    app[COMMITTER] = committer
    app[BLOBS] = DirectoryBlobStore(settings.storage.blob_dir)
    jobs = Jobs(
        settings, db, app[BLOBS], media_resolver=media_resolver, registry=app[METRICS].registry
    )
    app[METRICS].registry.register(jobs.queue_depth())
    engines = {"read": db.read} if db.read is db.write else {"read": db.read, "write": db.write}
    app[METRICS].registry.register(PoolUse(engines))
    app[JOBS] = jobs
    ingest = MediaAwareIngest(committer.submit, jobs, pool)
    app[INGEST] = ingest
    auth_runtime = build_auth_runtime(settings)
    app[AUTH] = auth_runtime
    runtime = Runtime()
    app[RUNTIME] = runtime
    dns = resolver or SystemResolver(timeout=settings.smtp.dns_timeout_s)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        try:
            if migrate:
                await loop.run_in_executor(pool, upgrade, db)
            committer.start()
            if worker or jobs.in_memory:
                # An in-memory queue has no other consumer: `--no-worker` only makes
                # sense with Redis (see cli).
                jobs.start_worker()
            sweeper = asyncio.create_task(
                _sweep_media_periodically(settings, db, jobs, pool), name="media-sweeper"
            )
            checkpointer = asyncio.create_task(_checkpoint_periodically(db, pool))
            token_use = asyncio.create_task(
                _flush_token_use_periodically(auth_runtime, db, pool), name="token-use"
            )
            retention = asyncio.create_task(
                _retention_periodically(settings, db, app[BLOBS], pool), name="retention"
            )
            async with contextlib.AsyncExitStack() as stack:
                if settings.smtp.enabled:
                    await stack.enter_async_context(
                        run_mail(
                            settings,
                            db=db,
                            blobs=app[BLOBS],
                            ingest=committer,
                            write_lock=write_lock,
                            read_pool=pool,
                            resolver=dns,
                            runtime=runtime,
                            metrics=app[METRICS],
                        )
                    )
                yield
            for task in (checkpointer, retention, sweeper, token_use):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            # Commit what was submitted before the event loop goes away.
            await committer.stop()
            await loop.run_in_executor(None, jobs.stop)
            try:
                await loop.run_in_executor(pool, flush_token_use, auth_runtime.token_use, db)
            except Exception:
                log.exception("recording token use at shutdown failed")
            await auth_runtime.close()
            pool.shutdown(wait=True)
            db.dispose()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    if settings.bridges.twilio.enabled:
        app[TWILIO] = _twilio_bridge(settings)
        app[SMS_COMMANDS] = SmsCommands(
            db, pool, settings.bridges.twilio.service_number, settings.optin.default_region
        )
        app.router.add_post("/bridges/twilio/sms", webhooks.twilio_sms)
        app.router.add_post("/bridges/twilio/status", webhooks.twilio_status)
        app.router.add_get(f"{MEDIA_PATH}/{{attachment_id}}", media_route.serve_outbound_media)
    app.add_subapp(api_support.API_PREFIX, api.api_app())
    live.install(app, hub)
    cors.install(app, settings.http.cors_origins)
    return app
