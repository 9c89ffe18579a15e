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
from bridges.twilio import StatusUpdate, TwilioBridge
from config import HttpSettings, Settings
from gateway import (
    api,
    api_limits,
    api_support,
    cors,
    health,
    live,
    media_route,
    web_page,
    webhooks,
)
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
    SPOOL,
    TWILIO,
    Runtime,
)
from gateway.limits import Limits
from gateway.live import EventHub
from gateway.mail import run_mail
from gateway.media_jobs import MediaAwareIngest, sweep_pending_media
from gateway.media_urls import MEDIA_PATH
from gateway.metrics import Metrics
from gateway.outbound import SEND_SWEEP_GRACE_S, apply_status, pending_sends
from gateway.pipeline import IngestPipeline
from gateway.problems import problem
from gateway.reload import LiveSettings, upper_bound
from gateway.reload_wiring import reload_gateway, signature_verifier
from gateway.request_ids import request_ids
from gateway.retention import RETENTION_LEASE, run_retention_if_elected
from gateway.sms_commands import SmsCommands
from gateway.spool_replay import Replayer, WebhookSpool
from inbox import export, leases
from inbox.blobs import BlobStore, DirectoryBlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database, checkpoint, open_database
from inbox.message import Inbound, IngestResult
from inbox.migrate import upgrade
from optin.decide import Policy

log = logging.getLogger(__name__)

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
    return TwilioBridge(
        verifier=signature_verifier(settings),
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
    live: LiveSettings, db: Database, blobs: BlobStore, pool: ThreadPoolExecutor
) -> None:
    """Retention (held-message expiry, blocked mail purge, IP erasure, old exports,
    codes and events) once per ``optin.retention_interval_s`` across all gateway
    processes: each asks for the retention lease; its holder does the run."""
    loop = asyncio.get_running_loop()
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    try:
        while True:
            # The settings in force at each run: its knobs reload on SIGHUP.
            settings = live.current
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
    live: LiveSettings, db: Database, jobs: Jobs, pool: ThreadPoolExecutor
) -> None:
    """Re-enqueue media whose job was lost. A job still retrying is enqueued again too;
    the job is idempotent, so that costs only a repeated look at the rows."""
    loop = asyncio.get_running_loop()
    while True:
        # How often and how long media may stay pending (two fetch timeouts for a job
        # in hand, plus the grace) before their message is enqueued again: worker.*.
        await asyncio.sleep(live.current.worker.sweep_interval_s)
        settings = live.current
        grace = settings.bridges.twilio.media_timeout_s * 2 + settings.worker.sweep_grace_s
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


def _database_answers(db: Database) -> bool:
    """Whether a write transaction can start (on SQLite that takes the write lock: a
    file locked by another process is as unavailable as a server that is down)."""
    try:
        with db.write.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return False
    return True


def _spool_replayer(app: web.Application, hub: EventHub) -> Replayer:
    """The replayer, wired to the same ingest, commands and status code as webhooks."""
    db, pool, spool = app[DATABASE], app[READ_POOL], app[SPOOL]

    async def store_status(update: StatusUpdate) -> None:
        loop = asyncio.get_running_loop()
        moved_for = await loop.run_in_executor(pool, apply_status, db, update)
        if moved_for is not None:
            hub.notify([moved_for])

    async def database_up() -> bool:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(spool.settings.store_timeout_s):
                return await loop.run_in_executor(pool, _database_answers, db)
        except TimeoutError:
            return False

    return Replayer(
        spool=spool,
        bridge=app[TWILIO],
        ingest=app[INGEST],
        commands=app.get(SMS_COMMANDS),
        apply_status=store_status,
        database_up=database_up,
        metrics=app[METRICS],
    )


