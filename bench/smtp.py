"""Email bridge throughput: ``optmsg serve``'s SMTP server against a bare aiosmtpd sink.

One invocation, for each of two cases (5-10 KB text+HTML messages; a 200 KB
attachment), loads (a) bench/smtp_sink.py and (b) ``optmsg serve`` (SQLite in a temp
dir) over 8 connections with

- a Python client (this file): unique, pre-built messages, no pipelining, timing each
  message from writing the final ``.CRLF`` of DATA to reading its reply, and
- smtp-source (Postfix's load generator), as a cross-check of the msg/s figures with
  a client in C; it repeats one message (``-F``), so the gateway stores it once.

For (b) it then measures how fast the accepted mail is parsed, authenticated,
decided and visible: from the first message sent until the raw spool has no
pending row and ``messages`` holds one row per message sent. It checks that every
250 left a raw row (and, for the sink, that it counted every message), prints a
table, appends a dated section to docs/benchmarks.md and writes the raw figures to
bench/results/. Targets: accepted msg/s of (b) >= 60% of (a)'s; parsed, decided and
visible >= 500 msg/s sustained; p99 from end of DATA to 250 is reported. Exit
status 1 when a run is invalid (a non-250 reply, a lost message, a count off); with
--strict also 3 when a target is missed. --profile samples (b) with py-spy during its
measured Python run and prints the hotspots (the figures then include py-spy's cost).

Usage: .venv/bin/python bench/smtp.py [--messages 5000] [--attachment-messages 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.utils
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fakes

from webhook import (
    BUSY_CORES,
    OPTMSG,
    RESULTS,
    ROOT,
    BenchError,
    children_cpu,
    command,
    free_port,
    gateway_env,
    machine_cpu,
    process_cpu,
    publish,
    run,
    server,
    start_py_spy,
    tail,
    verdict,
)

from tests.fakes.dns_server import FakeDnsServer

BENCH = Path(__file__).resolve().parent
RECIPIENT = "ada@optmsg.example"
TRUSTED = ("Bob Sender", "bob@sender.example")
STRANGER = ("Eve Stranger", "eve@stranger.example")
CLIENT_HELO = "loadgen.bench.example"
ATTACHMENT_BYTES = 200 * 1024
TARGET_RATIO = 0.60
TARGET_PROCESSED = 500.0  # msg/s parsed, decided and visible
REPLY_TIMEOUT_S = 60.0  # one SMTP reply; a server that stalls longer fails the run
POLL_S = 0.02  # how often the spool and the messages table are counted
PYSPY_FALLBACK = Path("/tmp/pyspy-venv/bin/py-spy")
INSTALL_HINT = (
    "smtp.py: smtp-source is not installed. It comes with Postfix: on Debian/Ubuntu run\n"
    "  sudo apt-get install -y postfix   (choose 'No configuration' to keep no mail server\n"
    "  running; non-interactively: echo 'postfix postfix/main_mailer_type select No\n"
    "  configuration' | sudo debconf-set-selections first)\n"
    "then run `make bench` again."
)
_WORDS = (
    "the", "quarterly", "report", "meeting", "agenda", "invoice", "shipment", "customer",
    "account", "update", "please", "review", "attached", "schedule", "project", "budget",
    "team", "thanks", "regards", "tomorrow", "morning", "office", "delivery", "address",
    "order", "confirmation", "payment", "received", "balance", "statement", "summary", "notes",
    "draft", "final", "version", "approval", "request", "changes", "deadline", "friday",
    "monday", "client", "proposal", "contract", "renewal", "support", "ticket", "status",
    "resolved", "pending", "travel", "itinerary", "hotel", "flight",
)  # fmt: skip


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str  # short name in files and JSON
    title: str
    messages: int  # measured, per client and server
    warmup: int
    attachment_bytes: int  # 0: none
    # Size of the message without the attachment, on the wire (CRLF, dot-stuffed).
    min_bytes: int = 5_000
    max_bytes: int = 10_000


@dataclass(frozen=True)
class Mail:
    mail_from: str
    data: bytes  # CRLF line endings, dot-stuffed, ending with CRLF (".CRLF" not included)


def _paragraph(rng: random.Random, chars: int) -> list[str]:
    """Lines of at most 72 characters of plain words, about ``chars`` in all."""
    lines: list[str] = []
    line: list[str] = []
    width = total = 0
    while total < chars:
        word = rng.choice(_WORDS)
        if width + len(word) + 1 > 72:
            lines.append(" ".join(line))
            line, width = [], 0
        line.append(word)
        width += len(word) + 1
        total += len(word) + 1
    if line:
        lines.append(" ".join(line))
    return lines


def _text_part(rng: random.Random, chars: int) -> list[str]:
    lines = ["Hello Ada,", ""]
    while chars > 0:
        size = min(chars, rng.randint(300, 700))
        lines += [*_paragraph(rng, size), ""]
        chars -= size
    return [*lines, "Regards,", "Bob"]


def _html_part(rng: random.Random, chars: int) -> list[str]:
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Update</title></head>',
        '<body style="font-family: Arial, sans-serif; font-size: 14px">',
        "<p>Hello <b>Ada</b>,</p>",
    ]
    while chars > 0:
        size = min(chars, rng.randint(300, 700))
        words = _paragraph(rng, size)
        words[0] = f'<p style="margin: 0 0 12px 0">{words[0]}'
        words[-1] = f'{words[-1]} <a href="https://sender.example/r/{rng.randrange(10**6)}">' + (
            "details</a></p>"
        )
        lines += words
        chars -= size
    return [*lines, "<p>Regards,<br>Bob</p>", "</body></html>"]


def _alternative(rng: random.Random, boundary: str, chars: int) -> list[str]:
    """A multipart/alternative entity (headers included): text, then the same kind
    of content as HTML (as mail clients send it), about ``chars`` characters of text."""
    return [
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        *_text_part(rng, chars * 2 // 5),
        f"--{boundary}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        *_html_part(rng, chars * 3 // 5),
        f"--{boundary}--",
    ]


def build_message(case: Case, run_tag: str, index: int, rng: random.Random) -> bytes:
    """One message as a sender's MTA would relay it: CRLF, not dot-stuffed."""
    name, address = TRUSTED if index % 2 == 0 else STRANGER
    domain = address.split("@", 1)[1]
    outer = f"=_outer_{run_tag}_{index}"
    alt = f"=_alt_{run_tag}_{index}"
    head = [
        f"Received: from mail.{domain} (mail.{domain} [192.0.2.{index % 250 + 1}])",
        f"\tby mx.{domain} with ESMTPS id {run_tag}{index:06d}",
        f"\tfor <{RECIPIENT}>; {email.utils.formatdate(usegmt=True)}",
        f"From: {name} <{address}>",
        f"To: Ada <{RECIPIENT}>",
        f"Subject: {case.title} #{index}: {' '.join(rng.choice(_WORDS) for _ in range(5))}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Message-ID: <{run_tag}.{index}@{domain}>",
        "MIME-Version: 1.0",
    ]
    # Sized so that the message without the attachment lands in [min_bytes, max_bytes]:
    # a first guess at the text, then corrected by what it came to.
    target = rng.randint(case.min_bytes, case.max_bytes)
    head_bytes = sum(len(line) + 2 for line in head)
    budget = target - head_bytes - 600
    for _ in range(5):
        body = _alternative(rng, alt, budget)
        size = head_bytes + sum(len(line) + 2 for line in body)
        if case.min_bytes <= size <= case.max_bytes:
            break
        budget += target - size
    if case.attachment_bytes:
        payload = base64.encodebytes(rng.randbytes(case.attachment_bytes)).decode("ascii")
        lines = [
            f'Content-Type: multipart/mixed; boundary="{outer}"',
            "",
            f"--{outer}",
            *body,
            f"--{outer}",
            f'Content-Type: application/pdf; name="report-{index}.pdf"',
            f'Content-Disposition: attachment; filename="report-{index}.pdf"',
            "Content-Transfer-Encoding: base64",
            "",
            *payload.splitlines(),
            f"--{outer}--",
        ]
    else:
        lines = body
    return ("\r\n".join([*head, *lines]) + "\r\n").encode("ascii")


