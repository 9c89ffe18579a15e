"""Webhooks while the database is down: how fast the spool acknowledges, how fast it
replays once the database is back.

The gateway app runs in this process on a real port (aiohttp), with SQLite (its
write lock held by another connection for the outage) or PostgreSQL behind the
cuttable TCP proxy of tests/fakes (--db postgresql; needs 127.0.0.1:5432). A pool
of aiohttp clients posts signed unique SMS webhooks during the outage; then the
database comes back and the script times the drain and checks one row per
acknowledged message. Prints one JSON document.

Usage: .venv/bin/python bench/spool.py [--db sqlite|postgresql] [--messages 2000]
       [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import sqlalchemy as sa
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.devtools import sign  # noqa: E402
from gateway.keys import SPOOL  # noqa: E402
from inbox import store  # noqa: E402
from inbox.addresses import E164  # noqa: E402
from inbox.db import open_database  # noqa: E402
from inbox.migrate import upgrade  # noqa: E402

PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/test"
TOKEN = "bench-auth-token-" + "0123456789abcdef"
ACCOUNT = "AC" + "0" * 32
NUMBER = "+14155550199"


def settings_for(tmp: Path, url: str, port: int) -> Settings:
    return Settings(
        http={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        smtp={"enabled": False},
        database={"url": url},
        storage={"blob_dir": tmp / "blobs"},
        spool={"dir": tmp / "spool", "replay_interval_s": 0.2, "store_timeout_s": 2.0},
        bridges={"twilio": {"enabled": True, "account_sid": ACCOUNT, "auth_token": TOKEN}},
    )


def forms(n: int, url: str) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for i in range(n):
        sid = "SM" + secrets.token_hex(16)
        params = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": ACCOUNT,
            "From": "+14155550142",
            "To": NUMBER,
            "Body": f"outage message {i}",
            "NumMedia": "0",
            "ToCountry": "US",
            "SmsStatus": "received",
            "NumSegments": "1",
            "ApiVersion": "2010-04-01",
        }
        headers = {
            "X-Twilio-Signature": sign(url, list(params.items()), TOKEN),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        out.append((sid, urlencode(params).encode(), headers))
    return out


async def post_all(
    url: str, items: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> tuple[list[int], list[float], float]:
    queue = list(reversed(items))
    statuses: list[int] = []
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            _, body, headers = queue.pop()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return statuses, latencies, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="optmsg-spool-bench-"))
    proxy = None
    admin = None
    db_name = ""
    if args.db == "postgresql":
        from tests.fakes.tcp_proxy import TcpProxy

        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        db_name = "optmsg_bench_" + secrets.token_hex(4)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{db_name}"')
        proxy = TcpProxy("127.0.0.1", 5432)
        proxy.start()
        direct_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
        url = direct_url.replace(":5432/", f":{proxy.port}/")
    else:
        direct_url = url = f"sqlite:///{tmp}/optmsg.db"
    port = free_port()
    settings = settings_for(tmp, url, port)
    direct = open_database(settings.database.model_copy(update={"url": direct_url}))
    upgrade(direct)
    store.create_user(
        direct,
        first_name="B",
        last_name="B",
        date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460958"),
        sms_number=E164(NUMBER),
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    webhook_url = f"http://127.0.0.1:{port}/bridges/twilio/sms"
    items = forms(args.messages, webhook_url)
    lock: sqlite3.Connection | None = None
    try:
        if proxy is not None:
            proxy.cut()
        else:
            lock = sqlite3.connect(f"{tmp}/optmsg.db", isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
        statuses, latencies, took = await post_all(webhook_url, items, args.concurrency)
        spooled = app[SPOOL].pending
        restored = time.perf_counter()
        if proxy is not None:
            proxy.restore()
        elif lock is not None:
            lock.execute("ROLLBACK")
            lock.close()
        while app[SPOOL].pending:
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - restored
        with direct.read.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    finally:
        await runner.cleanup()
        direct.dispose()
        if proxy is not None:
            proxy.stop()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            admin.dispose()
    return {
        "db": args.db,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "spooled_at_restore": spooled,
        "acknowledged_per_s": round(len(statuses) / took, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2),
            "p99": round(pct(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "replay_s_after_restore": round(drained, 2),
        "replayed_per_s": round(spooled / drained, 1) if drained else None,
        "rows_stored": rows,
        "rows_ok": rows == statuses.count(200),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    # One warning per webhook that waited for the store; the figures are the output.
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result, indent=2))
    return 0 if result["rows_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
