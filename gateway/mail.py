"""Wiring of the email bridge: the SMTP server, the raw spool and the processor,
started and stopped with the app (the composition root's SMTP half)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from bridges.dns import Resolver
from bridges.email_parse import MimeLimits
from config import Settings
from config.pools import EMAIL_DB_THREADS
from gateway.email_ingest import EmailIngest
from gateway.keys import Runtime
from gateway.metrics import Metrics
from gateway.smtp import ReceivedEmail, SmtpLimits, start_smtp_server
from inbox import raw_store, store
from inbox.addresses import parse_email
from inbox.blobs import BlobStore
from inbox.committer import GroupCommitter
from inbox.db import Database
from inbox.errors import AddressError
from inbox.message import Inbound, IngestResult

log = logging.getLogger(__name__)

# Pending raw emails older than the grace period are retried this often.
SWEEP_INTERVAL_S = 30.0
SWEEP_GRACE_S = 60.0
# Threads that parse email and read raw messages back (config.pools counts them).
EMAIL_THREADS = EMAIL_DB_THREADS


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    smtp = settings.smtp
    if smtp.tls_cert is None or smtp.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(smtp.tls_cert), str(smtp.tls_key))
    return context


def _timed(
    accept: Callable[[ReceivedEmail], Awaitable[None]], metrics: Metrics
) -> Callable[[ReceivedEmail], Awaitable[None]]:
    """``accept`` observed into optmsg_smtp_data_seconds (end of DATA to the reply)."""
    stored = metrics.smtp_seconds.labels("stored")
    failed = metrics.smtp_seconds.labels("failed")

    async def timed_accept(email: ReceivedEmail) -> None:
        started = time.perf_counter()
        try:
            await accept(email)
        except BaseException:
            failed.observe(time.perf_counter() - started)
            raise
        stored.observe(time.perf_counter() - started)

    return timed_accept


@contextlib.asynccontextmanager
async def run_mail(
    settings: Settings,
    *,
    db: Database,
    blobs: BlobStore,
    ingest: Callable[[Inbound], Awaitable[IngestResult]],
    write_lock: asyncio.Lock,
    read_pool: ThreadPoolExecutor,
    resolver: Resolver,
    runtime: Runtime,
    metrics: Metrics | None = None,
) -> AsyncIterator[None]:
    """Serve SMTP for as long as the context is open; on exit stop accepting, finish
    the messages in flight and commit the spool."""
    smtp = settings.smtp
    loop = asyncio.get_running_loop()
    spool: GroupCommitter[raw_store.RawEmail, str] = GroupCommitter(
        db.write,
        raw_store.insert_raw_batch,
        max_batch=64,
        lock_timeout=settings.database.busy_timeout_ms / 1000,
        write_lock=write_lock,
        name="raw-spool",
    )
    done: GroupCommitter[raw_store.Processed, None] = GroupCommitter(
        db.write,
        raw_store.mark_done_batch,
        max_batch=64,
        lock_timeout=settings.database.busy_timeout_ms / 1000,
        write_lock=write_lock,
        name="raw-done",
    )
    # Parsing and DNS lookups block; they get their own threads so that a burst of
    # email never starves the client API's reads.
    work_pool = ThreadPoolExecutor(max_workers=EMAIL_THREADS, thread_name_prefix="email")
    email = EmailIngest(
        db=db,
        blobs=blobs,
        spool=spool,
        done=done,
        ingest=ingest,
        pool=work_pool,
        resolver=resolver,
        authserv_id=smtp.effective_authserv_id,
        metrics=metrics,
        limits=MimeLimits(
            max_depth=smtp.max_mime_depth,
            max_parts=smtp.max_mime_parts,
            max_header_bytes=smtp.max_header_bytes,
        ),
    )

    # One primary-key read per RCPT: on SQLite it runs on the loop, as the client
    # API's small reads do (gateway.api_support.quick_read says why).
    inline = db.is_sqlite and settings.database.inline_reads

    async def route(address: str) -> str | None:
        try:
            canonical = parse_email(address)
        except AddressError:
            return None
        if inline:
            return store.route_address(db, canonical)
        return await loop.run_in_executor(read_pool, store.route_address, db, canonical)

    spool.start()
    done.start()
    host, _, port = smtp.listen.rpartition(":")
    server = await start_smtp_server(
        host.strip("[]"),
        int(port),
        hostname=smtp.hostname,
        limits=SmtpLimits(
            max_message_bytes=smtp.max_message_bytes,
            max_recipients=smtp.max_recipients,
            max_header_bytes=smtp.max_header_bytes,
            max_line_bytes=smtp.max_line_bytes,
        ),
        route=route,
        accept=email.accept if metrics is None else _timed(email.accept, metrics),
        tls_context=_tls_context(settings),
    )
    runtime.smtp_server = server
    runtime.email = email
    recovering = asyncio.create_task(email.recover(), name="email-recover")
    sweeper = asyncio.create_task(
        email.sweep_periodically(SWEEP_INTERVAL_S, SWEEP_GRACE_S), name="email-sweeper"
    )
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        sweeper.cancel()
        recovering.cancel()
        for task in (sweeper, recovering):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await email.drain()
        await spool.stop()
        await done.stop()
        work_pool.shutdown(wait=True)
        runtime.smtp_server = None
