"""Live-update fan-out: how long after a webhook's 200 each of 1,000 connected SSE
clients has the new message.

One invocation runs the same clients against two servers in turn:

(a) baseline: a bare aiohttp server in its own process (``--bare-server``, below):
    ``GET /events`` opens a text/event-stream, ``POST /publish`` puts one event on
    every open stream's queue (an in-process broadcast) and answers 200.
(b) ``optmsg serve`` (SQLite in a temp dir, no Redis: the in-process hub): one user
    with ``--clients`` streams open on ``GET /api/v1/events`` (the per-user stream cap
    raised to fit); each round posts one signed Twilio SMS webhook from a trusted
    sender to that user.

All clients belong to ONE user: a message then goes to every one of them, the
largest fan-out one change can cause (many users with a few devices each cost less
per message). The clients run in ``--client-procs`` processes (aiohttp), each
timestamping the ``message.created`` event on arrival with ``time.monotonic()`` (one
clock for every process on Linux); the poster timestamps each webhook's 200. The
latency of one delivery is receipt minus 200, over every (round, client); rounds are
sequential (the next is posted once every client has the previous one). Target: p99
<= 100 ms for (b). Appends a dated "#6 SSE fan-out" section to docs/benchmarks.md.

Usage: .venv/bin/python bench/sse.py [--clients 1000] [--rounds 50] [--client-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook import (  # noqa: E402
    DOC,
    DOC_HEADER,
    OPTMSG,
    RESULTS,
    SMS_NUMBER,
    SMS_PATH,
    TRUSTED,
    BenchError,
    command,
    free_port,
    gateway_env,
    prepare_gateway,
    run,
    server,
    tail,
)

from config import load_settings  # noqa: E402
from gateway.devtools import inbound_sms_form, sign  # noqa: E402

TARGET_P99_MS = 100.0
ROUND_TIMEOUT_S = 10.0


# --- (a) the bare baseline server --------------------------------------------------------


async def _bare_main(port: int) -> None:
    queues: set[asyncio.Queue[bytes]] = set()
    counter = 0

    async def events(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(queue)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"retry: 3000\n\n")
            while True:
                await response.write(await queue.get())
        except ConnectionResetError:
            return response
        finally:
            queues.discard(queue)

    async def publish(request: web.Request) -> web.Response:
        nonlocal counter
        await request.read()
        counter += 1
        frame = (
            f"id: {counter}\nevent: message.created\n"
            f'data: {{"message_id":"bare{counter}","folder":"inbox"}}\n\n'
        ).encode()
        for queue in queues:
            queue.put_nowait(frame)
        return web.Response(text="")

    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_post("/publish", publish)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare: listening on http://127.0.0.1:{port}", flush=True)
    await stop.wait()
    for queue in list(queues):
        queue.put_nowait(b"")
    await runner.cleanup()


# --- the clients ---------------------------------------------------------------------------


async def _clients(url: str, token: str, count: int, ready: Connection) -> dict[str, list[float]]:
    """Open ``count`` streams, report readiness, then record each message id's arrival
    time on every stream until told to stop."""
    arrivals: dict[str, list[float]] = {}
    opened = 0
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)
    ) as session:
        all_open = asyncio.Event()

        async def one() -> None:
            nonlocal opened
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status != 200:
                        failures.append(f"{resp.status}: {(await resp.text())[:200]}")
                        all_open.set()
                        return
                    opened += 1
                    if opened == count:
                        all_open.set()
                    async for raw in resp.content:
                        if raw.startswith(b"data: "):
                            at = time.monotonic()
                            message_id = json.loads(raw[6:])["message_id"]
                            arrivals.setdefault(message_id, []).append(at)
            except (aiohttp.ClientError, ConnectionError) as exc:
                failures.append(type(exc).__name__)

        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(0)  # do not flood the server's accept queue at once
        await asyncio.wait_for(all_open.wait(), timeout=120)
        ready.send({"opened": opened, "failures": failures})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, ready.recv)  # "stop"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return arrivals


def _client_proc(url: str, token: str, count: int, conn: Connection) -> None:
    arrivals = asyncio.run(_clients(url, token, count, conn))
    conn.send(arrivals)


@dataclass(frozen=True)
class Latency:
    deliveries: int
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(
    name: str,
    url: str,
    token: str,
    post: Any,
    args: argparse.Namespace,
) -> Latency:
    """Connect the clients to ``url``, post ``args.rounds`` messages through ``post``,
    and compute delivery latencies."""
    per_proc = [args.clients // args.client_procs] * args.client_procs
    per_proc[0] += args.clients - sum(per_proc)
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for count in per_proc:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_proc, args=(url, token, count, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    try:
        opened = 0
        for pipe in pipes:
            if not pipe.poll(180):
                raise BenchError(f"{name}: clients did not connect within 180 s")
            status = pipe.recv()
            if status["failures"]:
                raise BenchError(f"{name}: streams refused: {status['failures'][:3]}")
            opened += status["opened"]
        print(f"  {opened} streams open; posting {args.rounds} messages", flush=True)
        posted = asyncio.run(_post_all(post, args.rounds))
        time.sleep(1.0)  # the last round's deliveries
        for pipe in pipes:
            pipe.send("stop")
        arrivals: dict[str, list[float]] = {}
        for pipe in pipes:
            if not pipe.poll(60):
                raise BenchError(f"{name}: clients did not report")
            for message_id, times in pipe.recv().items():
                arrivals.setdefault(message_id, []).extend(times)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    # Messages in the order the clients saw them (one per round, rounds sequential).
    order = sorted(arrivals, key=lambda m: min(arrivals[m]))
    if len(order) != len(posted):
        raise BenchError(f"{name}: clients saw {len(order)} messages for {len(posted)} posted")
    latencies = [
        (at - sent) * 1000 for message_id, sent in zip(order, posted, strict=True)
        for at in arrivals[message_id]
    ]  # fmt: skip
    expected = args.clients * args.rounds
    if len(latencies) != expected:
        raise BenchError(f"{name}: {len(latencies)} deliveries, expected {expected}")
    return Latency(
        deliveries=len(latencies),
        expected=expected,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies),
        mean_ms=statistics.fmean(latencies),
    )


async def _post_all(post: Any, rounds: int) -> list[float]:
    done: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(rounds):
            await post(session, i)
            done.append(time.monotonic())
            await asyncio.sleep(0.25)  # every client has it well before the next round
    return done


# --- setup -----------------------------------------------------------------------------


def prepare(tmp: Path, env: dict[str, str]) -> str:
    """The webhook bench's gateway set-up (config, user, trusted sender) and a token."""
    user_id = prepare_gateway(tmp, env)
    created = json.loads(run([str(OPTMSG), "tokens", "create", user_id, "--json"], env, tmp))
    return str(created["token"])