@contextlib.asynccontextmanager
async def _metrics_listener(
    app: web.Application, listen: str, runtime: Runtime
) -> AsyncIterator[None]:
    """Serve /metrics (and nothing else) on its own HOST:PORT, from the same registry."""
    metrics_app = web.Application()
    metrics_app[METRICS] = app[METRICS]
    metrics_app.router.add_get("/metrics", health.metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    try:
        await site.start()
        runtime.metrics_port = int(runner.addresses[0][1])
        yield
    finally:
        runtime.metrics_port = None
        await runner.cleanup()


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
        # The largest body any route accepts; each handler enforces its own (current)
        # limit. Fixed at start, so the webhooks' part is the most a reload may set.
        client_max_size=max(
            upper_bound(HttpSettings, "max_webhook_bytes"),
            settings.http.max_api_body_bytes,
            settings.optin.max_contacts_bytes,
        ),
    )
    # Created here (nothing connects yet) so that app state is complete before the
    # app is frozen; threads start and connections open in ``resources``.
    db = open_database(settings.database, background_checkpoint=True)
    pool = ThreadPoolExecutor(max_workers=settings.database.pool_size, thread_name_prefix="db-read")
    pipeline = IngestPipeline(
        Policy(
            require_email_auth=settings.optin.require_email_auth,
            flood_exempt_trusted=settings.limits.trusted_exempt,
        )
    )
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
    app[METRICS] = Metrics()
    live_settings = LiveSettings(settings, registry=app[METRICS].registry)
    app[SETTINGS] = live_settings
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
    auth_runtime = build_auth_runtime(settings)
    app[AUTH] = auth_runtime
    limits = Limits.build(settings, app[METRICS], auth_runtime.keys)
    # Every inbound message (SMS/MMS and email) passes the per-sender flood limit.
    submit = limits.guard(committer.submit)
    ingest = MediaAwareIngest(submit, jobs, pool)
    app[INGEST] = ingest
    runtime = Runtime()
    app[RUNTIME] = runtime
    spool = WebhookSpool(settings.spool)
    app[SPOOL] = spool
    app[METRICS].spool_messages.set_function(lambda: spool.pending)
    dns = resolver or SystemResolver(
        timeout=settings.smtp.dns_timeout_s, nameservers=settings.smtp.nameservers()
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            if migrate:
                await loop.run_in_executor(pool, upgrade, db)
            committer.start()
            if worker or jobs.in_memory:
                # An in-memory queue has no other consumer: `--no-worker` only makes
                # sense with Redis (see cli).
                jobs.start_worker(threads=settings.worker.threads)
            sweeper = asyncio.create_task(
                _sweep_media_periodically(live_settings, db, jobs, pool), name="media-sweeper"
            )
            checkpointer = asyncio.create_task(_checkpoint_periodically(db, pool))
            token_use = asyncio.create_task(
                _flush_token_use_periodically(auth_runtime, db, pool), name="token-use"
            )
            retention = asyncio.create_task(
                _retention_periodically(live_settings, db, app[BLOBS], pool), name="retention"
            )
            tasks.extend([checkpointer, retention, sweeper, token_use])
            if settings.bridges.twilio.enabled:
                # A second process on the same [spool] dir takes the next slot.
                await spool.open()
                tasks.append(
                    asyncio.create_task(_spool_replayer(app, hub).run(), name="spool-replay")
                )
            async with contextlib.AsyncExitStack() as stack:
                if settings.http.metrics_listen:
                    await stack.enter_async_context(
                        _metrics_listener(app, settings.http.metrics_listen, runtime)
                    )
                if settings.smtp.enabled:
                    await stack.enter_async_context(
                        run_mail(
                            settings,
                            db=db,
                            blobs=app[BLOBS],
                            ingest=submit,
                            write_lock=write_lock,
                            read_pool=pool,
                            resolver=dns,
                            runtime=runtime,
                            metrics=app[METRICS],
                        )
                    )
                yield
        finally:
            # Also when start-up failed half-way (a busy spool, a port in use): no
            # background task may outlive the resources it uses.
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Commit what was submitted before the event loop goes away.
            await committer.stop()
            await spool.close()
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
    if not settings.http.metrics_listen:
        app.router.add_get("/metrics", health.metrics)
    if settings.bridges.twilio.enabled:
        app[TWILIO] = _twilio_bridge(settings)
        app[SMS_COMMANDS] = SmsCommands(
            db, pool, settings.bridges.twilio.service_number, settings.optin.default_region
        )
        app.router.add_post("/bridges/twilio/sms", webhooks.twilio_sms)
        app.router.add_post("/bridges/twilio/status", webhooks.twilio_status)
        app.router.add_get(f"{MEDIA_PATH}/{{attachment_id}}", media_route.serve_outbound_media)
    api_app = api.api_app()
    api_limits.install(api_app, settings, app[METRICS])
    app.add_subapp(api_support.API_PREFIX, api_app)
    limits.install(app)
    live.install(app, hub)
    web_page.install(app)
    cors.install(app, settings.http.cors_origins)
    reload_gateway(
        live_settings,
        bridge=app.get(TWILIO),
        jobs=jobs,
        pipeline=pipeline,
        hub=hub,
        auth=auth_runtime,
    )
    return app