def dot_stuff(data: bytes) -> bytes:
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def build_mails(case: Case, run_tag: str, count: int, seed: int) -> list[Mail]:
    rng = random.Random(seed)  # reproducible content; the tag keeps Message-IDs unique
    mails = []
    for i in range(count):
        data = build_message(case, run_tag, i, rng)
        sender = TRUSTED[1] if i % 2 == 0 else STRANGER[1]
        mails.append(Mail(sender, dot_stuff(data)))
    return mails


# --- the Python load generator --------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    client: str  # "python" | "smtp-source"
    messages: int  # answered 250 after DATA
    seconds: float
    msg_per_s: float
    mean_bytes: int
    p50_ms: float | None = None  # end of DATA -> reply, Python client only
    p99_ms: float | None = None
    max_ms: float | None = None
    truncated: bool = False  # the time bound stopped the run before all were sent
    # CPU used during the run, in cores: the server, the client, everything else.
    cpu: dict[str, float] = field(default_factory=dict)


class _Run:
    """Shared state of one Python load run (one event loop, no locks needed)."""

    def __init__(self, mails: Sequence[Mail], deadline: float) -> None:
        self.mails = mails
        self.next = iter(range(len(mails)))
        self.deadline = deadline
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.truncated = False
        self.first_sent = 0.0
        self.last_ok = 0.0


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines: list[bytes] = []
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT_S)
        if not line.endswith(b"\n"):
            raise BenchError(f"connection closed mid-reply: {b''.join(lines) + line!r}")
        lines.append(line)
        if line[3:4] != b"-":
            text = b"".join(lines).decode("utf-8", "replace").strip()
            return int(line[:3]), text


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, expect: int
) -> None:
    writer.write(line.encode("ascii") + b"\r\n")
    code, text = await _reply(reader)
    if code != expect:
        raise BenchError(f"{line!r} answered {text!r}")


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    # No user-space write buffer: drain() returns once the kernel has every byte, so
    # the clock starts when the end-of-data sequence itself is handed to the kernel.
    writer.transport.set_write_buffer_limits(high=0)
    code, text = await _reply(reader)
    if code != 220:
        raise BenchError(f"greeting {text!r}")
    await _command(reader, writer, f"EHLO {CLIENT_HELO}", 250)
    return reader, writer


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Run) -> None:
    clock = time.perf_counter
    for index in state.next:
        if clock() > state.deadline:
            state.truncated = True
            break
        mail = state.mails[index]
        if not state.first_sent:
            state.first_sent = clock()
        await _command(reader, writer, f"MAIL FROM:<{mail.mail_from}>", 250)
        await _command(reader, writer, f"RCPT TO:<{RECIPIENT}>", 250)
        await _command(reader, writer, "DATA", 354)
        writer.write(mail.data)
        await writer.drain()
        started = clock()
        writer.write(b".\r\n")
        code, text = await _reply(reader)
        done = clock()
        if code == 250:
            state.latencies.append(done - started)
            state.last_ok = done
        else:
            state.failures.append(text)
            if len(state.failures) >= 10:
                raise BenchError(f"10 messages refused, the last with {text!r}")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def cpu_meter(server_pid: int, client: str) -> Iterator[dict[str, float]]:
    """Fills the yielded dict with cores used by the server, the client and the rest."""
    own = self_cpu if client == "python" else children_cpu
    start = (time.monotonic(), machine_cpu(), process_cpu(server_pid), own())
    cores: dict[str, float] = {}
    yield cores
    end = (time.monotonic(), machine_cpu(), process_cpu(server_pid), own())
    wall, busy, served, loaded = (b - a for a, b in zip(start, end, strict=True))
    cores.update(
        server=round(served / wall, 2),
        client=round(loaded / wall, 2),
        other=round((busy - served - loaded) / wall, 2),
    )