def raise_fd_limit(clients: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients * 2 + 512  # both ends of every stream may be on this machine
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise BenchError(f"the open-files limit is {hard}; {wanted} are needed (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
    }


def report(
    a: Latency, b: Latency, args: argparse.Namespace, started: datetime, load: list[float]
) -> tuple[str, bool]:
    info = machine()
    met = b.p99_ms <= TARGET_P99_MS
    rows = "\n".join(
        f"| {name} | {r.deliveries:,} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} "
        f"| {r.mean_ms:.1f} |"
        for name, r in (("(a) bare aiohttp SSE + in-process broadcast", a), ("(b) optmsg serve", b))
    )
    text = f"""
## {started:%Y-%m-%d %H:%M} UTC: #6 SSE fan-out

- machine: {info["nproc"]} CPUs ({info["cpu"]}), Python {info["python"]}, \
Linux {info["kernel"]}, SQLite {info["sqlite"]}, aiohttp {info["aiohttp"]}
- command: `{command()}`
- load: {args.clients:,} SSE clients of ONE user (aiohttp, in {args.client_procs} \
processes on the same machine), {args.rounds} messages posted one at a time (0.25 s \
apart); latency = a client's receipt of the event minus the poster's receipt of the \
200, over every (message, client). (b) is `optmsg serve` on SQLite, no Redis; each \
message is a signed Twilio SMS webhook from a trusted sender. (a) answers a bare POST \
and puts the event on every stream's queue in the same process.
- 1-minute load average at the start / between (a) and (b) / at the end: \
{" / ".join(f"{x:.2f}" for x in load)} (above {info["nproc"]} means other work \
shared the CPUs: the clients, the poster and the server all run on this machine)

| server | deliveries | p50 ms | p99 ms | max ms | mean ms |
|---|---:|---:|---:|---:|---:|
{rows}

- ratio of p99s b/a: {b.p99_ms / a.p99_ms:.2f}x
- target (b) p99 <= {TARGET_P99_MS:g} ms for {args.clients:,} clients: \
{"PASS" if met else "FAIL"}
"""
    return text, met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    parser.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        asyncio.run(_bare_main(args.bare_server))
        return 0
    for name in [name for name in os.environ if name.startswith("OPTMSG_")]:
        del os.environ[name]
    started = datetime.now(UTC)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="optmsg-bench-sse-") as name:
        tmp = Path(name)
        try:
            raise_fd_limit(args.clients)
            bare_port = free_port()
            print(f"(a) bare aiohttp SSE, {args.clients} clients ...", flush=True)
            with server(
                [sys.executable, __file__, "--bare-server", str(bare_port)],
                "bare: listening on",
                tmp,
                "bare",
            ):
                base = f"http://127.0.0.1:{bare_port}"

                async def post_bare(session: aiohttp.ClientSession, i: int) -> None:
                    async with session.post(f"{base}/publish", data=b"x") as resp:
                        if resp.status != 200:
                            raise BenchError(f"(a) publish answered {resp.status}")

                a = measure("(a)", f"{base}/events", "", post_bare, args)
            load.append(os.getloadavg()[0])
            port = free_port()
            env = gateway_env(tmp, port)
            env["OPTMSG_EVENTS__MAX_CLIENTS_PER_USER"] = str(args.clients)
            token = prepare(tmp, env)
            tw = load_settings(env["OPTMSG_CONFIG"]).bridges.twilio
            url = f"{env['OPTMSG_HTTP__PUBLIC_URL']}{SMS_PATH}"
            print(f"(b) optmsg serve, {args.clients} clients ...", flush=True)
            with server([str(OPTMSG), "serve"], "optmsg: listening on", tmp, "gateway", env):

                async def post_webhook(session: aiohttp.ClientSession, i: int) -> None:
                    form = inbound_sms_form(
                        sid="SM" + secrets.token_hex(16),
                        sender=TRUSTED,
                        to=SMS_NUMBER,
                        body=f"fan-out {i}",
                        account_sid=tw.account_sid,
                    )
                    signature = sign(url, form, tw.auth_token.get_secret_value())
                    async with session.post(
                        url,
                        data=urlencode(form),
                        headers={
                            "X-Twilio-Signature": signature,
                            "Content-Type": "application/x-www-form-urlencoded",
                        },
                    ) as resp:
                        if resp.status != 200:
                            raise BenchError(f"(b) webhook answered {resp.status}")
                        await resp.read()

                b = measure(
                    "(b)", f"http://127.0.0.1:{port}/api/v1/events", token, post_webhook, args
                )
            load.append(os.getloadavg()[0])
        except BenchError as exc:
            print(f"sse.py: INVALID RUN: {exc}", file=sys.stderr)
            for log in sorted(tmp.glob("*.err")):
                print(f"--- {log.name} (last lines)\n{tail(log)}", file=sys.stderr)
            return 1
    text, met = report(a, b, args, started, load)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sse-{started:%Y%m%dT%H%M%SZ}.json"
    raw = {
        "started": started.isoformat(),
        "command": command(),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "bare_server"},
        "bare": asdict(a),
        "gateway": asdict(b),
        "target_met": met,
        "load_average": load,
    }
    out.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write(text)
    print(
        f"raw results: {out.relative_to(ROOT)}"
        + ("" if args.no_doc else f"; appended to {DOC.relative_to(ROOT)}")
    )
    return 3 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
