"""MMS media ingest and outbound SMS through ``optmsg serve`` against local fakes.

One invocation:

1. Media. A fake media host (tests/fakes/media_server.py) on 127.0.0.1 serves distinct
   ~5 KB images. Baseline (a): this process fetches them straight from the fake with
   aiohttp, ``--concurrency`` at a time. (b): ``optmsg serve`` (SQLite, in-process
   dramatiq worker) receives ``--messages`` signed MMS webhooks with 3 media each
   (``--concurrency`` at a time); its media job fetches and stores them. Reported:
   media stored per second for (b), (a)'s media/s, the ratio, and p50/p99 of the
   time from posting a webhook to all three of its media being stored.
2. Sends. A fake Twilio REST API (tests/fakes/twilio_api.py). Baseline (a): the same
   twilio-package sender the gateway uses, called straight from threads. (b):
   ``POST /api/v1/messages`` to ``optmsg serve``; measured until every message is
   handed over (status ``queued``). Reported: sends per second and the ratio.

Appends a dated section to docs/benchmarks.md (unless --no-doc).

Usage: .venv/bin/python bench/mms.py [--messages 300] [--sends 300] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook import DOC, DOC_HEADER, OPTMSG, command, run  # noqa: E402

from bridges.twilio_rest import TwilioSender  # noqa: E402
from config import load_settings  # noqa: E402
from gateway.devtools import sign  # noqa: E402
from tests.fakes.media_server import MediaServer  # noqa: E402
from tests.fakes.twilio_api import FakeTwilio  # noqa: E402

SMS_NUMBER = "+14155550199"
MEDIA_PER_MESSAGE = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def stored_by_message(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            sid: n
            for sid, n in conn.execute(
                "SELECT m.external_id, COUNT(*) FROM attachments a "
                "JOIN messages m ON m.id = a.message_id "
                "WHERE a.status = 'stored' GROUP BY m.external_id"
            )
        }


def queued_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND status = 'queued'"
        ).fetchone()
    return int(row[0])


async def baseline_media(server: MediaServer, count: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            async with gate, session.get(f"http://127.0.0.1:{server.port}/media/{n}") as resp:
                assert resp.status == 200
                await resp.read()

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - began)


def baseline_sends(fake_url: str, sid: str, token: str, count: int, concurrency: int) -> float:
    sender = TwilioSender(sid, token, fake_url)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(
            pool.map(
                lambda i: sender.send(from_=SMS_NUMBER, to="+14155550100", body=f"b{i}"),
                range(count),
            )
        )
    sender.close()
    return count / (time.perf_counter() - began)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="optmsg-bench-mms-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        env = dict(os.environ)
        async with MediaServer("127.0.0.1") as media:
            base_media = await baseline_media(
                media, args.messages * MEDIA_PER_MESSAGE, args.concurrency
            )
            env.update(
                OPTMSG_CONFIG=str(tmp / "optmsg.toml"),
                OPTMSG_HTTP__LISTEN=f"127.0.0.1:{port}",
                OPTMSG_HTTP__PUBLIC_URL=f"http://127.0.0.1:{port}",
                OPTMSG_DATABASE__URL=f"sqlite:///{tmp / 'optmsg.db'}",
                OPTMSG_STORAGE__BLOB_DIR=str(tmp / "blobs"),
                OPTMSG_SMTP__ENABLED="false",
                OPTMSG_BRIDGES__TWILIO__MEDIA_HOSTS='["127.0.0.1"]',
                OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_HTTP="true",
                OPTMSG_BRIDGES__TWILIO__MEDIA_ALLOW_PRIVATE="true",
            )
            run([str(OPTMSG), "dev", "init", "--path", env["OPTMSG_CONFIG"]], env, tmp)
            os.environ.update({k: v for k, v in env.items() if k.startswith("OPTMSG_")})
            settings = load_settings()
            sid = settings.bridges.twilio.account_sid
            token = settings.bridges.twilio.auth_token.get_secret_value()
            async with FakeTwilio(sid, token) as fake:
                env["OPTMSG_BRIDGES__TWILIO__API_BASE_URL"] = fake.base_url
                user = json.loads(
                    run(
                        [str(OPTMSG), "users", "create", "--json", "--first-name", "A",
                         "--last-name", "B", "--dob", "1990-01-01", "--phone", "+442079460958",
                         "--sms-number", SMS_NUMBER],
                        env, tmp,
                    )
                )  # fmt: skip
                api_token = json.loads(
                    run([str(OPTMSG), "tokens", "create", user["id"], "--json"], env, tmp)
                )["token"]
                proc = subprocess.Popen(
                    [str(OPTMSG), "serve"],
                    env=env,
                    cwd=tmp,
                    stdout=subprocess.PIPE,
                    stderr=open(tmp / "serve.err", "wb"),  # noqa: SIM115 - lives with proc
                )
                assert proc.stdout is not None
                proc.stdout.readline()  # "optmsg: listening on ..."
                try:
                    media_result = await _media_run(args, port, media, sid, token, tmp)
                    base_sends = await asyncio.to_thread(
                        baseline_sends, fake.base_url, sid, token, args.sends, args.concurrency
                    )
                    fake.created.clear()
                    sends = await _send_run(args, port, api_token, tmp)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
    return {
        "baseline_media_per_s": base_media,
        **media_result,
        "baseline_sends_per_s": base_sends,
        "sends_per_s": sends,
    }


async def _media_run(
    args: argparse.Namespace, port: int, media: MediaServer, sid: str, token: str, tmp: Path
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/bridges/twilio/sms"
    gate = asyncio.Semaphore(args.concurrency)
    posted: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            message_sid = f"MM{i:032x}"
            form = {
                "MessageSid": message_sid, "AccountSid": sid, "From": "+14155550100",
                "To": SMS_NUMBER, "Body": f"picture {i}", "NumMedia": str(MEDIA_PER_MESSAGE),
            }  # fmt: skip
            for k in range(MEDIA_PER_MESSAGE):
                n = 100_000 + i * MEDIA_PER_MESSAGE + k
                form[f"MediaUrl{k}"] = f"http://127.0.0.1:{media.port}/media/{n}"
                form[f"MediaContentType{k}"] = "image/jpeg"
            headers = {
                "X-Twilio-Signature": sign(url, list(form.items()), token),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            async with gate:
                posted[message_sid] = time.perf_counter()
                async with session.post(url, data=urlencode(form), headers=headers) as resp:
                    assert resp.status == 200, await resp.text()

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.messages)))
    done: dict[str, float] = {}
    deadline = time.perf_counter() + 300
    while len(done) < args.messages and time.perf_counter() < deadline:
        now = time.perf_counter()
        for message_sid, n in stored_by_message(tmp / "optmsg.db").items():
            if n == MEDIA_PER_MESSAGE and message_sid not in done:
                done[message_sid] = now
        await asyncio.sleep(0.02)
    if len(done) < args.messages:
        raise SystemExit(f"only {len(done)} of {args.messages} messages got all media stored")
    total = max(done.values()) - began
    latencies = [(done[s] - posted[s]) * 1000 for s in done]
    return {
        "media_per_s": args.messages * MEDIA_PER_MESSAGE / total,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
    }


async def _send_run(args: argparse.Namespace, port: int, api_token: str, tmp: Path) -> float:
    url = f"http://127.0.0.1:{port}/api/v1/messages"
    gate = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {api_token}"}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with (
                gate,
                session.post(
                    url, json={"to": "+14155550100", "text": f"hello {i}"}, headers=headers
                ) as resp,
            ):
                assert resp.status == 202, await resp.text()

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.sends)))
    deadline = time.perf_counter() + 300
    while queued_count(tmp / "optmsg.db") < args.sends and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
    if queued_count(tmp / "optmsg.db") < args.sends:
        raise SystemExit("not every message was handed to the fake Twilio")
    return args.sends / (time.perf_counter() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    started = datetime.now(UTC)
    r = asyncio.run(bench(args))
    text = "\n".join(
        [
            f"## {started:%Y-%m-%d %H:%M} UTC: MMS media ingest and outbound SMS",
            "",
            f"- machine: {len(os.sched_getaffinity(0))} CPUs, Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
            f"- command: `{command()}`",
            f"- load: {args.messages} signed MMS webhooks with {MEDIA_PER_MESSAGE} media "
            f"(~2.5 KB each) and {args.sends} API sends, {args.concurrency} at a time; "
            "fakes on 127.0.0.1 in the benchmark process; `optmsg serve` with SQLite and "
            "its in-process dramatiq worker (8 threads)",
            "",
            "| path | baseline /s | optmsg serve /s | ratio | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
            f"| media stored (webhook → all 3 media in the blob store) | "
            f"{r['baseline_media_per_s']:,.0f} | {r['media_per_s']:,.0f} | "
            f"{r['media_per_s'] / r['baseline_media_per_s']:.1%} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} |",
            f"| SMS sends (API → handed to Twilio) | {r['baseline_sends_per_s']:,.0f} | "
            f"{r['sends_per_s']:,.0f} | {r['sends_per_s'] / r['baseline_sends_per_s']:.1%} "
            "| - | - |",
            "",
            "- baselines: media fetched straight from the fake with aiohttp; sends made "
            "straight with the same twilio-package sender from 20 threads",
            "",
        ]
    )
    print(text)
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