def python_load(
    port: int, mails: Sequence[Mail], args: argparse.Namespace, server_pid: int, label: str
) -> tuple[LoadResult, float, float]:
    """Send every mail over ``args.connections`` sessions; (result, first MAIL, last
    250), the times on the perf_counter clock."""

    async def main() -> _Run:
        sessions = await asyncio.gather(
            *(_connect("127.0.0.1", port) for _ in range(args.connections))
        )
        state = _Run(mails, time.perf_counter() + args.max_seconds)
        await asyncio.gather(*(_session(r, w, state) for r, w in sessions))
        return state

    with cpu_meter(server_pid, "python") as cores:
        state = asyncio.run(main())
    if state.failures:
        raise BenchError(
            f"{label}: {len(state.failures)} messages refused, e.g. {state.failures[0]!r}"
        )
    sent = len(state.latencies)
    if not sent:
        raise BenchError(f"{label}: nothing was accepted")
    seconds = state.last_ok - state.first_sent
    latencies = sorted(state.latencies)
    ms = 1000.0
    result = LoadResult(
        client="python",
        messages=sent,
        seconds=round(seconds, 3),
        msg_per_s=round(sent / seconds, 1),
        mean_bytes=round(sum(len(m.data) for m in mails[:sent]) / sent),
        p50_ms=round(_percentile(latencies, 0.50) * ms, 2),
        p99_ms=round(_percentile(latencies, 0.99) * ms, 2),
        max_ms=round(latencies[-1] * ms, 2),
        truncated=state.truncated,
        cpu=cores,
    )
    return result, state.first_sent, state.last_ok


# --- smtp-source ----------------------------------------------------------------------------


def smtp_source(
    port: int, message_file: Path, count: int, args: argparse.Namespace, server_pid: int
) -> LoadResult:
    """``count`` copies of one message through smtp-source (8 sessions, each reused)."""
    cmd = [
        "smtp-source", "-s", str(args.connections), "-d", "-m", str(count),
        "-M", CLIENT_HELO, "-f", TRUSTED[1], "-t", RECIPIENT,
        "-F", str(message_file), f"127.0.0.1:{port}",
    ]  # fmt: skip
    with cpu_meter(server_pid, "smtp-source") as cores:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=args.max_seconds
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"smtp-source did not finish {count} messages in {args.max_seconds:g} s"
            ) from None
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    # -F sends each line of the file with CRLF, and one empty line more.
    size = len(message_file.read_bytes().replace(b"\n", b"\r\n")) + 2
    return LoadResult(
        client="smtp-source",
        messages=count,
        seconds=round(seconds, 3),
        msg_per_s=round(count / seconds, 1),
        mean_bytes=size,
        cpu=cores,
    )


