"""Chaos at full scale: 2 gateways + 2 workers on PostgreSQL + Redis, killed under load.

One invocation (issue #8, "Chaos and load") sets up a cluster (tests/e2e/cluster.py)
on its own PostgreSQL database (``chaos_<random>``, dropped afterwards) and a private
redis-server, then sends 20,000 signed SMS webhooks, 2,000 MMS webhooks with 2 media
each (fetched from a local fake media host) and 5,000 emails over SMTP, spread over
the gateways and resent until acknowledged. Meanwhile it ``kill -9``s gateway 0 (at
10 % acknowledged), worker 0 (30 %) and restarts Redis (50 %), each back after a
pause. It then waits (bounded) until every acknowledged message and every attachment
is stored and prints: lost, duplicated and unexpected messages, attachment problems,
throughput, and the time from the last fault to a consistent database. Appends a
dated section to docs/benchmarks.md (unless --no-doc). Exit status 1 when the run is
invalid or found a lost or duplicated message.

Usage: .venv/bin/python bench/chaos.py [--sms 20000 --mms 2000 --emails 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook import DOC, DOC_HEADER, command  # noqa: E402

from tests.e2e.cluster import (  # noqa: E402
    DEFAULT_FAULTS,
    ChaosResult,
    Cluster,
    ClusterError,
    Scale,
    create_pg_database,
    drop_pg_database,
    run_chaos,
)

PG_ADMIN_URL = os.environ.get("OPTMSG_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def sweeper_settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "OPTMSG_WORKER__SWEEP_INTERVAL_S": f"{args.sweep_interval:g}",
        "OPTMSG_WORKER__SWEEP_GRACE_S": f"{args.sweep_grace:g}",
        "OPTMSG_BRIDGES__TWILIO__MEDIA_TIMEOUT_S": f"{args.media_timeout:g}",
    }


def report(r: ChaosResult, args: argparse.Namespace, started: datetime) -> str:
    lost = sum(len(keys) for keys in r.verdict.lost.values())
    bound = args.sweep_interval + 2 * args.media_timeout + args.sweep_grace
    faults = "; ".join(
        f"{f.target} at {f.acknowledged_before:,} acknowledged ({f.fetches_in_flight} media "
        f"fetches in flight), back after {f.back_at - f.injected_at:.1f} s"
        for f in r.faults
    )
    rows = [
        ("messages sent (SMS / MMS / email)", f"{r.scale.sms:,} / {r.scale.mms:,} / "
         f"{r.scale.emails:,} ({r.scale.mms * r.scale.media_per_mms:,} media)"),
        ("acknowledged", f"{r.acknowledged:,} in {r.load_seconds:.1f} s "
         f"({r.acknowledged / r.load_seconds:,.0f} msg/s through the faults)"),
        ("failed attempts, resent", ", ".join(
            f"{kind} {n:,}" for kind, n in sorted(r.ledger.failed_attempts.items()))),
        ("refused (4xx/5xx that ended a message)", f"{len(r.ledger.refused)}"),
        ("acknowledged but not stored", f"{lost}"),
        ("stored more than once", f"{len(r.verdict.duplicated)}"),
        ("stored but never sent", f"{len(r.verdict.unexpected)}"),
        ("attachment problems (missing, pending, wrong bytes, blob absent, twice)",
         f"{len(r.verdict.attachment_problems)}"),
        ("media fetches (for the media sent)", f"{r.media_requests:,} "
         f"({r.scale.mms * r.scale.media_per_mms:,})"),
        ("blob temp files left by killed writes", f"{r.blob_temp_files}"),
        ("consistent (every message and attachment stored)", "yes" if r.consistent else
         f"NO (gave up after {args.settle_timeout:g} s)"),
        ("last fault -> consistent", f"{r.recovery_seconds:.1f} s"),
        ("last acknowledgement -> consistent", f"{r.after_load_seconds:.1f} s"),
    ]  # fmt: skip
    table = "\n".join(
        ["| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    )
    return f"""
## {started:%Y-%m-%d %H:%M} UTC: chaos at full scale (#8)

- machine: {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}, \
Linux {platform.release()}; PostgreSQL 127.0.0.1 (own database), private redis-server \
without persistence; everything (load generator included) on the same machine
- command: `{command()}`
- cluster: {r.gateways} gateways (`optmsg serve --no-worker`), {r.workers} `optmsg worker`, \
one blob directory; `worker.sweep_interval_s = {args.sweep_interval:g}`, \
`worker.sweep_grace_s = {args.sweep_grace:g}`, \
`bridges.twilio.media_timeout_s = {args.media_timeout:g}` (media lost with Redis are \
found again within {bound:g} s; defaults 60 / 60 / 30: 180 s)
- load: Python clients, {args.connections} concurrent webhook posts and \
{args.smtp_clients} SMTP connections spread round-robin over the gateways, every \
message resent (to the next gateway) until acknowledged; media host answers each \
media after {args.media_delay:g} s
- faults: {faults}

{table}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sms", type=int, default=20_000)
    parser.add_argument("--mms", type=int, default=2_000)
    parser.add_argument("--media-per-mms", type=int, default=2)
    parser.add_argument("--emails", type=int, default=5_000)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--smtp-clients", type=int, default=8)
    parser.add_argument("--media-delay", type=float, default=0.05)
    parser.add_argument("--sweep-interval", type=float, default=5.0)
    parser.add_argument("--sweep-grace", type=float, default=5.0)
    parser.add_argument("--media-timeout", type=float, default=10.0)
    parser.add_argument("--load-timeout", type=float, default=300.0)
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    scale = Scale(args.sms, args.mms, args.media_per_mms, args.emails)
    started = datetime.now(UTC)
    try:
        url = create_pg_database(PG_ADMIN_URL)
    except ClusterError as exc:
        print(f"chaos.py: {exc}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="optmsg-bench-chaos-") as tmp:
            cluster = Cluster(
                Path(tmp), url, gateways=args.gateways, workers=args.workers,
                settings=sweeper_settings(args),
            )  # fmt: skip
            try:
                cluster.set_up()
                cluster.start()
                print(f"sending {scale.total:,} messages through the faults ...", flush=True)
                result = asyncio.run(
                    run_chaos(
                        cluster, scale, faults=DEFAULT_FAULTS,
                        connections=args.connections, smtp_clients=args.smtp_clients,
                        media_delay_s=args.media_delay, load_timeout_s=args.load_timeout,
                        settle_timeout_s=args.settle_timeout,
                    )
                )  # fmt: skip
            finally:
                cluster.stop()
    except ClusterError as exc:
        print(f"chaos.py: INVALID RUN: {exc}", file=sys.stderr)
        return 1
    finally:
        drop_pg_database(PG_ADMIN_URL, url)
    print(result.summary())
    text = report(result, args, started)
    print(text)
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write(text)
    clean = result.verdict.clean and result.consistent and not result.ledger.refused
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
