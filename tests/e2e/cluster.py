"""A small OptMsg cluster under load and faults, for the chaos test and bench/chaos.py.

:class:`Cluster` runs N gateway processes (``optmsg serve --no-worker``, each on its
own HTTP and SMTP port) and M ``optmsg worker`` processes on one PostgreSQL database,
one blob directory and one private ``redis-server`` (no persistence, on a free port,
so that restarting it disturbs nothing else on the machine). All gateways share one
``http.public_url``, as they would behind a load balancer: providers sign for that
URL whichever process answers.

:func:`run_chaos` plays the providers and the operator's bad day at once. Signed
Twilio SMS and MMS webhooks (media on a local fake media host) and SMTP messages are
spread over the gateways, and each is resent until it is acknowledged, at the next
gateway after a failure, as Twilio (with connection overrides) and sending MTAs do.
At set points of progress it ``kill -9``s a gateway and a worker (each started again
after a pause) and restarts Redis. Once every message is acknowledged it waits
(bounded) until the database holds every one of them and every attachment is stored,
then reports what was lost, duplicated or left over, and how long after the last
fault the system was consistent again.

Nothing here imports pytest: a failure to run is a :class:`ClusterError`; what the
run found is a :class:`ChaosResult` for the caller to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
import shlex
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import redis
import sqlalchemy as sa
from aiohttp import web
from twilio.request_validator import RequestValidator

from config import Settings, load_settings
from inbox import store
from inbox.addresses import E164, parse_email
from inbox.blobs import DirectoryBlobStore
from inbox.db import open_database
from inbox.migrate import upgrade
from optin import trust
from tests.e2e.harness import (
    OPTMSG,
    environment_without_optmsg_settings,
    free_port,
    stop_process,
    tail,
)
from tests.fakes.media_server import MediaServer, media_bytes

log = logging.getLogger(__name__)

PUBLIC_URL = "https://gw.chaos.example"
SMS_PATH = "/bridges/twilio/sms"
SMS_NUMBER = "+14155550199"
TRUSTED_SENDER = "+14155550100"
RECIPIENT = "ada@optmsg.example"
EMAIL_SENDER = "bank@sender.example"
CLIENT_HELO = "mta.sender.example"
GATEWAY_READY = "optmsg: listening on http://"
WORKER_READY = "optmsg: worker running"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
SMTP_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.05
EMAILS_PER_CONNECTION = 10
POLL_S = 0.2

Kind = Literal["sms", "mms", "email"]
FaultKind = Literal["gateway", "worker", "redis"]


class ClusterError(Exception):
    """Raised when the cluster cannot be set up, or a process does not start, stop or
    answer as asked: the run is invalid, not merely failed."""


# --- processes --------------------------------------------------------------------------------


def tcp_ports(pid: int) -> set[int]:
    """The local ports of the IPv4 TCP sockets process ``pid`` has open (/proc)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:  # the process is gone
        return set()
    ports = set()
    for line in lines:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Managed:
    """One command run again and again (after a kill) with the same environment; start
    N writes its output to ``NAME-N.out`` / ``NAME-N.err`` under ``root``."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], root: Path, ready: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.root = root
        self.ready = ready
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ClusterError(f"{self.name} is not running")
        return self._process.pid

    def _log(self, suffix: str) -> Path:
        return self.root / f"{self.name}-{self.starts}.{suffix}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the command; return once it printed its ready line."""
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the command and return at once (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise ClusterError(f"{self.name} is already running")
        self.starts += 1
        with self._log("out").open("wb") as out, self._log("err").open("wb") as err:
            self._process = subprocess.Popen(
                self.argv, cwd=self.root, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if self._process is None:
            raise ClusterError(f"{self.name} was not launched")
        give_up = time.monotonic() + timeout_s
        while self.ready not in self._log("out").read_text(encoding="utf-8", errors="replace"):
            code = self._process.poll()
            if code is not None or time.monotonic() > give_up:
                self.stop()
                raise ClusterError(
                    f"{self.name} (start #{self.starts}: {shlex.join(self.argv)}) "
                    f"{'exited with ' + str(code) if code is not None else 'did not get ready'}"
                    f"; stderr:\n{self.stderr_tail()}"
                )
            time.sleep(0.05)

    def kill_hard(self) -> None:
        """``kill -9``: no cleanup of any kind runs in the process."""
        if self._process is None:
            raise ClusterError(f"{self.name} is not running")
        process, self._process = self._process, None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL if it lingers; nothing if not running."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT_S)

    def stderr_tail(self, lines: int = 30) -> str:
        return tail(self._log("err"), lines)


class PrivateRedis:
    """A ``redis-server`` of our own on a free port, keeping nothing on disk (so a
    restart loses every queued job, like a broker that crashed)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        try:
            give_up = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > give_up or self._process.poll() is not None:
                        raise ClusterError(
                            f"redis-server did not start on port {self.port}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT_S)
            self._process = None


def create_pg_database(admin_url: str, prefix: str = "chaos_") -> str:
    """CREATE DATABASE PREFIX<random> on the server of ``admin_url``; returns its URL."""
    name = prefix + secrets.token_hex(6)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        raise ClusterError(f"PostgreSQL: cannot create a database: {exc.orig}") from exc
    finally:
        admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# --- the cluster ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    account_sid: str
    auth_token: str


class Cluster:
    """Gateways and workers on one database, Redis and blob directory (see module doc).
    ``settings`` adds ``OPTMSG_*`` variables for every process."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        *,
        gateways: int = 2,
        workers: int = 2,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.redis = PrivateRedis(root)
        self.blob_dir = root / "blobs"
        config = root / "optmsg.toml"
        self.env: dict[str, str] = environment_without_optmsg_settings() | {
            "OPTMSG_CONFIG": str(config),
            "OPTMSG_DATABASE__URL": database_url,
            "OPTMSG_REDIS__URL": self.redis.url,
            "OPTMSG_STORAGE__BLOB_DIR": str(self.blob_dir),
            "OPTMSG_HTTP__PUBLIC_URL": PUBLIC_URL,
            "OPTMSG_SMTP__HOSTNAME": "mx.optmsg.example",
            # sender.example publishes nothing; should there be no resolver at all, a
            # lookup costs at most this.
            "OPTMSG_SMTP__DNS_TIMEOUT_S": "0.5",
            # The fake media host: plain http on 127.0.0.1.
            "OPTMSG_BRIDGES__TWILIO__MEDIA_HOSTS": '["127.0.0.1"]',
            "OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_HTTP": "true",
            "OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_PRIVATE": "true",
            "OPTMSG_LOG__LEVEL": "warning",
        }
        self.env |= dict(settings or {})
        self.gateways: list[Managed] = []
        self.http_urls: list[str] = []
        self.smtp_addresses: list[tuple[str, int]] = []
        for n in range(gateways):
            http, smtp = f"127.0.0.1:{free_port()}", ("127.0.0.1", free_port())
            env = self.env | {
                "OPTMSG_HTTP__LISTEN": http,
                "OPTMSG_SMTP__LISTEN": f"{smtp[0]}:{smtp[1]}",
            }
            argv = [str(OPTMSG), "serve", "--no-worker"]
            self.gateways.append(Managed(f"gateway{n}", argv, env, root, GATEWAY_READY))
            self.http_urls.append(f"http://{http}{SMS_PATH}")
            self.smtp_addresses.append(smtp)
        self.workers = [
            Managed(f"worker{n}", [str(OPTMSG), "worker"], self.env, root, WORKER_READY)
            for n in range(workers)
        ]
        self.user_id = ""
        self.credentials = Credentials("", "")

    def cli(self, *args: str) -> Any:
        argv = [str(OPTMSG), *args, "--json"]
        try:
            done = subprocess.run(
                argv, cwd=self.root, env=self.env, capture_output=True, text=True,
                timeout=CLI_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"`{shlex.join(argv)}` did not finish") from exc
        if done.returncode != 0:
            raise ClusterError(f"`{shlex.join(argv)}` exited {done.returncode}: {done.stderr}")
        return json.loads(done.stdout)

    def set_up(self) -> None:
        """Config, Redis, schema, one user with an SMS number and an email address who
        opted in the SMS and the email sender (in this process: each ``optmsg`` command
        would cost a second or more of start-up)."""
        self.cli("dev", "init", "--path", self.env["OPTMSG_CONFIG"])
        self.redis.start()
        settings = self.settings()
        db = open_database(settings.database)
        try:
            # Once, before any gateway starts: they then find the schema at head.
            upgrade(db)
            user = store.create_user(
                db, first_name="Ada", last_name="L", date_of_birth=date(1990, 1, 1),
                phone=E164("+442079460958"), sms_number=E164(SMS_NUMBER),
                email_address=parse_email(RECIPIENT),
            )  # fmt: skip
            trust.add(db, user.id, E164(TRUSTED_SENDER))
            trust.add(db, user.id, parse_email(EMAIL_SENDER))
        finally:
            db.dispose()
        self.user_id = user.id
        twilio = settings.bridges.twilio
        self.credentials = Credentials(twilio.account_sid, twilio.auth_token.get_secret_value())

    def settings(self) -> Settings:
        """The settings as the cluster's processes see them (the file plus their env)."""
        saved = dict(os.environ)
        try:
            for name in [n for n in os.environ if n.startswith("OPTMSG_")]:
                del os.environ[name]
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("OPTMSG_")})
            return load_settings(self.env["OPTMSG_CONFIG"])
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start(self) -> None:
        """Start every gateway and worker at once; return when all are ready."""
        processes = [*self.gateways, *self.workers]
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready()

    def stop(self) -> None:
        for process in [*self.gateways, *self.workers]:
            process.stop()
        self.redis.kill()

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url, pool_size=1, max_overflow=0)