def write_source_file(path: Path, case: Case) -> None:
    """One message of the case for ``smtp-source -F`` (LF line endings, not stuffed)."""
    data = build_message(case, "smtpsource", 0, random.Random(1))
    path.write_bytes(data.replace(b"\r\n", b"\n"))


# --- the spool: accepted -> parsed, decided, visible ----------------------------------------


@dataclass(frozen=True)
class Counts:
    messages: int
    raw: int
    pending: int
    attachments: int
    by_folder: dict[str, int]


def counts(conn: sqlite3.Connection) -> Counts:
    (messages,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    (raw,) = conn.execute("SELECT count(*) FROM raw_messages").fetchone()
    (pending,) = conn.execute(
        "SELECT count(*) FROM raw_messages WHERE state = 'pending'"
    ).fetchone()
    (attachments,) = conn.execute("SELECT count(*) FROM attachments").fetchone()
    folders = dict(conn.execute("SELECT folder, count(*) FROM messages GROUP BY folder"))
    return Counts(messages, raw, pending, attachments, folders)


@dataclass(frozen=True)
class ProcessResult:
    messages: int  # sent (all answered 250) in the measured Python run
    complete: bool  # all of them visible within the time bound
    visible: int
    seconds: float  # first message sent -> the last one visible (or the time bound)
    msg_per_s: float
    middle_msg_per_s: float  # from 10% to 90% of the messages visible
    backlog_s: float  # last 250 -> the last one visible
    peak_pending: int
    by_folder: dict[str, int]
    attachments: int
    server_cores: float  # CPU of optmsg serve, first send -> last visible


class SpoolWatcher(threading.Thread):
    """Polls the gateway's database from the first message on; notes when every message
    of the run is visible and the raw spool has no pending row left."""

    def __init__(self, db: Path, base: Counts, server_pid: int) -> None:
        super().__init__(name="spool-watcher", daemon=True)
        self._db = db
        self.base = base
        self.server_pid = server_pid
        self.expected: int | None = None  # set once the load run knows what it sent
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []  # (perf_counter, visible, pending)
        self.done_at: float | None = None
        self.cpu_start = process_cpu(server_pid)
        self.cpu_done: float | None = None
        self.final: Counts | None = None

    def run(self) -> None:
        with sqlite3.connect(self._db, timeout=30) as conn:
            while not self.stop.is_set():
                now = counts(conn)
                stamp = time.perf_counter()
                visible = now.messages - self.base.messages
                self.samples.append((stamp, visible, now.pending))
                expected = self.expected
                if expected is not None and visible >= expected and now.pending == 0:
                    self.done_at = stamp
                    self.cpu_done = process_cpu(self.server_pid)
                    self.final = now
                    return
                time.sleep(POLL_S)
            self.final = counts(conn)

    def result(self, load: LoadResult, first_sent: float, last_ok: float) -> ProcessResult:
        end = self.done_at if self.done_at is not None else self.samples[-1][0]
        visible = self.samples[-1][1] if self.done_at is None else load.messages
        seconds = end - first_sent
        cpu_end = self.cpu_done if self.cpu_done is not None else process_cpu(self.server_pid)

        def reached(fraction: float) -> float:
            goal = fraction * load.messages
            return next((t for t, v, _ in self.samples if v >= goal), end)

        t10, t90 = reached(0.10), reached(0.90)
        final = self.final or self.base
        return ProcessResult(
            messages=load.messages,
            complete=self.done_at is not None,
            visible=visible,
            seconds=round(seconds, 3),
            msg_per_s=round(visible / seconds, 1),
            middle_msg_per_s=round(0.8 * load.messages / (t90 - t10), 1) if t90 > t10 else 0.0,
            backlog_s=round(max(0.0, end - last_ok), 3),
            peak_pending=max(p for _, _, p in self.samples),
            by_folder={
                k: v - self.base.by_folder.get(k, 0) for k, v in sorted(final.by_folder.items())
            },
            attachments=final.attachments - self.base.attachments,
            server_cores=round((cpu_end - self.cpu_start) / seconds, 2),
        )


def wait_processed(db: Path, expected_messages: int, timeout: float, label: str) -> Counts:
    """Wait until nothing is pending and ``messages`` holds ``expected_messages`` rows."""
    deadline = time.monotonic() + timeout
    with sqlite3.connect(db, timeout=30) as conn:
        while True:
            now = counts(conn)
            if now.pending == 0 and now.messages >= expected_messages:
                return now
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{label}: after {timeout:g} s still {now.pending} raw messages pending, "
                    f"{now.messages} of {expected_messages} messages stored"
                )
            time.sleep(POLL_S)


