"""Scale-out: signed SMS webhook throughput on PostgreSQL with 1 and with 2 gateways.

One invocation sets up the cluster of tests/e2e/cluster.py without workers (its own
PostgreSQL database ``chaos_<random>``, dropped afterwards; a private redis-server)
and loads it with the pre-signed, unique Twilio inbound-SMS requests of
bench/webhook.py through the same load generator in both runs: two wrk processes
(bench/webhook.lua, one thread and half the connections each).

(1) one ``optmsg serve --no-worker``: both wrk processes send to it.
(2) two of them: each wrk process sends to its own gateway.

The two alternate for ``--rounds`` rounds (the ratio is of the medians), so that a
change in the rest of the machine's load hits both alike.

After each run it checks that PostgreSQL holds one new row per 200 (plus at most
the requests in flight when wrk stopped), prints a table with the CPU each part
used and the ratio (2)/(1), and appends a dated section to docs/benchmarks.md
(unless --no-doc). The machine has 2 cores: the gateways, PostgreSQL, Redis and wrk
all share them (nothing is pinned), so the table says where the CPU went.

Usage: .venv/bin/python bench/scaleout.py [--duration 8] [--warmup 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook import (  # noqa: E402
    BENCH,
    DOC,
    DOC_HEADER,
    BenchError,
    WrkResult,
    children_cpu,
    command,
    machine,
    machine_cpu,
    parse_wrk,
    process_cpu,
    write_requests,
)

from tests.e2e.cluster import (  # noqa: E402
    PUBLIC_URL,
    SMS_PATH,
    Cluster,
    ClusterError,
    Managed,
    create_pg_database,
    drop_pg_database,
)

PG_ADMIN_URL = os.environ.get("OPTMSG_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
LOADERS = 2  # wrk processes, in both runs


@dataclass(frozen=True)
class Run:
    gateways: int
    loaders: list[WrkResult]
    seconds: float
    rows: int
    cpu: dict[str, float]  # cores: gateways, postgres (all of it), wrk, other

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.loaders)

    @property
    def rps(self) -> float:
        return sum(r.rps for r in self.loaders)

    @property
    def p99_ms(self) -> float:
        return max(r.p99_ms for r in self.loaders)

    @property
    def p50_ms(self) -> float:
        return max(r.p50_ms for r in self.loaders)


def count_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one())


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process now (backends, writer, WAL writer ...)."""
    used = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        if "(postgres)" in text:
            used[int(stat.parent.name)] = process_cpu(int(stat.parent.name))
    return used


