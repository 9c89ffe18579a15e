"""GET /api/v1/messages on a large store: the gateway against a bare aiohttp page.

A SQLite store of 1,000,000 messages across 1,000 users (1,000 each: 90% inbox, 5%
quarantine, 5% sent; half read) is built once, by the migrations and then bulk rows,
and cached under var/bench/ keyed by the schema revision and the sizes; each run
copies it to a temp dir. wrk (bench/messages_api.lua) then loads, at 50 connections:

(a) bench/bare_page_server.py: a fixed 50-message page (the bytes of a real one);
(b) ``optmsg serve`` on the copy: bearer token lookup, keyset query, JSON, ETag,

with requests rotating over every user's token, each asking for its first inbox page
(50 messages) or, for a quarter of them, a cursor page further down. The query plan
SQLite chooses for both kinds of page at this size is printed with the figures.
Target: (b) >= 1,500 req/s and p99 <= 50 ms at 50 connections. Exit 1 when a run is
invalid (non-2xx, socket errors); with --strict also 3 when a target is missed.

Usage: .venv/bin/python bench/messages_api.py [--duration 15] [--users 1000] [--per-user 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webhook import (  # noqa: E402
    DOC,
    DOC_HEADER,
    OPTMSG,
    BenchError,
    _ms,
    _seconds,
    children_cpu,
    command,
    free_port,
    gateway_env,
    machine,
    machine_cpu,
    process_cpu,
    run,
    server,
    tail,
    verdict,
)

from config import DatabaseSettings  # noqa: E402
from inbox import store  # noqa: E402
from inbox.db import open_database  # noqa: E402
from inbox.message import Folder  # noqa: E402
from inbox.migrate import head_revision, upgrade  # noqa: E402

CACHE = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results"
TARGET_RPS = 1500.0
TARGET_P99_MS = 50.0
PAGE = 50
SQL_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


# --- the store ----------------------------------------------------------------------------


def _id(prefix: str, millis: int) -> str:
    # The shape of inbox.ids.new_id: time-ordered, so id order is arrival order.
    return f"{prefix}_{millis:012x}{secrets.randbits(80):020x}"


def build_store(path: Path, users: int, per_user: int) -> list[str]:
    """Create the schema with the migrations, then insert the rows directly (the
    store's own functions would take an hour for a million messages). Returns the
    users' tokens (only their hashes are stored)."""
    db = open_database(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        upgrade(db)
    finally:
        db.dispose()
    rng = random.Random(6)
    now = datetime.now(UTC).replace(tzinfo=None)
    start_ms = int((now - timedelta(days=20)).timestamp() * 1000)
    step_ms = max(1, 20 * 86_400_000 // (users * per_user))
    tokens = [store.TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in range(users)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    with conn:
        user_rows, address_rows, token_rows = [], [], []
        for n in range(users):
            user_id = _id("usr", start_ms + n)
            number = f"+1415{n:07d}"
            user_rows.append(
                (
                    user_id,
                    "Bench",
                    f"User{n}",
                    "1990-01-01",
                    f"+1650{n:07d}",
                    "US",
                    now.strftime(SQL_TIME),
                )
            )
            address_rows.append((number, user_id, "sms", now.strftime(SQL_TIME)))
            token_rows.append(
                (
                    _id("tok", start_ms + n),
                    user_id,
                    store.hash_token(tokens[n]),
                    "bench",
                    now.strftime(SQL_TIME),
                )
            )
        conn.executemany(
            "INSERT INTO users (id, first_name, last_name, date_of_birth, phone, region,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            user_rows,
        )
        conn.executemany(
            "INSERT INTO user_addresses (address, user_id, kind, created_at) VALUES (?, ?, ?, ?)",
            address_rows,
        )
        conn.executemany(
            "INSERT INTO api_tokens (id, user_id, token_hash, name, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            token_rows,
        )

        def messages() -> Any:
            # Interleaved across users, in arrival order, as real traffic arrives.
            millis = start_ms
            for i in range(per_user):
                for n, (user_id, *_rest) in enumerate(user_rows):
                    millis += step_ms
                    roll = rng.random()
                    folder = "inbox" if roll < 0.90 else "quarantine" if roll < 0.95 else "sent"
                    sender, recipient = f"+1212{rng.randrange(10_000_000):07d}", address_rows[n][0]
                    if folder == "sent":
                        sender, recipient = recipient, sender
                    received = datetime.fromtimestamp(millis / 1000, UTC).replace(tzinfo=None)
                    yield (
                        _id("msg", millis), user_id, "twilio", f"SM{secrets.token_hex(16)}",
                        "outbound" if folder == "sent" else "inbound", "sms", folder, sender,
                        recipient, f"Message {i} to user {n}: see you at {rng.randrange(24)}:00",
                        received.strftime(SQL_TIME), rng.random() < 0.5,
                        "trusted sender" if folder == "inbox" else "not on the trust list",
                        "delivered" if folder == "sent" else None,
                        sender if folder != "sent" else recipient,
                    )  # fmt: skip

        conn.executemany(
            "INSERT INTO messages (id, user_id, bridge, external_id, direction, channel, folder,"
            " sender, recipient, text, received_at, read, reason, status, conversation)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            messages(),
        )
    conn.execute("ANALYZE")
    conn.close()
    return tokens


def cached_store(users: int, per_user: int) -> tuple[Path, list[str]]:
    """The store for these sizes and the current schema, built when not yet cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"messages-{head_revision()}-{users}x{per_user}"
    db, tokens = stem.with_suffix(".db"), stem.with_suffix(".tokens.json")
    if db.exists() and tokens.exists():
        print(f"store: cached {db.relative_to(ROOT)}", flush=True)
        return db, json.loads(tokens.read_text())
    for old in CACHE.glob(f"messages-*-{users}x{per_user}.*"):
        old.unlink()
    partial = stem.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    print(f"store: building {users:,} users x {per_user:,} messages ...", flush=True)
    built = build_store(partial, users, per_user)
    partial.rename(db)
    tokens.write_text(json.dumps(built))
    print(f"store: built in {time.monotonic() - started:.0f} s: {db.relative_to(ROOT)}", flush=True)
    return db, built


def query_plans(db_path: Path, user_id: str, cursor: str) -> dict[str, str]:
    """The plans SQLite picks for the statements the store sends for a first page and a
    cursor page (captured from store.list_messages itself)."""
    import sqlalchemy as sa

    db = open_database(DatabaseSettings(url=f"sqlite:///{db_path}"))
    plans: dict[str, str] = {}
    try:
        for name, kwargs in (("first page", {}), ("cursor page", {"cursor": cursor})):
            sent: list[tuple[str, Any]] = []

            def record(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
                sent.append((statement, params))  # noqa: B023 - used before the next loop

            sa.event.listen(db.read, "before_cursor_execute", record)
            store.list_messages(db, user_id, Folder.INBOX, limit=PAGE, **kwargs)
            sa.event.remove(db.read, "before_cursor_execute", record)
            for statement, params in sent:
                table = re.search(r"FROM (\w+)", statement)
                with db.read.connect() as conn:
                    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                    plans[f"{name}, {table[1] if table else '?'}"] = "; ".join(
                        str(r[-1]) for r in rows
                    )
    finally:
        db.dispose()
    return plans


# --- load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: str
    cpu_server: float
    cpu_wrk: float
    cpu_other: float


def wrk(url: str, requests: Path, args: argparse.Namespace, seconds: float, pid: int) -> Result:
    cmd = [
        "wrk", "--latency", "--timeout", "10s", "-t", str(args.threads),
        "-c", str(args.connections), "-d", f"{seconds:g}s",
        "-s", str(ROOT / "bench" / "messages_api.lua"), url, "--", str(requests),
    ]  # fmt: skip
    before = (time.monotonic(), machine_cpu(), process_cpu(pid), children_cpu())
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = (time.monotonic(), machine_cpu(), process_cpu(pid), children_cpu())
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr.strip()}")
    out = done.stdout

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{out}")
        return match

    wall, busy, served, loaded = (b - a for a, b in zip(before, after, strict=True))
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = find(r"^\s*(\d+) requests in ([\d.]+\w+),")
    result = Result(
        requests=int(total[1]),
        seconds=_seconds(total[2]),
        rps=float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")[1]),
        p90_ms=_ms(find(r"^\s+90%\s+(\S+)")[1]),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=errors[1] if errors else "",
        cpu_server=round(served / wall, 2),
        cpu_wrk=round(loaded / wall, 2),
        cpu_other=round((busy - served - loaded) / wall, 2),
    )
    if result.non_2xx or result.socket_errors:
        raise BenchError(
            f"{url}: {result.non_2xx} non-2xx, socket errors {result.socket_errors}\n{out}"
        )
    return result


def get(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    # Our own server on 127.0.0.1.
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def request_lines(base: str, tokens: list[str], tmp: Path) -> tuple[Path, bytes, str]:
    """The wrk requests file: each user's first page, and for every fourth user a page
    a few hundred messages down. Also a real first page's bytes (the baseline serves
    them), and the first user's cursor page (for the query plans)."""
    lines, page_bytes, cursor = [], b"", ""
    for n, token in enumerate(tokens):
        lines.append(f"{token}\t/api/v1/messages?limit={PAGE}")
        if n % 4 == 0:
            page = get(f"{base}/api/v1/messages?limit={PAGE}", token)
            if not page_bytes:
                page_bytes = json.dumps({"items": page["items"], "next": page["next"]}).encode()
            deeper = get(f"{base}/api/v1/messages?limit=200&cursor={page['next']}", token)
            if deeper["next"] is None:
                raise BenchError("a user has too few messages for a cursor page: raise --per-user")
            lines.append(f"{token}\t/api/v1/messages?limit={PAGE}&cursor={deeper['next']}")
            cursor = cursor or deeper["next"]
    random.Random(6).shuffle(lines)
    path = tmp / "requests.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path, page_bytes, cursor


# --- report --------------------------------------------------------------------------------


def report(
    a: Result,
    b: Result,
    plans: dict[str, str],
    args: argparse.Namespace,
    started: datetime,
    build_s: str,
) -> tuple[str, bool]:
    met = b.rps >= TARGET_RPS and b.p99_ms <= TARGET_P99_MS
    info = machine()
    rows = "\n".join(
        f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.requests:,} | {r.cpu_server / r.rps * 1e6:,.0f} µs "
        f"| {r.cpu_server:.2f} / {r.cpu_wrk:.2f} / {r.cpu_other:.2f} |"
        for name, r in (("(a) bare aiohttp, fixed page", a), ("(b) optmsg serve", b))
    )
    plan_lines = "\n".join(f"  - {name}: `{plan}`" for name, plan in plans.items())
    busy = max(a.cpu_other, b.cpu_other)
    warning = (
        f"\n**Warning: other processes used up to {busy:.2f} CPU cores during the runs; "
        "the figures are depressed and noisy. Rerun on a quiet machine.**\n"
        if busy > 0.2
        else ""
    )
    text = f"""
## {started:%Y-%m-%d %H:%M} UTC: #6 GET /api/v1/messages

- machine: {info["nproc"]} CPUs ({info["cpu"]}), Python {info["python"]}, \
Linux {info["kernel"]}, SQLite {info["sqlite"]}, {info["wrk"]}
- command: `{command()}`
- store: SQLite, {args.users:,} users x {args.per_user:,} messages \
({args.users * args.per_user:,}; 90% inbox, half read), {build_s}
- load: wrk on 127.0.0.1 (same machine), {args.threads} threads, {args.connections} \
connections, {args.warmup:g} s warm-up then {args.duration:g} s measured per server; \
requests rotate over all {args.users:,} users' tokens: first inbox pages of {PAGE}, and \
cursor pages ({PAGE}) a few hundred messages down for a quarter of the users
- (a) answers a fixed real page after checking only that there is a bearer header; \
(b) checks the token, runs the keyset query and encodes the page with its ETag

| server | req/s | p50 ms | p90 ms | p99 ms | requests | server CPU per request \
| CPU cores: server / wrk / other |
|---|---:|---:|---:|---:|---:|---:|---|
{rows}

- ratio b/a: {b.rps / a.rps:.1%}
- target (b) >= {TARGET_RPS:,.0f} req/s: {verdict(b.rps >= TARGET_RPS)}
- target (b) p99 <= {TARGET_P99_MS:g} ms at {args.connections} connections: \
{verdict(b.p99_ms <= TARGET_P99_MS)}
- query plans SQLite chose at this size (EXPLAIN QUERY PLAN of the statements \
store.list_messages sends):
{plan_lines}
{warning}"""
    return text, met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=1000)
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument(
        "--api-limit",
        type=int,
        default=None,
        help="limits.api_requests_per_ip for the gateway (default: on, never reached; 0: off)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("messages_api.py: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 1
    for name in [name for name in os.environ if name.startswith("OPTMSG_")]:
        del os.environ[name]
    started = datetime.now(UTC)
    t0 = time.monotonic()
    cached, tokens = cached_store(args.users, args.per_user)
    build_s = f"ready in {time.monotonic() - t0:.0f} s (build or cache hit)"
    with tempfile.TemporaryDirectory(prefix="optmsg-bench-") as name:
        tmp = Path(name)
        port = free_port()
        env = gateway_env(tmp, port)
        if args.api_limit is not None:
            env["OPTMSG_LIMITS__API_REQUESTS_PER_IP"] = str(args.api_limit)
        try:
            run([str(OPTMSG), "dev", "init", "--path", env["OPTMSG_CONFIG"]], env, tmp)
            shutil.copyfile(cached, tmp / "optmsg.db")
            base = f"http://127.0.0.1:{port}"
            with server(
                [str(OPTMSG), "serve"], "optmsg: listening on", tmp, "gateway", env
            ) as proc:
                requests, page_bytes, cursor = request_lines(base, tokens, tmp)
                print("(b) optmsg serve ...", flush=True)
                wrk(f"{base}/api/v1/messages", requests, args, args.warmup, proc.pid)
                b = wrk(f"{base}/api/v1/messages", requests, args, args.duration, proc.pid)
            user_id = (
                sqlite3.connect(tmp / "optmsg.db")
                .execute(
                    "SELECT user_id FROM api_tokens WHERE token_hash = ?",
                    (store.hash_token(tokens[0]),),
                )
                .fetchone()[0]
            )
            plans = query_plans(tmp / "optmsg.db", user_id, cursor)
            (tmp / "page.json").write_bytes(page_bytes)
            bare = [
                sys.executable,
                str(ROOT / "bench" / "bare_page_server.py"),
                "127.0.0.1",
                str(port),
                str(tmp / "page.json"),
            ]
            print("(a) bare aiohttp ...", flush=True)
            with server(bare, "bare: listening on", tmp, "bare") as proc:
                wrk(f"{base}/api/v1/messages", requests, args, args.warmup, proc.pid)
                a = wrk(f"{base}/api/v1/messages", requests, args, args.duration, proc.pid)
        except BenchError as exc:
            print(f"messages_api.py: INVALID RUN: {exc}", file=sys.stderr)
            for log in sorted(tmp.glob("*.err")):
                print(f"--- {log.name} (last lines)\n{tail(log)}", file=sys.stderr)
            return 1
    text, met = report(a, b, plans, args, started, build_s)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"messages_api-{started:%Y%m%dT%H%M%SZ}.json"
    raw = {"started": started.isoformat(), "command": command(), "machine": machine(),
           "settings": vars(args), "bare": asdict(a), "gateway": asdict(b), "plans": plans,
           "targets_met": met}  # fmt: skip
    out.write_text(json.dumps(raw, indent=2) + "\n")
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write(text)
    print(f"raw results: {out.relative_to(ROOT)}")
    return 3 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
