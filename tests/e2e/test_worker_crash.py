"""Background jobs survive a worker killed with SIGKILL mid-fetch and a Redis restart
that loses the queue: every MMS attachment ends stored, exactly once.

A private ``redis-server`` (no persistence, like the machine's own) runs on a free
port, so that restarting it disturbs nothing else. ``optmsg worker`` runs as a real
process; the media host is a small HTTP server in this process that can hold a
request open, so that the kill lands while a fetch is in progress.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.jobs import Jobs
from gateway.media_jobs import sweep_pending_media
from inbox import store
from inbox.addresses import E164
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database, open_database
from inbox.message import Channel, Inbound, InboundAttachment
from inbox.migrate import upgrade
from inbox.models import attachments_t
from tests.conftest import missing_service
from tests.e2e.harness import OPTMSG, Deadline, Deployment, create_deployment, free_port, tail
from tests.integration.helpers import inbound, run_batch

pytestmark = pytest.mark.slow

SMS_NUMBER = "+14155550199"
MEDIA = 4


def body(n: int) -> bytes:
    return b"\xff\xd8\xff" + f"media {n} ".encode() * 200


class _MediaHost:
    """Serves /media/N; while ``hold`` is set, requests wait until it is cleared."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.requests = 0
        self.lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with host.lock:
                    host.requests += 1
                while host.hold.is_set():
                    time.sleep(0.05)
                n = int(self.path.rsplit("/", 1)[1])
                data = body(n)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the worker was killed meanwhile
                    return

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/media/{n}"

    def close(self) -> None:
        self.hold.clear()
        self.server.shutdown()
        self.server.server_close()


class _Redis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None


@dataclass
class Setup:
    deployment: Deployment
    db: Database
    redis: _Redis
    media: _MediaHost
    message_id: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if shutil.which("redis-server") is None:
        missing_service("redis-server", "the redis-server binary is not installed")
    deadline = Deadline(60)
    redis_server = _Redis(tmp_path)
    redis_server.start()
    media = _MediaHost()
    deployment = create_deployment(tmp_path, deadline).with_settings(
        OPTMSG_REDIS__URL=f"redis://127.0.0.1:{redis_server.port}/0",
        OPTMSG_BRIDGES__TWILIO__MEDIA_HOSTS='["127.0.0.1"]',
        OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_HTTP="true",
        OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_PRIVATE="true",
        OPTMSG_BRIDGES__TWILIO__MEDIA_TIMEOUT_S="20",
    )
    db = open_database(deployment.load_settings().database)
    upgrade(db)
    store.create_user(
        db, first_name="A", last_name="B", date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"), sms_number=E164(SMS_NUMBER),
    )  # fmt: skip
    base = inbound("MM" + "7" * 32, to=SMS_NUMBER)
    attachments = tuple(
        InboundAttachment(content_type="image/jpeg", remote_url=media.url(n)) for n in range(MEDIA)
    )
    mms = Inbound(
        bridge=base.bridge, external_id=base.external_id, channel=Channel.MMS,
        sender=base.sender, recipient=base.recipient, text="pictures",
        received_at=base.received_at, attachments=attachments,
    )  # fmt: skip
    (result,) = run_batch(db, [mms])
    assert result.message_id is not None
    try:
        yield Setup(deployment, db, redis_server, media, result.message_id)
    finally:
        media.close()
        redis_server.kill()
        db.dispose()


def start_worker(deployment: Deployment, name: str, *extra: str) -> subprocess.Popen[bytes]:
    out = deployment.root / f"{name}.out"
    err = deployment.root / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(OPTMSG), "worker", *extra], cwd=deployment.root, env=deployment.env,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    for _ in range(300):
        if "optmsg: worker running" in out.read_text():
            return process
        if process.poll() is not None:
            pytest.fail(f"optmsg worker exited early:\n{tail(err)}", pytrace=False)
        time.sleep(0.05)
    pytest.fail(f"optmsg worker did not start:\n{tail(err)}", pytrace=False)


