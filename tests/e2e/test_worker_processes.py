"""`optmsg worker` with `worker.processes = 2`: a supervisor and two real worker
processes on a private ``redis-server``, consuming MMS media jobs.

Each worker has one thread (`worker.threads = 1`) and each message one attachment,
so two media requests held open at the same time can only come from two processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
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
from inbox import store
from inbox.addresses import E164
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database, open_database
from inbox.message import Channel, Inbound, InboundAttachment
from inbox.migrate import upgrade
from inbox.models import attachments_t
from tests.conftest import missing_service
from tests.e2e.harness import OPTMSG, Deadline, Deployment, create_deployment, free_port, tail
from tests.e2e.test_worker_crash import _Redis
from tests.integration.helpers import inbound, run_batch

pytestmark = pytest.mark.slow

SMS_NUMBER = "+14155550199"
PROCESSES = 2
# The supervisor's bound on a stop (gateway.worker_supervisor.STOP_WAIT_S) plus slack.
STOP_BOUND_S = 50.0
JOBS_OK = re.compile(r'^optmsg_jobs_total\{actor="fetch_media",outcome="ok"\} (\S+)$', re.M)


class _MediaHost:
    """Serves a small JPEG; while ``hold`` is set requests wait, counted in flight."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with host.lock:
                    host.in_flight += 1
                    host.most_in_flight = max(host.most_in_flight, host.in_flight)
                try:
                    while host.hold.is_set():
                        time.sleep(0.02)
                    data = b"\xff\xd8\xff" + self.path.encode() * 50
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # a worker was killed meanwhile
                    return
                finally:
                    with host.lock:
                        host.in_flight -= 1

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hold.clear()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Setup:
    deployment: Deployment
    db: Database
    media: _MediaHost
    messages: int = 0


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if shutil.which("redis-server") is None:
        missing_service("redis-server", "the redis-server binary is not installed")
    if shutil.which("pgrep") is None:
        missing_service("pgrep", "needed to find the supervisor's children")
    redis_server = _Redis(tmp_path)
    redis_server.start()
    media = _MediaHost()
    deployment = create_deployment(tmp_path, Deadline(60)).with_settings(
        OPTMSG_REDIS__URL=f"redis://127.0.0.1:{redis_server.port}/0",
        OPTMSG_WORKER__PROCESSES=str(PROCESSES),
        OPTMSG_WORKER__THREADS="1",
        OPTMSG_BRIDGES__TWILIO__MEDIA_HOSTS='["127.0.0.1"]',
        OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_HTTP="true",
        OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_PRIVATE="true",
    )
    db = open_database(deployment.load_settings().database)
    upgrade(db)
    store.create_user(
        db, first_name="A", last_name="B", date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"), sms_number=E164(SMS_NUMBER),
    )  # fmt: skip
    try:
        yield Setup(deployment, db, media)
    finally:
        media.close()
        redis_server.kill()
        db.dispose()


def enqueue_mms(setup: Setup, count: int) -> None:
    """Store ``count`` MMS of one attachment each and enqueue their media jobs."""
    ids = []
    for _ in range(count):
        setup.messages += 1
        base = inbound(f"MM{setup.messages:032d}", to=SMS_NUMBER)
        url = f"http://127.0.0.1:{setup.media.port}/media/{setup.messages}"
        mms = Inbound(
            bridge=base.bridge, external_id=base.external_id, channel=Channel.MMS,
            sender=base.sender, recipient=base.recipient, text="picture",
            received_at=base.received_at,
            attachments=(InboundAttachment(content_type="image/jpeg", remote_url=url),),
        )  # fmt: skip
        (result,) = run_batch(setup.db, [mms])
        assert result.message_id is not None
        ids.append(result.message_id)
    settings = setup.deployment.load_settings()
    jobs = Jobs(settings, setup.db, DirectoryBlobStore(settings.storage.blob_dir))
    try:
        for message_id in ids:
            jobs.enqueue_media(message_id)
    finally:
        jobs.stop()