def load(
    urls: list[str], prefixes: list[Path], seconds: float, connections: int, pids: list[int]
) -> tuple[list[WrkResult], dict[str, float]]:
    """Run one wrk process per URL at once; their results and the CPU used meanwhile."""
    commands = [
        ["wrk", "--latency", "--timeout", "10s", "-t", "1", "-c", str(connections // LOADERS),
         "-d", f"{seconds:g}s", "-s", str(BENCH / "webhook.lua"), url, "--", str(prefix)]
        for url, prefix in zip(urls, prefixes, strict=True)
    ]  # fmt: skip
    pg_before = postgres_cpu()
    start = (time.monotonic(), machine_cpu(), sum(map(process_cpu, pids)), children_cpu())
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    outputs = [p.communicate() for p in procs]
    end = (time.monotonic(), machine_cpu(), sum(map(process_cpu, pids)), children_cpu())
    pg_after = postgres_cpu()
    wall, busy, served, loaded = (b - a for a, b in zip(start, end, strict=True))
    # Backends that started during the run count from zero; ones that ended are missed.
    database = sum(used - pg_before.get(pid, 0.0) for pid, used in pg_after.items())
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise BenchError(f"wrk failed: {err.decode().strip()}")
        result = parse_wrk(out.decode())
        if result.non_2xx or any(result.socket_errors.values()) or result.wraps:
            raise BenchError(
                f"invalid wrk run: {result.non_2xx} non-2xx, socket errors "
                f"{result.socket_errors}, request file wrapped {result.wraps} times"
            )
        results.append(result)
    cpu = {
        "gateways": served / wall,
        "postgres": database / wall,
        "wrk": loaded / wall,
        "other": (busy - served - loaded - database) / wall,
    }
    return results, {k: round(v, 2) for k, v in cpu.items()}


def measure(
    cluster: Cluster,
    running: list[Managed],
    tmp: Path,
    args: argparse.Namespace,
    engine: sa.Engine,
    round_: int,
) -> Run:
    n = len(running)
    urls = [cluster.http_urls[i % n] for i in range(LOADERS)]
    pids = [p.pid for p in running]
    warm = [tmp / f"r{round_}g{n}-warm-{i}" for i in range(LOADERS)]
    measured = [tmp / f"r{round_}g{n}-run-{i}" for i in range(LOADERS)]
    load(urls, warm, args.warmup, args.connections, pids)
    time.sleep(1.0)  # the warm-up's last commits land before counting
    before = count_rows(engine)
    results, cpu = load(urls, measured, args.duration, args.connections, pids)
    time.sleep(1.0)
    rows = count_rows(engine) - before
    ok = sum(r.requests - r.non_2xx for r in results)
    # wrk stops counting while up to one request per connection is in flight.
    if not 0 <= rows - ok <= args.connections:
        raise BenchError(f"{n} gateway(s): {rows} rows stored for {ok} 200 responses")
    return Run(n, results, args.duration, rows, cpu)


def write_all_requests(tmp: Path, cluster: Cluster, args: argparse.Namespace) -> None:
    url = PUBLIC_URL + SMS_PATH
    jobs = []
    with ProcessPoolExecutor() as pool:
        for round_, gateways in itertools.product(range(args.rounds), (1, 2)):
            for phase, seconds in (("warm", args.warmup), ("run", args.duration)):
                for i in range(LOADERS):
                    jobs.append(
                        pool.submit(
                            write_requests,
                            # webhook.lua reads PREFIX-<thread>.http; one thread each.
                            tmp / f"r{round_}g{gateways}-{phase}-{i}-0.http",
                            math.ceil(args.max_rate * seconds),
                            url,
                            cluster.credentials.auth_token,
                            cluster.credentials.account_sid,
                            i % 2 == 0,
                        )
                    )
        for job in jobs:
            job.result()


def report(runs: list[Run], args: argparse.Namespace, started: datetime) -> str:
    info = machine()
    one = statistics.median(r.rps for r in runs if r.gateways == 1)
    two = statistics.median(r.rps for r in runs if r.gateways == 2)
    table = "\n".join(
        [
            "| gateway processes | req/s | p50 ms | p99 ms | requests | rows stored "
            "| gateway CPU per request "
            "| CPU cores: gateways / PostgreSQL (whole server) / wrk / other |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *(
                f"| {r.gateways} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
                f"| {r.requests:,} | {r.rows:,} | {r.cpu['gateways'] / r.rps * 1e6:,.0f} µs "
                f"| {r.cpu['gateways']:.2f} / "
                f"{r.cpu['postgres']:.2f} / {r.cpu['wrk']:.2f} / {r.cpu['other']:.2f} |"
                for r in runs
            ),
        ]
    )
    return f"""
## {started:%Y-%m-%d %H:%M} UTC: scale-out, 1 vs 2 gateway processes on PostgreSQL (#8)

- machine: {info["nproc"]} CPUs ({info["cpu"]}), Python {info["python"]}, \
Linux {info["kernel"]}, {info["wrk"]}; PostgreSQL on 127.0.0.1 (own database)
- command: `{command()}`
- load: the same in both runs: {LOADERS} wrk processes (1 thread, \
{args.connections // LOADERS} connections each), {args.warmup:g} s warm-up then \
{args.duration:g} s measured; unique signed 12-field Twilio SMS forms (bench/webhook.py's \
requests), half from a trusted sender. One gateway: both wrk processes send to it; two: \
one each. `optmsg serve --no-worker` with a private Redis; no core pinning: the \
gateways, PostgreSQL, Redis and wrk share the 2 cores (the CPU columns show the split; \
"other" includes whatever else ran on the machine)
- p50/p99: the higher of the two wrk processes' figures

{table}

- ratio 2/1 (medians of {args.rounds} alternating round(s), {one:,.0f} and \
{two:,.0f} req/s): {two / one:.2f}x
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--max-rate", type=int, default=5_000,
        help="req/s per wrk process the request files are sized for",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1/2-gateway runs")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        print("scaleout.py: needs wrk and redis-server on PATH", file=sys.stderr)
        return 1
    started = datetime.now(UTC)
    try:
        url = create_pg_database(PG_ADMIN_URL)
    except ClusterError as exc:
        print(f"scaleout.py: {exc}", file=sys.stderr)
        return 1
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    try:
        with tempfile.TemporaryDirectory(prefix="optmsg-bench-scaleout-") as name:
            tmp = Path(name)
            cluster = Cluster(
                tmp, url, gateways=2, workers=0, settings={"OPTMSG_SMTP__ENABLED": "false"}
            )
            try:
                cluster.set_up()
                print("signing requests ...", flush=True)
                write_all_requests(tmp, cluster, args)
                cluster.gateways[0].start()
                runs = []
                # Alternating, so that a change in the machine's other load (it is
                # shared) hits both configurations alike.
                for round_ in range(args.rounds):
                    print(f"round {round_ + 1}: one gateway ...", flush=True)
                    cluster.gateways[1].stop()
                    runs.append(measure(cluster, cluster.gateways[:1], tmp, args, engine, round_))
                    print(f"round {round_ + 1}: two gateways ...", flush=True)
                    cluster.gateways[1].start()
                    runs.append(measure(cluster, cluster.gateways, tmp, args, engine, round_))
            finally:
                cluster.stop()
    except (ClusterError, BenchError) as exc:
        print(f"scaleout.py: INVALID RUN: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
        drop_pg_database(PG_ADMIN_URL, url)
    text = report(runs, args, started)
    print(text)
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