# --- py-spy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    samples: int
    by_thread: dict[str, int]
    self_lines: list[tuple[str, int]]  # "function (file:line)" where the sample was
    # The innermost line of our packages on the stack: what our code was doing,
    # the libraries it called included.
    our_lines: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]  # "function (file)" anywhere on the stack, our code


def py_spy_path(args: argparse.Namespace) -> str:
    found = (
        args.py_spy
        or shutil.which("py-spy")
        or (str(PYSPY_FALLBACK) if PYSPY_FALLBACK.exists() else None)
    )
    if found is None:
        raise BenchError("--profile needs py-spy: pip install py-spy, or give --py-spy PATH")
    return str(found)


_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    root = f"{ROOT}/"
    return path.removeprefix(root)


def summarise_profile(path: Path, top: int) -> Profile:
    """Self time per source line and inclusive time per function of our packages, from
    py-spy's raw (collapsed stack) output."""
    self_lines: Counter[str] = Counter()
    our_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    ours = tuple(f"{ROOT}/{pkg}/" for pkg in ("gateway", "bridges", "inbox", "optin", "config"))
    total = 0
    for row in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        parsed = [m for m in (_FRAME.match(f) for f in frames[1:]) if m]
        if parsed:
            leaf = parsed[-1]
            self_lines[f"{leaf['fn']} ({_short(leaf['file'])}:{leaf['line']})"] += count
        mine = [m for m in parsed if m["file"].startswith(ours)]
        if mine:
            our_lines[f"{mine[-1]['fn']} ({_short(mine[-1]['file'])}:{mine[-1]['line']})"] += count
        seen = {f"{m['fn']} ({_short(m['file'])})" for m in mine}
        for name in seen:
            inclusive[name] += count
    return Profile(
        samples=total,
        by_thread=dict(threads.most_common(8)),
        self_lines=self_lines.most_common(top),
        our_lines=our_lines.most_common(top),
        inclusive=inclusive.most_common(top),
    )


def profile_text(profile: Profile, waits: bool) -> str:
    def pct(n: int) -> str:
        return f"{100 * n / profile.samples:.1f}%"

    what = "threads py-spy saw busy" if waits else "the thread holding the GIL"
    lines = [f"py-spy: {profile.samples} samples of optmsg serve ({what})", ""]
    lines += ["threads:", *(f"  {pct(n):>6}  {name}" for name, n in profile.by_thread.items())]
    lines += ["", "self (where the sample was):"]
    lines += [f"  {pct(n):>6}  {name}" for name, n in profile.self_lines]
    lines += ["", "innermost line of our packages (callees included):"]
    lines += [f"  {pct(n):>6}  {name}" for name, n in profile.our_lines]
    lines += ["", "inclusive, our packages:"]
    lines += [f"  {pct(n):>6}  {name}" for name, n in profile.inclusive]
    return "\n".join(lines)


# --- the two servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    case: Case
    bare: LoadResult
    bare_source: LoadResult
    gateway: LoadResult
    gateway_source: LoadResult
    processed: ProcessResult
    spooled: int  # raw rows added by the measured Python run (must equal its 250s)
    profile: Profile | None = None

    @property
    def ratio(self) -> float:
        return self.gateway.msg_per_s / self.bare.msg_per_s

    @property
    def source_ratio(self) -> float:
        return self.gateway_source.msg_per_s / self.bare_source.msg_per_s


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name}: nothing listens on port {port}") from None
            time.sleep(0.05)


def bench_bare(
    tmp: Path, case: Case, warm: list[Mail], mails: list[Mail], args: argparse.Namespace
) -> tuple[LoadResult, LoadResult]:
    port = free_port()
    cmd = [sys.executable, str(BENCH / "smtp_sink.py"), "127.0.0.1", str(port)]
    name = f"sink-{case.key}"
    with server(cmd, "sink: listening on", tmp, name) as proc:
        python_load(port, warm, args, proc.pid, "(a) warm-up")
        result, _, _ = python_load(port, mails, args, proc.pid, "(a) bare sink")
        source = smtp_source(port, tmp / f"{case.key}.eml", len(mails), args, proc.pid)
    out = (tmp / f"{name}.out").read_text()
    match = re.search(r"^sink: received (\d+) messages", out, re.MULTILINE)
    expected = len(warm) + result.messages + source.messages
    if match is None or int(match[1]) != expected:
        raise BenchError(f"(a) the sink counted {match and match[1]} messages, sent {expected}")
    return result, source


def prepare_gateway(tmp: Path, env: Mapping[str, str]) -> None:
    """Config with fresh secrets, one user with an email address, one trusted sender."""
    run([str(OPTMSG), "dev", "init", "--path", env["OPTMSG_CONFIG"]], env, tmp)
    user = json.loads(
        run(
            [
                str(OPTMSG), "users", "create", "--json", "--first-name", "Ada",
                "--last-name", "Bench", "--dob", "1990-01-01", "--phone", "+442079460958",
                "--email-address", RECIPIENT,
            ],
            env,
            tmp,
        )
    )  # fmt: skip
    run([str(OPTMSG), "optin", "add", user["id"], TRUSTED[1]], env, tmp)