# --- what the providers send ------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    sms: int
    mms: int
    media_per_mms: int
    emails: int

    @property
    def total(self) -> int:
        return self.sms + self.mms + self.emails


@dataclass(frozen=True)
class Webhook:
    kind: Kind
    key: str  # the MessageSid
    body: str
    headers: dict[str, str]
    media: tuple[int, ...]  # the fake host's /media/N numbers


@dataclass(frozen=True)
class Email:
    key: str  # the Message-ID
    subject: str
    data: bytes


def build_webhooks(
    scale: Scale, credentials: Credentials, media_port: int, run: str
) -> list[Webhook]:
    """Signed inbound SMS and MMS webhooks from the trusted sender, interleaved (an MMS
    every ``sms // mms`` SMS), signed by the twilio package for the shared public URL."""
    validator = RequestValidator(credentials.auth_token)
    url = PUBLIC_URL + SMS_PATH
    sms = [(f"SM{run}{i:024x}", ()) for i in range(scale.sms)]
    mms = [
        (
            f"MM{run}{i:024x}",
            tuple(range(i * scale.media_per_mms, (i + 1) * scale.media_per_mms)),
        )
        for i in range(scale.mms)
    ]
    every = max(1, len(sms) // max(1, len(mms)))
    ordered: list[tuple[str, tuple[int, ...]]] = []
    while sms or mms:
        ordered.extend(sms[:every])
        del sms[:every]
        if mms:
            ordered.append(mms.pop(0))
    webhooks = []
    for sid, media in ordered:
        params = {
            "ToCountry": "US", "SmsMessageSid": sid, "SmsSid": sid, "MessageSid": sid,
            "SmsStatus": "received", "Body": f"chaos {sid}", "To": SMS_NUMBER,
            "NumSegments": "1", "AccountSid": credentials.account_sid,
            "From": TRUSTED_SENDER, "ApiVersion": "2010-04-01", "NumMedia": str(len(media)),
        }  # fmt: skip
        for k, n in enumerate(media):
            params[f"MediaUrl{k}"] = f"http://127.0.0.1:{media_port}/media/{n}"
            params[f"MediaContentType{k}"] = "image/jpeg"
        headers = {
            "X-Twilio-Signature": validator.compute_signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        kind: Kind = "mms" if media else "sms"
        webhooks.append(Webhook(kind, sid, urlencode(params), headers, media))
    return webhooks


def build_emails(count: int, run: str) -> list[Email]:
    """Distinct ~2 KB text/plain emails, CRLF line endings, a Message-ID and a subject
    each (the subject names the email in the messages table)."""
    emails = []
    for n in range(count):
        message_id = f"<chaos-{run}-{n}@sender.example>"
        subject = f"chaos {run} {n}"
        head = (
            f"From: Bank <{EMAIL_SENDER}>\r\nTo: Ada <{RECIPIENT}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: {message_id}\r\n"
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="us-ascii"\r\n\r\n'
        )
        body = "".join(f"Statement line {i:03d} of email {n}.\r\n" for i in range(50))
        emails.append(Email(message_id, subject, (head + body).encode("ascii")))
    return emails


# --- the ledger of what was acknowledged ------------------------------------------------------


@dataclass
class Ledger:
    """What the clients saw; shared by the asyncio clients and the SMTP threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[Kind, set[str]] = field(
        default_factory=lambda: {"sms": set(), "mms": set(), "email": set()}
    )
    failed_attempts: Counter[Kind] = field(default_factory=Counter)
    refused: dict[str, str] = field(default_factory=dict)  # 4xx/5xx that ended a message

    def ack(self, kind: Kind, key: str) -> None:
        with self.lock:
            self.acknowledged[kind].add(key)

    def fail(self, kind: Kind) -> None:
        with self.lock:
            self.failed_attempts[kind] += 1

    def refuse(self, key: str, why: str) -> None:
        with self.lock:
            self.refused[key] = why

    def count(self) -> int:
        with self.lock:
            return sum(len(keys) for keys in self.acknowledged.values()) + len(self.refused)


async def post_until_acknowledged(
    session: aiohttp.ClientSession, urls: list[str], first: int, webhook: Webhook, ledger: Ledger
) -> None:
    """POST one webhook until a gateway answers 200, moving to the next gateway after a
    connection failure, a timeout or a 5xx. A 4xx ends it as refused (Twilio would
    not retry it either, and none is expected here)."""
    attempt = first
    while True:
        url = urls[attempt % len(urls)]
        try:
            async with session.post(url, data=webhook.body, headers=webhook.headers) as resp:
                text = await resp.text()
                if resp.status == 200:
                    ledger.ack(webhook.kind, webhook.key)
                    return
                if resp.status < 500:
                    ledger.refuse(webhook.key, f"HTTP {resp.status}: {text[:200]}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The gateway is down or did not answer in time: not acknowledged, so
            # resent to the next gateway, as Twilio's connection retries would.
            log.debug("webhook %s not acknowledged yet: %r", webhook.key, exc)
        ledger.fail(webhook.kind)
        attempt += 1
        await asyncio.sleep(RETRY_PAUSE_S)


async def send_webhooks(
    urls: list[str], webhooks: list[Webhook], ledger: Ledger, connections: int
) -> None:
    queue = deque(webhooks)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def client(n: int) -> None:
        connector = aiohttp.TCPConnector(limit=len(urls))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while queue:
                # Round-robin over the gateways: client n, k-th message -> gateway n + k.
                await post_until_acknowledged(session, urls, n, queue.popleft(), ledger)
                n += 1

    async with asyncio.TaskGroup() as tasks:
        for n in range(connections):
            tasks.create_task(client(n))


class _Refused(Exception):
    """A 5xx reply to MAIL, RCPT or DATA."""


def _transact(connection: smtplib.SMTP, email: Email) -> int:
    reply: bytes | str
    code, reply = connection.mail(EMAIL_SENDER)
    if code == 250:
        code, reply = connection.rcpt(RECIPIENT)
    if code == 250:
        try:
            code, reply = connection.data(email.data)
        except smtplib.SMTPDataError as exc:
            code, reply = exc.smtp_code, exc.smtp_error
    if code >= 500:
        raise _Refused(f"{code} {reply!r}")
    return int(code)


def _smtp_client(
    addresses: list[tuple[str, int]],
    first: int,
    queue: deque[Email],
    ledger: Ledger,
    stop: threading.Event,
) -> None:
    """One sending MTA: each email until ``250`` (a 4xx, an error or a lost connection
    makes it try again on a new connection to the next gateway). It also moves to the
    next gateway every ``EMAILS_PER_CONNECTION`` emails, as MTAs spread deliveries
    over a domain's MX hosts, so that every gateway keeps SMTP clients."""
    current, connection, sent = first, None, 0
    try:
        while not stop.is_set():
            try:
                email = queue.popleft()
            except IndexError:
                return
            if connection is not None and sent and sent % EMAILS_PER_CONNECTION == 0:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    connection.quit()
                connection.close()
                connection, current = None, current + 1
            sent += 1
            while not stop.is_set():
                try:
                    if connection is None:
                        host, port = addresses[current % len(addresses)]
                        connection = smtplib.SMTP(
                            host, port, local_hostname=CLIENT_HELO, timeout=SMTP_TIMEOUT_S
                        )
                        connection.ehlo()
                    if _transact(connection, email) == 250:
                        ledger.ack("email", email.key)
                        break
                except _Refused as exc:
                    ledger.refuse(email.key, str(exc))
                    break
                except (smtplib.SMTPException, OSError) as exc:
                    # A 4xx, a dropped connection or a killed gateway: an MTA queues
                    # the message and tries again, here at the next gateway.
                    log.debug("email %s not acknowledged yet: %s", email.key, exc)
                ledger.fail("email")
                if connection is not None:
                    connection.close()
                connection, current = None, current + 1
                stop.wait(RETRY_PAUSE_S)
    finally:
        if connection is not None:
            connection.close()


def send_emails(
    addresses: list[tuple[str, int]],
    emails: list[Email],
    ledger: Ledger,
    clients: int,
    stop: threading.Event,
) -> None:
    queue = deque(emails)
    with ThreadPoolExecutor(clients, thread_name_prefix="smtp-client") as pool:
        for future in [
            pool.submit(_smtp_client, addresses, n, queue, ledger, stop) for n in range(clients)
        ]:
            future.result()


class SlowMediaHost(MediaServer):
    """The fake media host, answering ``/media/N`` only after ``delay_s`` (a real CDN
    takes a while), so that a killed worker dies with fetches in hand; ``in_flight``
    counts the requests being answered."""

    def __init__(self, delay_s: float) -> None:
        super().__init__("127.0.0.1")
        self.delay_s = delay_s
        self.clients: Counter[int] = Counter()  # client port -> requests being answered

    @property
    def in_flight(self) -> int:
        return sum(self.clients.values())

    async def _numbered(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        self.clients[port] += 1
        try:
            await asyncio.sleep(self.delay_s)
            return await super()._numbered(request)
        finally:
            self.clients[port] -= 1
            if not self.clients[port]:
                del self.clients[port]


# --- faults -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    after_fraction: float  # of all messages acknowledged
    pause_s: float = 1.0  # down this long before the restart


@dataclass(frozen=True)
class FaultRecord:
    kind: FaultKind
    target: str  # the process (or "redis")
    injected_at: float  # monotonic
    back_at: float
    # Media fetches in hand when the fault struck: the killed worker's own (it dies
    # with those jobs unacknowledged), else all the fake host was answering.
    fetches_in_flight: int
    acknowledged_before: int


DEFAULT_FAULTS = (
    Fault("gateway", 0.1),
    Fault("worker", 0.3),
    Fault("redis", 0.5, pause_s=0.5),
)


async def inject_fault(
    cluster: Cluster, media: SlowMediaHost, fault: Fault, ledger: Ledger, total: int
) -> FaultRecord:
    while ledger.count() < fault.after_fraction * total:
        await asyncio.sleep(0.005)
    victim, in_hand = 0, media.in_flight
    if fault.kind == "worker":
        # The worker with a fetch in hand, if one is fetching within 2 s.
        give_up = time.monotonic() + 2.0
        in_hand = 0
        while not in_hand and time.monotonic() < give_up:
            for n, worker in enumerate(cluster.workers):
                ports = tcp_ports(worker.pid) if worker.running else set()
                in_hand = sum(media.clients.get(port, 0) for port in ports)
                if in_hand:
                    victim = n
                    break
            else:
                await asyncio.sleep(0.005)
    before = ledger.count()
    injected = time.monotonic()
    target = "redis"
    if fault.kind == "redis":
        await asyncio.to_thread(cluster.redis.kill)
        await asyncio.sleep(fault.pause_s)
        await asyncio.to_thread(cluster.redis.start)
    else:
        process = cluster.gateways[0] if fault.kind == "gateway" else cluster.workers[victim]
        target = process.name
        await asyncio.to_thread(process.kill_hard)
        await asyncio.sleep(fault.pause_s)
        await asyncio.to_thread(process.start)
    return FaultRecord(
        kind=fault.kind,
        target=target,
        injected_at=injected,
        back_at=time.monotonic(),
        acknowledged_before=before,
        fetches_in_flight=in_hand,
    )


async def inject_faults(
    cluster: Cluster, media: SlowMediaHost, faults: Iterable[Fault], ledger: Ledger, total: int
) -> list[FaultRecord]:
    """Each fault at its own point of progress, independently: a later one may strike
    while an earlier one's process is still down or starting."""
    return list(
        await asyncio.gather(*(inject_fault(cluster, media, f, ledger, total) for f in faults))
    )


# --- reading back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredState:
    twilio: Counter[str]  # MessageSid -> rows
    email: Counter[str]  # subject -> rows
    raw_pending: int
    # (MessageSid, media URL, status, sha256) per attachment row of a twilio message
    attachments: list[tuple[str, str, str, str | None]]

    @property
    def media_pending(self) -> int:
        return sum(1 for _, _, status, _ in self.attachments if status == "pending")


def read_state(engine: sa.Engine) -> StoredState:
    with engine.connect() as conn:
        twilio: Counter[str] = Counter(
            dict(
                conn.execute(
                    sa.text(
                        "SELECT external_id, count(*) FROM messages WHERE bridge = 'twilio' "
                        "GROUP BY external_id"
                    )
                ).all()
            )
        )
        email: Counter[str] = Counter(
            dict(
                conn.execute(
                    sa.text(
                        "SELECT subject, count(*) FROM messages WHERE bridge = 'email' "
                        "GROUP BY subject"
                    )
                ).all()
            )
        )
        raw_pending = conn.execute(
            sa.text("SELECT count(*) FROM raw_messages WHERE state = 'pending'")
        ).scalar_one()
        attachments = [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute(
                sa.text(
                    "SELECT m.external_id, a.remote_url, a.status, a.sha256 FROM attachments a "
                    "JOIN messages m ON m.id = a.message_id WHERE m.bridge = 'twilio'"
                )
            )
        ]
    return StoredState(twilio, email, int(raw_pending), attachments)


@dataclass(frozen=True)
class Verdict:
    lost: dict[Kind, list[str]]
    duplicated: dict[str, int]
    unexpected: list[str]
    attachment_problems: list[str]

    @property
    def clean(self) -> bool:
        return not (
            any(self.lost.values())
            or self.duplicated
            or self.unexpected
            or self.attachment_problems
        )


@functools.cache
def _media_digest(n: int) -> str:
    return hashlib.sha256(media_bytes(n)).hexdigest()


def judge(
    state: StoredState,
    ledger: Ledger,
    webhooks: list[Webhook],
    emails: list[Email],
    blobs: DirectoryBlobStore,
    media_port: int,
    *,
    read_blobs: bool = False,
) -> Verdict:
    """What the stored state says about the run; ``read_blobs`` also reads every
    attachment's blob back and checks its bytes against its digest."""
    subject_of = {e.key: e.subject for e in emails}
    present: dict[Kind, set[str]] = {
        "sms": set(state.twilio),
        "mms": set(state.twilio),
        "email": {key for key, subject in subject_of.items() if state.email[subject]},
    }
    with ledger.lock:
        lost = {kind: sorted(ledger.acknowledged[kind] - present[kind]) for kind in present}
    duplicated = {k: n for k, n in state.twilio.items() if n > 1}
    duplicated |= {k: n for k, n in state.email.items() if n > 1}
    sent = {w.key for w in webhooks} | {e.subject for e in emails}
    unexpected = sorted((set(state.twilio) | set(state.email)) - sent)
    problems: list[str] = []
    rows: dict[str, list[tuple[str, str, str | None]]] = {}
    for sid, url, status, digest in state.attachments:
        rows.setdefault(sid, []).append((url, status, digest))
    for webhook in webhooks:
        if webhook.key not in state.twilio:
            continue
        expected = {
            f"http://127.0.0.1:{media_port}/media/{n}": _media_digest(n) for n in webhook.media
        }
        found = rows.get(webhook.key, [])
        urls = Counter(url for url, _, _ in found)
        if sorted(urls) != sorted(expected) or any(n > 1 for n in urls.values()):
            problems.append(f"{webhook.key}: attachment rows {dict(urls)}")
            continue
        for url, status, digest in found:
            if status != "stored":
                problems.append(f"{webhook.key}: {url} is {status}")
            elif digest != expected[url]:
                problems.append(f"{webhook.key}: {url} stored with another digest")
            elif not blobs.exists(digest):
                problems.append(f"{webhook.key}: blob {digest} missing")
            elif read_blobs and hashlib.sha256(blobs.get(digest)).hexdigest() != digest:
                problems.append(f"{webhook.key}: blob {digest} holds other bytes")
    return Verdict(lost, duplicated, unexpected, problems)


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosResult:
    scale: Scale
    gateways: int
    workers: int
    ledger: Ledger
    faults: list[FaultRecord]
    verdict: Verdict
    state: StoredState
    load_seconds: float  # first message sent -> every message acknowledged
    consistent: bool  # every acknowledged message and attachment stored in time
    recovery_seconds: float  # last fault injected -> consistent (or gave up)
    after_load_seconds: float  # every message acknowledged -> consistent (or gave up)
    media_requests: int
    blob_temp_files: int

    @property
    def acknowledged(self) -> int:
        return sum(len(keys) for keys in self.ledger.acknowledged.values())

    def summary(self) -> str:
        lost = {kind: len(keys) for kind, keys in self.verdict.lost.items()}
        faults = ", ".join(
            f"{f.target} at {f.acknowledged_before} acknowledged, {f.fetches_in_flight} "
            f"fetches in flight (back after {f.back_at - f.injected_at:.1f} s)"
            for f in self.faults
        )
        return (
            f"{self.acknowledged:,} of {self.scale.total:,} acknowledged in "
            f"{self.load_seconds:.1f} s ({self.acknowledged / self.load_seconds:,.0f} msg/s); "
            f"failed attempts {dict(self.ledger.failed_attempts)}; refused "
            f"{len(self.ledger.refused)}; faults: {faults}; lost {lost}; duplicated "
            f"{len(self.verdict.duplicated)}; unexpected {len(self.verdict.unexpected)}; "
            f"attachment problems {len(self.verdict.attachment_problems)}; media fetched "
            f"{self.media_requests} times for {self.scale.mms * self.scale.media_per_mms} "
            f"media; {self.blob_temp_files} blob temp files left; consistent "
            f"{self.consistent} {self.recovery_seconds:.1f} s after the last fault "
            f"({self.after_load_seconds:.1f} s after the last acknowledgement)"
        )


async def run_chaos(
    cluster: Cluster,
    scale: Scale,
    *,
    faults: Iterable[Fault] = DEFAULT_FAULTS,
    connections: int = 20,
    smtp_clients: int = 8,
    media_delay_s: float = 0.2,
    load_timeout_s: float = 60.0,
    settle_timeout_s: float = 60.0,
) -> ChaosResult:
    """Send everything through the running cluster while injecting ``faults``, then
    wait (at most ``settle_timeout_s``) until it is all stored; see the module doc."""
    run = secrets.token_hex(4)
    ledger = Ledger()
    stop = threading.Event()
    engine = cluster.engine()
    try:
        async with SlowMediaHost(media_delay_s) as media:
            webhooks = build_webhooks(scale, cluster.credentials, media.port, run)
            emails = build_emails(scale.emails, run)
            began = time.monotonic()
            try:
                async with asyncio.timeout(load_timeout_s), asyncio.TaskGroup() as tasks:
                    fault_task = tasks.create_task(
                        inject_faults(cluster, media, faults, ledger, scale.total)
                    )
                    tasks.create_task(
                        send_webhooks(cluster.http_urls, webhooks, ledger, connections)
                    )
                    tasks.create_task(
                        asyncio.to_thread(
                            send_emails, cluster.smtp_addresses, emails, ledger, smtp_clients, stop
                        )
                    )
            except ExceptionGroup as group:  # a fault that could not be injected, a bug here
                raise group.exceptions[0] from group
            except TimeoutError:
                raise ClusterError(
                    f"only {ledger.count():,} of {scale.total:,} messages were acknowledged "
                    f"within {load_timeout_s:.0f} s; failed attempts "
                    f"{dict(ledger.failed_attempts)}; gateway0 stderr:\n"
                    f"{cluster.gateways[0].stderr_tail()}"
                ) from None
            finally:
                stop.set()
            loaded = time.monotonic()
            records = fault_task.result()
            expected_media = scale.mms * scale.media_per_mms
            give_up = loaded + settle_timeout_s
            while True:
                state = await asyncio.to_thread(read_state, engine)
                verdict = judge(
                    state,
                    ledger,
                    webhooks,
                    emails,
                    DirectoryBlobStore(cluster.blob_dir),
                    media.port,
                )
                stored = sum(1 for a in state.attachments if a[2] == "stored")
                done = (
                    not any(verdict.lost.values())
                    and state.raw_pending == 0
                    and state.media_pending == 0
                    and stored >= expected_media
                )
                if done or time.monotonic() > give_up:
                    break
                await asyncio.sleep(POLL_S)
            settled = time.monotonic()
            requests = len(media.requests)
            verdict = judge(
                state, ledger, webhooks, emails, DirectoryBlobStore(cluster.blob_dir), media.port,
                read_blobs=True,
            )  # fmt: skip
    finally:
        engine.dispose()
    last_fault = max((r.injected_at for r in records), default=loaded)
    return ChaosResult(
        scale=scale,
        gateways=len(cluster.gateways),
        workers=len(cluster.workers),
        ledger=ledger,
        faults=records,
        verdict=verdict,
        state=state,
        load_seconds=loaded - began,
        consistent=done,
        recovery_seconds=settled - last_fault,
        after_load_seconds=settled - loaded,
        media_requests=requests,
        # A blob write cut short by kill -9 leaves its temporary file behind.
        blob_temp_files=sum(1 for _ in cluster.blob_dir.glob("*/*/.tmp-*")),
    )