def wait_all_stored(setup: Setup, seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while True:
        with setup.db.read.connect() as conn:
            found = list(conn.execute(sa.select(attachments_t.c.status)).scalars())
        if len(found) == setup.messages and set(found) == {"stored"}:
            return
        assert time.monotonic() < give_up, f"media not all stored: {found}"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return sorted(int(p) for p in done.stdout.split())


def alive(pid: int) -> bool:
    """Running, not merely unreaped (an orphan's reaper may be slow to wait for it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Supervisor:
    """`optmsg worker` as started by an operator, with its output in files."""

    def __init__(self, deployment: Deployment, *extra: str) -> None:
        self.out = deployment.root / "worker.out"
        self.err = deployment.root / "worker.err"
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.process = subprocess.Popen(
                [str(OPTMSG), "worker", *extra], cwd=deployment.root, env=deployment.env,
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            )  # fmt: skip

    def running_lines(self) -> int:
        return self.out.read_text().count("optmsg: worker running")

    def wait_running(self, count: int, seconds: float = 40) -> list[int]:
        """Wait until ``count`` workers in all have said they run; the live children."""
        give_up = time.monotonic() + seconds
        while self.running_lines() < count:
            if self.process.poll() is not None:
                pytest.fail(f"optmsg worker exited early:\n{tail(self.err)}", pytrace=False)
            if time.monotonic() > give_up:
                pytest.fail(f"workers did not start:\n{tail(self.err)}", pytrace=False)
            time.sleep(0.1)
        return children(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, bounded; kills whatever is left so that no test leaves a process."""
        if self.process.poll() is None:
            left = children(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for pid in left:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def jobs_ok(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        match = JOBS_OK.search(reply.read().decode())
    return float(match.group(1)) if match else 0.0


def test_two_processes_consume_jobs_at_the_same_time(setup: Setup) -> None:
    port = free_port()
    while free_port() == port + 1:  # the second child serves on port + 1
        port = free_port()
    supervisor = Supervisor(setup.deployment, "--metrics", f"127.0.0.1:{port}")
    try:
        pids = supervisor.wait_running(PROCESSES)
        assert len(pids) == PROCESSES
        setup.media.hold.set()
        enqueue_mms(setup, 6)
        give_up = time.monotonic() + 20
        while setup.media.most_in_flight < PROCESSES and time.monotonic() < give_up:
            time.sleep(0.05)
        assert setup.media.most_in_flight == PROCESSES, "the two processes never both fetched"
        setup.media.hold.clear()
        wait_all_stored(setup, 30)
        give_up = time.monotonic() + 10
        while True:  # a job is counted just after its last commit
            counts = [jobs_ok(port), jobs_ok(port + 1)]
            if sum(counts) == 6 or time.monotonic() > give_up:
                break
            time.sleep(0.1)
        assert sum(counts) == 6
        assert all(count >= 1 for count in counts), counts
    finally:
        supervisor.stop()


def test_a_child_killed_with_sigkill_is_replaced_and_jobs_go_on(setup: Setup) -> None:
    supervisor = Supervisor(setup.deployment)
    try:
        victim, survivor = supervisor.wait_running(PROCESSES)
        os.kill(victim, signal.SIGKILL)
        give_up = time.monotonic() + 10
        while True:
            now = children(supervisor.process.pid)
            if len(now) == PROCESSES and victim not in now:
                break
            assert time.monotonic() < give_up, f"no replacement for {victim}: {now}"
            time.sleep(0.1)
        assert survivor in now
        supervisor.wait_running(PROCESSES + 1)
        enqueue_mms(setup, 4)
        wait_all_stored(setup, 30)
        assert "killed by SIGKILL" in supervisor.err.read_text()
    finally:
        supervisor.stop()


def test_sigterm_stops_every_child_and_the_supervisor_exits_zero(setup: Setup) -> None:
    supervisor = Supervisor(setup.deployment)
    try:
        pids = supervisor.wait_running(PROCESSES)
        started = time.monotonic()
        supervisor.process.send_signal(signal.SIGTERM)
        assert supervisor.process.wait(timeout=STOP_BOUND_S) == 0
        assert time.monotonic() - started < STOP_BOUND_S
        assert not [pid for pid in pids if alive(pid)]
    finally:
        supervisor.stop()


def test_children_that_cannot_start_end_the_supervisor_without_a_restart_loop(
    setup: Setup,
) -> None:
    # The supervisor never opens the database; its children fail on it at once.
    unreachable = f"postgresql+psycopg://optmsg@127.0.0.1:{free_port()}/optmsg"
    deployment = setup.deployment.with_settings(OPTMSG_DATABASE__URL=unreachable)
    supervisor = Supervisor(deployment)
    try:
        code = supervisor.process.wait(timeout=45)
        errors = supervisor.err.read_text()
        assert code == 1  # the children's own exit code (a database error)
        assert "failed 3 times in a row right after starting" in errors
        assert errors.count(" started (pid ") <= PROCESSES * 3
    finally:
        supervisor.stop()


def test_children_of_a_supervisor_killed_with_sigkill_stop_by_themselves(setup: Setup) -> None:
    supervisor = Supervisor(setup.deployment)
    pids: list[int] = []
    try:
        pids = supervisor.wait_running(PROCESSES)
        supervisor.process.kill()
        supervisor.process.wait(timeout=5)
        give_up = time.monotonic() + 30
        while [pid for pid in pids if alive(pid)]:
            assert time.monotonic() < give_up, "the orphaned workers kept running"
            time.sleep(0.1)
    finally:
        supervisor.stop()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