def smtp_env(tmp: Path, http_port: int, smtp_port: int, dns_server: str) -> dict[str, str]:
    env = gateway_env(tmp, http_port)
    env.update(
        OPTMSG_SMTP__ENABLED="true",
        OPTMSG_SMTP__LISTEN=f"127.0.0.1:{smtp_port}",
        OPTMSG_SMTP__HOSTNAME="mx.optmsg.example",
        # The bench senders' domains publish no SPF/DKIM/DMARC records: a local fake
        # DNS server says so (NXDOMAIN with an SOA, so answers are cached as from a
        # real zone), and the figures do not depend on the machine's resolver.
        OPTMSG_SMTP__DNS_SERVERS=json.dumps([dns_server]),
        OPTMSG_SMTP__DNS_TIMEOUT_S="0.2",
        # ... so no email can authenticate; without this the trusted sender's mail
        # would be quarantined too. The checks run all the same.
        OPTMSG_OPTIN__REQUIRE_EMAIL_AUTH="false",
    )
    return env


def bench_gateway(
    tmp: Path, case: Case, warm: list[Mail], mails: list[Mail], args: argparse.Namespace
) -> tuple[LoadResult, LoadResult, ProcessResult, int, Profile | None]:
    work = tmp / case.key
    work.mkdir()
    smtp_port = free_port()
    env = smtp_env(work, free_port(), smtp_port, args.dns_server)
    prepare_gateway(work, env)
    db = work / "optmsg.db"
    profile: Profile | None = None
    with server([str(OPTMSG), "serve"], "optmsg: listening on", work, "gateway", env) as proc:
        wait_port(smtp_port, proc, "(b) optmsg serve")
        python_load(smtp_port, warm, args, proc.pid, "(b) warm-up")
        base = wait_processed(db, len(warm), args.max_seconds, "(b) warm-up")
        if base.messages != len(warm):
            raise BenchError(f"(b) warm-up: {base.messages} messages for {len(warm)} sent")
        watcher = SpoolWatcher(db, base, proc.pid)
        watcher.start()
        spy = None
        if args.profile:
            spy_out = work / "py-spy.txt"
            spy = start_py_spy(
                py_spy_path(args), proc.pid, spy_out, args.profile_seconds, not args.profile_waits
            )
        result, first_sent, last_ok = python_load(
            smtp_port, mails, args, proc.pid, "(b) optmsg serve"
        )
        watcher.expected = result.messages
        watcher.join(timeout=args.max_seconds)
        watcher.stop.set()
        watcher.join()
        processed = watcher.result(result, first_sent, last_ok)
        if spy is not None:
            _, err = spy.communicate(timeout=args.profile_seconds + 60)
            if spy.returncode != 0:
                raise BenchError(f"py-spy failed: {err.decode(errors='replace').strip()}")
            profile = summarise_profile(spy_out, args.profile_top)
        with sqlite3.connect(db) as conn:
            after = counts(conn)
        spooled = after.raw - base.raw
        if spooled != result.messages:
            raise BenchError(f"(b) {result.messages} messages answered 250, {spooled} spooled")
        if processed.complete and after.messages - base.messages != result.messages:
            raise BenchError(
                f"(b) {after.messages - base.messages} messages stored for {result.messages} sent"
            )
        if not processed.complete:
            # Let the backlog finish before the next run (bounded too).
            expected = base.messages + result.messages
            after = wait_processed(db, expected, args.max_seconds, "(b) backlog")
        source = smtp_source(smtp_port, tmp / f"{case.key}.eml", len(mails), args, proc.pid)
        # smtp-source repeats one message: one raw row per copy, one message in all.
        done = wait_processed(db, after.messages + 1, args.max_seconds, "(b) smtp-source")
        if done.raw - after.raw != source.messages:
            raise BenchError(
                f"(b) smtp-source: {source.messages} answered 250, {done.raw - after.raw} spooled"
            )
    return result, source, processed, spooled, profile


