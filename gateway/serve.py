"""Run the gateway until SIGTERM/SIGINT: migrations, HTTP server, graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading

from aiohttp import web
from prometheus_client import CollectorRegistry, start_http_server

from config import Settings, load_settings
from gateway.app import create_app
from gateway.job_metrics import PoolUse
from gateway.jobs import Jobs
from gateway.keys import SETTINGS
from gateway.reload import LiveSettings, Loader
from gateway.reload_wiring import reload_jobs, reload_logging
from inbox.blobs import DirectoryBlobStore
from inbox.db import open_database
from inbox.migrate import upgrade

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.0005
# How often `optmsg worker`'s main thread looks for a pending SIGHUP.
WORKER_WAKE_S = 0.5


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def _serve(
    settings: Settings, *, ready_line: bool = True, worker: bool = True, load: Loader | None = None
) -> None:
    app = create_app(settings, migrate=False, worker=worker)
    live = app[SETTINGS]
    reload_logging(live)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    host, port = _split(settings.http.listen)
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    # Everything allocated so far (settings, metadata tables, phonenumbers' metadata,
    # the app) lives as long as the process; moving it out of the collector's view
    # turns ~100 ms full collections under load into a few ms (measured).
    gc.collect()
    gc.freeze()
    # The writer's commits and the read pool run on threads that need the GIL back
    # from the busy event loop; at Python's default 5 ms switch interval each hand-off
    # added milliseconds to every batch. 0.5 ms: webhooks 4,500 -> 5,400 req/s, p99
    # 24 -> 17 ms (bench/webhook.py, same machine, back to back).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if load is not None:
        # Re-read optmsg.toml and env; runs on the loop between requests (see
        # gateway.reload: it only swaps references).
        loop.add_signal_handler(signal.SIGHUP, live.reload, load)
    if ready_line:
        # Scripts and tests wait for this line before sending traffic.
        print(f"optmsg: listening on http://{host}:{port}", flush=True)
    log.info("listening on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def serve(settings: Settings, *, worker: bool = True, load: Loader | None = None) -> None:
    """Apply migrations, then serve HTTP until a signal asks us to stop. SIGHUP
    reloads the settings with ``load`` (default: $OPTMSG_CONFIG and env)."""
    db = open_database(settings.database)
    try:
        upgrade(db)
    finally:
        db.dispose()
    asyncio.run(_serve(settings, worker=worker, load=load or load_settings))


def run_worker(
    settings: Settings,
    metrics_listen: str | None = None,
    load: Loader | None = None,
    supervisor: int | None = None,
) -> None:
    """Consume background jobs from Redis until SIGTERM/SIGINT (``optmsg worker``).
    ``metrics_listen`` (HOST:PORT): serve this worker's /metrics there (job durations
    and outcomes, queue depth, database connections). SIGHUP reloads the settings
    with ``load`` (default: $OPTMSG_CONFIG and env). ``supervisor``: the PID of the
    ``optmsg worker`` that started this one; when it is gone, this one stops too."""
    db = open_database(settings.database)
    try:
        upgrade(db)
        registry = CollectorRegistry()
        jobs = Jobs(settings, db, DirectoryBlobStore(settings.storage.blob_dir), registry=registry)
        if metrics_listen:
            registry.register(jobs.queue_depth())
            registry.register(PoolUse({"database": db.write}))
            host, _, port = metrics_listen.rpartition(":")
            start_http_server(int(port), addr=host, registry=registry)
            print(f"optmsg: worker metrics on http://{metrics_listen}/metrics", flush=True)
        live = LiveSettings(settings, registry=registry)
        reload_logging(live)
        reload_jobs(live, jobs)
        stop = threading.Event()
        hup = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        # The reload runs on this (main) thread, not inside the signal handler.
        signal.signal(signal.SIGHUP, lambda *_: hup.set())
        jobs.start_worker(threads=settings.worker.threads)
        print("optmsg: worker running", flush=True)
        log.info("worker running on %s", jobs)
        while not stop.wait(WORKER_WAKE_S):
            if hup.is_set():
                hup.clear()
                live.reload(load or load_settings)
            if supervisor is not None and os.getppid() != supervisor:
                # Reparented: the supervisor was killed and nobody would stop us.
                log.warning("worker supervisor (pid %d) is gone", supervisor)
                break
        log.info("worker stopping")
        jobs.stop()
    finally:
        db.dispose()