def statuses(db: Database) -> list[tuple[str, str | None]]:
    with db.read.connect() as conn:
        rows = conn.execute(sa.select(attachments_t.c.status, attachments_t.c.sha256))
        return [(r.status, r.sha256) for r in rows]


def wait_all_stored(db: Database, seconds: float) -> list[tuple[str, str | None]]:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        found = statuses(db)
        if all(status == "stored" for status, _ in found):
            return found
        time.sleep(0.1)
    return statuses(db)


def assert_stored_exactly_once(setup: Setup) -> None:
    found = wait_all_stored(setup.db, 30)
    assert len(found) == MEDIA, "an attachment row was added or lost"
    assert sorted(d for _, d in found) == sorted(
        hashlib.sha256(body(n)).hexdigest() for n in range(MEDIA)
    )
    blobs = DirectoryBlobStore(setup.deployment.load_settings().storage.blob_dir)
    for _, digest in found:
        assert digest is not None and blobs.exists(digest)


def enqueue(setup: Setup) -> None:
    settings = setup.deployment.load_settings()
    jobs = Jobs(settings, setup.db, DirectoryBlobStore(settings.storage.blob_dir))
    try:
        jobs.enqueue_media(setup.message_id)
    finally:
        jobs.stop()


def sweep(setup: Setup) -> None:
    """What every `optmsg serve` does periodically, here at once."""
    settings = setup.deployment.load_settings()
    jobs = Jobs(settings, setup.db, DirectoryBlobStore(settings.storage.blob_dir))
    try:
        assert sweep_pending_media(setup.db, jobs, older_than_s=0) == 1
    finally:
        jobs.stop()


def test_a_worker_killed_mid_fetch_loses_no_media(setup: Setup) -> None:
    setup.media.hold.set()
    first = start_worker(setup.deployment, "worker-1")
    enqueue(setup)
    give_up = time.monotonic() + 20
    while setup.media.requests == 0 and time.monotonic() < give_up:
        time.sleep(0.05)
    assert setup.media.requests > 0, "the worker never started fetching"
    first.kill()  # SIGKILL, mid-fetch: nothing acknowledged, nothing stored
    first.wait(timeout=5)
    assert {s for s, _ in statuses(setup.db)} == {"pending"}
    setup.media.hold.clear()
    second = start_worker(setup.deployment, "worker-2")
    try:
        sweep(setup)
        assert_stored_exactly_once(setup)
    finally:
        second.terminate()
        second.wait(timeout=30)


def test_a_redis_restart_with_jobs_queued_loses_no_media(setup: Setup) -> None:
    enqueue(setup)  # queued, no worker yet
    setup.redis.kill()  # the broker keeps nothing on disk: the job is gone
    setup.redis.start()
    worker = start_worker(setup.deployment, "worker")
    try:
        time.sleep(0.5)
        assert {s for s, _ in statuses(setup.db)} == {"pending"}
        sweep(setup)
        assert_stored_exactly_once(setup)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_worker_serves_its_job_metrics(setup: Setup) -> None:
    port = free_port()
    worker = start_worker(setup.deployment, "worker-m", "--metrics", f"127.0.0.1:{port}")
    try:
        enqueue(setup)
        assert_stored_exactly_once(setup)
        done = 'optmsg_jobs_total{actor="fetch_media",outcome="ok"} 1.0'
        give_up = time.monotonic() + 10
        while True:  # the job is counted just after its last commit
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
            if done in text or time.monotonic() > give_up:
                break
            time.sleep(0.1)
        assert done in text
        assert 'optmsg_queue_depth{queue="media",state="ready"} 0.0' in text
        assert 'optmsg_db_connections{engine="database",state="in_use"}' in text
    finally:
        worker.terminate()
        worker.wait(timeout=30)