# --- report ---------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postfix = "unknown version"
    if shutil.which("dpkg-query"):
        query = ["dpkg-query", "-W", "-f", "${Version}", "postfix"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        postfix = done.stdout.strip() or postfix
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "aiosmtpd": version("aiosmtpd"),
        "smtp-source": f"Postfix {postfix}",
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _kb(n: int) -> str:
    return f"{n / 1000:.1f} KB"


def _process_row(case: Case, p: ProcessResult) -> str:
    folders = ", ".join(f"{name} {n:,}" for name, n in p.by_folder.items())
    return (
        f"| {case.title} | {p.visible:,} of {p.messages:,} | {p.seconds:.2f} s "
        f"| {p.msg_per_s:,.0f} | {p.middle_msg_per_s:,.0f} | {p.backlog_s:.2f} s "
        f"| {p.peak_pending:,} | {folders} | {p.attachments:,} | {p.server_cores:.2f} |"
    )


def targets(r: CaseResult) -> dict[str, bool]:
    return {
        "ratio": r.ratio >= TARGET_RATIO,
        "processed": r.processed.complete and r.processed.msg_per_s >= TARGET_PROCESSED,
    }


def report(results: Sequence[CaseResult], args: argparse.Namespace, started: datetime) -> str:
    info = machine()
    rows = []
    for r in results:
        for name, load in (
            ("(a) bare aiosmtpd sink", r.bare),
            ("(a) bare aiosmtpd sink", r.bare_source),
            ("(b) optmsg serve", r.gateway),
            ("(b) optmsg serve", r.gateway_source),
        ):
            per_msg = load.cpu["server"] / load.msg_per_s * 1e6
            rows.append(
                f"| {r.case.title} | {name} | {load.client} | {load.msg_per_s:,.0f} "
                f"| {_ms(load.p50_ms)} | {_ms(load.p99_ms)} | {load.messages:,}"
                f"{' (time bound)' if load.truncated else ''} | {_kb(load.mean_bytes)} "
                f"| {per_msg:,.0f} µs | {load.cpu['server']:.2f} / {load.cpu['client']:.2f}"
                f" / {load.cpu['other']:.2f} |"
            )
    accept_table = "\n".join(
        [
            "| case | server | client | msg/s | p50 ms | p99 ms | messages | mean size "
            "| server CPU per msg | CPU cores: server / client / other |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
            *rows,
        ]
    )
    process_table = "\n".join(
        [
            "| case | visible | first MAIL → last visible | msg/s | msg/s 10-90 % "
            "| backlog after last 250 | peak pending | folders | attachments | server cores |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            *(_process_row(r.case, r.processed) for r in results),
        ]
    )
    verdicts = []
    for r in results:
        met = targets(r)
        complete = "" if r.processed.complete else " (not all visible within the time bound)"
        verdicts += [
            f"- {r.case.title}: accepted b/a {r.ratio:.1%} (smtp-source cross-check "
            f"{r.source_ratio:.1%}); target >= {TARGET_RATIO:.0%}: {verdict(met['ratio'])}",
            f"- {r.case.title}: parsed, decided and visible {r.processed.msg_per_s:,.0f} "
            f"msg/s{complete}; target >= {TARGET_PROCESSED:,.0f} msg/s: "
            f"{verdict(met['processed'])}",
            f"- {r.case.title}: p99 end of DATA → 250, (b) {_ms(r.gateway.p99_ms)} ms "
            f"(sink {_ms(r.bare.p99_ms)} ms); reported, no target",
        ]
    busy = max(
        load.cpu["other"]
        for r in results
        for load in (r.bare, r.bare_source, r.gateway, r.gateway_source)
    )
    warning = (
        f"\n**Warning: other processes used up to {busy:.2f} CPU cores during the runs; "
        "the figures are depressed and noisy. Rerun on a quiet machine.**\n"
        if busy > BUSY_CORES
        else ""
    )
    profiled = (
        "\n- (b)'s measured Python runs were sampled by py-spy (--profile): its figures "
        "include the sampling cost\n"
        if args.profile
        else ""
    )
    cases = "; ".join(
        f"{r.case.title}: {r.case.warmup} warm-up then {r.case.messages:,} measured"
        for r in results
    )
    return f"""
## {started:%Y-%m-%d %H:%M} UTC: SMTP email bridge throughput

- machine: {info["nproc"]} CPUs ({info["cpu"]}), Python {info["python"]}, \
Linux {info["kernel"]}, SQLite {info["sqlite"]}, aiosmtpd {info["aiosmtpd"]}, \
smtp-source from {info["smtp-source"]}
- command: `{command()}`
- load: {args.connections} connections on 127.0.0.1 (same machine), no pipelining, \
each connection reused; messages per server: {cases}. Client "python" (bench/smtp.py) \
sends unique pre-built messages (multipart/alternative text+HTML, the attachment case \
in multipart/mixed with a {ATTACHMENT_BYTES // 1024} KiB base64 PDF), alternately from a \
trusted sender and a stranger, and times each from the final `.` CRLF to the reply; \
"smtp-source" (`smtp-source -s {args.connections} -d -m N -F FILE`) repeats one message \
of the case, as a cross-check of msg/s with a client in C
- (a) is bench/smtp_sink.py (aiosmtpd, `250 OK` at once); (b) is `optmsg serve` with \
SQLite in a temp dir, `smtp.dns_servers` = a local fake DNS server (NXDOMAIN for every \
name), `smtp.dns_timeout_s = 0.2`, `optin.require_email_auth = false` \
(the senders' domains publish no SPF/DKIM/DMARC records, so no mail can authenticate; \
the checks and their DNS lookups still run), one user, the trusted sender opted in; \
(b)'s server CPU includes the parsing and filtering that run beside its SMTP server
- accepted msg/s: 250 replies / (last 250 - first MAIL); every 250 was checked against a new \
raw spool row (and the sink's own count). Visible: the raw spool has no pending row \
and `messages` has one row per message sent; msg/s = messages / (last visible - first \
MAIL), polled every {POLL_S * 1000:.0f} ms
{profiled}
{accept_table}

{process_table}

{chr(10).join(verdicts)}
{warning}"""


def make_cases(args: argparse.Namespace) -> list[Case]:
    return [
        Case("text-html", "5-10 KB text+HTML", args.messages, args.warmup, 0),
        Case(
            "attachment",
            "200 KB attachment",
            args.attachment_messages,
            max(1, args.warmup // 4),
            ATTACHMENT_BYTES,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="5-10 KB case, per run")
    parser.add_argument(
        "--attachment-messages", type=int, default=500, help="200 KB attachment case, per run"
    )
    parser.add_argument("--warmup", type=int, default=200, help="warm-up messages per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--max-seconds", type=float, default=120.0,
        help="time bound of each load run and of each wait for the spool to drain",
    )  # fmt: skip
    parser.add_argument(
        "--case", choices=("all", "text-html", "attachment"), default="all", help="cases to run"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy (b)'s measured run")
    parser.add_argument("--py-spy", help="py-spy executable (default: PATH, then the fallback)")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument(
        "--profile-waits", action="store_true",
        help="sample every thread py-spy finds busy, not only the one holding the GIL "
        "(shows time blocked in SQLite locks and fsyncs; queue waits show up as busy too)",
    )  # fmt: skip
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    if args.profile:
        try:
            py_spy_path(args)
        except BenchError as exc:
            print(f"smtp.py: {exc}", file=sys.stderr)
            return 1
    # Hermetic: the gateway sees only the temp config and our overrides.
    for name in [name for name in os.environ if name.startswith("OPTMSG_")]:
        del os.environ[name]
    started = datetime.now(UTC)
    cases = [c for c in make_cases(args) if args.case in ("all", c.key)]
    results: list[CaseResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="optmsg-bench-smtp-") as name,
        FakeDnsServer({}) as fake_dns,
    ):
        args.dns_server = fake_dns.server
        tmp = Path(name)
        try:
            for n, case in enumerate(cases):
                print(f"{case.title}: building {case.warmup * 2 + case.messages * 2:,} messages")
                tag = f"{started:%Y%m%d%H%M%S}{n}"
                seed = int(started.timestamp()) + n
                write_source_file(tmp / f"{case.key}.eml", case)
                # Each server gets its own unique messages: the gateway deduplicates.
                a_warm = build_mails(case, f"{tag}aw", case.warmup, seed)
                a_mails = build_mails(case, f"{tag}a", case.messages, seed + 1)
                print(f"{case.title}: (a) bare aiosmtpd sink ...", flush=True)
                bare, bare_source = bench_bare(tmp, case, a_warm, a_mails, args)
                del a_warm, a_mails
                b_warm = build_mails(case, f"{tag}bw", case.warmup, seed)
                b_mails = build_mails(case, f"{tag}b", case.messages, seed + 1)
                print(f"{case.title}: (b) optmsg serve ...", flush=True)
                gw, gw_source, processed, spooled, profile = bench_gateway(
                    tmp, case, b_warm, b_mails, args
                )
                del b_warm, b_mails
                results.append(
                    CaseResult(case, bare, bare_source, gw, gw_source, processed, spooled, profile)
                )
        except BenchError as exc:
            print(f"smtp.py: INVALID RUN: {exc}", file=sys.stderr)
            for log in sorted(tmp.rglob("*.err")):
                print(f"--- {log.relative_to(tmp)} (last lines)\n{tail(log)}", file=sys.stderr)
            return 1
    text = report(results, args, started)
    print(text)
    for r in results:
        if r.profile is not None:
            print(f"--- {r.case.title}\n{profile_text(r.profile, args.profile_waits)}\n")
    met = all(all(targets(r).values()) for r in results)
    RESULTS.mkdir(exist_ok=True)
    raw = {
        "started": started.isoformat(),
        "command": command(),
        "machine": machine(),
        "settings": vars(args),
        "cases": [
            {
                **asdict(r),
                "ratio": r.ratio,
                "source_ratio": r.source_ratio,
                "targets": targets(r),
            }
            for r in results
        ],
        "targets_met": met,
    }
    publish("smtp", raw, text, started, no_doc=args.no_doc)
    return 3 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
