"""Signed SMS webhook throughput: the gateway against a bare aiohttp form parser.

One invocation loads (a) bench/bare_server.py and (b) ``optmsg serve`` (SQLite in a
temp dir) with the same pre-signed, unique 12-field Twilio inbound-SMS forms through
wrk (bench/webhook.lua), then checks that (b) stored one row per 200 it answered,
prints a table, appends a dated section to docs/benchmarks.md and writes the raw
figures to bench/results/. Target: (b) >= 50% of (a)'s req/s, p99 <= 25 ms at 50
connections. Exit status 1 when a run is invalid (non-2xx, socket errors, reused
MessageSids, row count off); with --strict also 3 when a target is missed.

Usage: .venv/bin/python bench/webhook.py [--duration 15] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from config import load_settings
from gateway.devtools import inbound_sms_form, sign

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
OPTMSG = Path(sys.executable).parent / "optmsg"
SMS_PATH = "/bridges/twilio/sms"
SMS_NUMBER = "+14155550199"
TRUSTED = "+14155550100"
STRANGER = "+14155550101"
TARGET_RATIO = 0.50
TARGET_P99_MS = 25.0
BUSY_CORES = 0.2  # CPU used by other processes during a run above which it is flagged
DOC_HEADER = """# Benchmarks

Sections are appended by the scripts in bench/ (`make bench`), newest last. Each
compares the gateway with a bare baseline measured in the same run, on the same machine.
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    wraps: int
    # CPU used while wrk ran, in cores: the server, wrk itself, and everything else on the
    # machine (other work competing for the same cores makes the figures meaningless).
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RowCheck:
    rows: int
    ok_responses: int
    by_folder: dict[str, int]
    tolerance: int


class BenchError(Exception):
    """The run is invalid (not merely slow)."""


# --- requests ------------------------------------------------------------------------------


def write_requests(
    path: Path, count: int, url: str, token: str, account_sid: str, trusted_first: bool
) -> None:
    """``count`` raw HTTP requests for webhook.lua, each followed by a NUL byte, each
    with a fresh MessageSid; alternate requests come from the trusted sender."""
    parts = urlsplit(url)
    with open(path, "w", encoding="ascii", newline="") as out:
        for i in range(count):
            sid = "SM" + secrets.token_hex(16)
            params = inbound_sms_form(
                sid=sid,
                sender=TRUSTED if (i % 2 == 0) == trusted_first else STRANGER,
                to=SMS_NUMBER,
                body=f"bench message {i} from {path.name}",
                account_sid=account_sid,
            )
            body = urlencode(params)
            out.write(
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {sign(url, params, token)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}\0"
            )


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], env: Mapping[str, str], cwd: Path) -> str:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def server(
    cmd: list[str], ready: str, log_dir: Path, name: str, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, wait for a stdout line starting with ``ready``, stop it (SIGTERM) after."""
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=log_dir)
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith(ready) for line in out.read_text().splitlines()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name} did not start (exit {proc.poll()}):\n{tail(err)}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- wrk -----------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([a-z]+)", text)
    if match is None or match[2] not in _UNITS_MS:
        raise BenchError(f"wrk printed a duration this script does not know: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def _seconds(text: str) -> float:
    return _ms(text) / 1000.0


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in ([\d.]+\w+),")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(total[1]),
        seconds=_seconds(total[2]),
        rps=float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")[1]),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors={n: int(v) for n, v in zip(names, errors.groups(), strict=True)}
        if errors
        else dict.fromkeys(names, 0),
        wraps=int(find(r"^webhook\.lua: wraps (\d+)")[1]),
    )


_TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """Busy CPU seconds over all CPUs since boot (/proc/stat: all but idle and iowait)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    url: str, prefix: Path, seconds: float, args: argparse.Namespace, label: str, server_pid: int
) -> WrkResult:
    cmd = [
        "wrk", "--latency", "--timeout", "10s",
        "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s",
        "-s", str(BENCH / "webhook.lua"), url, "--", str(prefix),
    ]  # fmt: skip
    start = (time.monotonic(), machine_cpu(), process_cpu(server_pid), children_cpu())
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    end = (time.monotonic(), machine_cpu(), process_cpu(server_pid), children_cpu())
    if done.returncode != 0:
        raise BenchError(f"wrk failed for {label}: {done.stderr.strip()}")
    wall, busy, served, loaded = (b - a for a, b in zip(start, end, strict=True))
    cpu = {"server": served / wall, "wrk": loaded / wall, "other": (busy - served - loaded) / wall}
    result = replace(parse_wrk(done.stdout), cpu={k: round(v, 2) for k, v in cpu.items()})
    problems = []
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx responses")
    if any(result.socket_errors.values()):
        problems.append(f"socket errors {result.socket_errors}")
    if result.wraps:
        problems.append(f"request file wrapped {result.wraps} time(s): raise --max-rate")
    if problems:
        raise BenchError(f"{label}: {'; '.join(problems)}\n{done.stdout}")
    return result


# --- the two servers -----------------------------------------------------------------------


def bench_bare(tmp: Path, port: int, args: argparse.Namespace) -> WrkResult:
    cmd = [sys.executable, str(BENCH / "bare_server.py"), "127.0.0.1", str(port)]
    with server(cmd, "bare: listening on", tmp, "bare") as proc:
        url = f"http://127.0.0.1:{port}{SMS_PATH}"
        wrk(url, tmp / "warm", args.warmup, args, "(a) warm-up", proc.pid)
        return wrk(url, tmp / "run", args.duration, args, "(a) bare aiohttp", proc.pid)


def bench_verify_only(
    tmp: Path, env: Mapping[str, str], port: int, args: argparse.Namespace
) -> WrkResult:
    """--breakdown: the bare handler plus the gateway's own checks (TwilioBridge.verify_sms:
    form, signature, normalisation), storing nothing."""
    cmd = [sys.executable, str(BENCH / "bare_server.py"), "127.0.0.1", str(port), "--verify"]
    env = {**env, "PYTHONPATH": str(BENCH.parent)}
    with server(cmd, "bare: listening on", tmp, "verify-only", env) as proc:
        url = f"http://127.0.0.1:{port}{SMS_PATH}"
        wrk(url, tmp / "warm", args.warmup, args, "(a2) warm-up", proc.pid)
        result = wrk(url, tmp / "run", args.duration, args, "(a2) verify only", proc.pid)
    if result.non_2xx:
        raise BenchError(f"(a2) answered {result.non_2xx} requests with an error")
    return result


def count_rows(db: Path) -> tuple[int, dict[str, int]]:
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT folder, COUNT(*) FROM messages GROUP BY folder"))
    return sum(rows.values()), rows


def start_py_spy(
    exe: str, pid: int, out: Path, seconds: float, gil: bool
) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` into ``out`` (raw collapsed stacks, one line per stack)
    for ``seconds``; ``gil``: only samples of the thread holding the GIL."""
    cmd = [
        exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--full-filenames",
        "--rate", "200", "--duration", str(max(1, round(seconds))), "--output", str(out),
        *(["--gil"] if gil else []),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def bench_gateway(
    tmp: Path, env: Mapping[str, str], port: int, args: argparse.Namespace
) -> tuple[WrkResult, RowCheck]:
    db = tmp / "optmsg.db"
    with server([str(OPTMSG), "serve"], "optmsg: listening on", tmp, "gateway", env) as proc:
        url = f"http://127.0.0.1:{port}{SMS_PATH}"
        wrk(url, tmp / "warm", args.warmup, args, "(b) warm-up", proc.pid)
        time.sleep(1.0)  # let the warm-up's last commits land before counting
        before, warm_folders = count_rows(db)
        spy = None
        if args.profile:
            spy = start_py_spy("py-spy", proc.pid, args.profile.resolve(), args.duration, True)
        result = wrk(url, tmp / "run", args.duration, args, "(b) optmsg serve", proc.pid)
        if spy is not None:
            spy.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)  # a graceful stop commits whatever was submitted
        proc.wait(timeout=30)
    after, folders = count_rows(db)
    by_folder = {name: n - warm_folders.get(name, 0) for name, n in folders.items()}
    ok = result.requests - result.non_2xx
    # wrk stops counting at the deadline while up to one request per connection is in
    # flight; those are stored but never counted. Fewer rows than 200s is never fine.
    check = RowCheck(after - before, ok, by_folder, args.connections)
    if not 0 <= check.rows - ok <= check.tolerance:
        raise BenchError(f"(b) stored {check.rows} messages for {ok} 200 responses")
    return result, check


def gateway_env(tmp: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPTMSG_CONFIG=str(tmp / "optmsg.toml"),
        OPTMSG_HTTP__LISTEN=f"127.0.0.1:{port}",
        OPTMSG_HTTP__PUBLIC_URL=f"http://127.0.0.1:{port}",
        OPTMSG_DATABASE__URL=f"sqlite:///{tmp / 'optmsg.db'}",
        OPTMSG_STORAGE__BLOB_DIR=str(tmp / "blobs"),
        # This benchmark measures webhooks only.
        OPTMSG_SMTP__ENABLED="false",
        # Every load generator here is one client IP (127.0.0.1) and a few senders:
        # the per-IP and per-sender limits stay on (their cost is measured) but are
        # never reached, so that the ordinary path is what is measured.
        OPTMSG_LIMITS__API_REQUESTS_PER_IP="10000000",
        OPTMSG_LIMITS__SENDER_MESSAGES="1000000",
    )
    return env


def prepare_gateway(tmp: Path, env: Mapping[str, str]) -> str:
    """Config with fresh secrets, one user, one trusted sender (the other sender is
    not); returns the user's id."""
    run([str(OPTMSG), "dev", "init", "--path", env["OPTMSG_CONFIG"]], env, tmp)
    user = json.loads(
        run(
            [
                str(OPTMSG), "users", "create", "--json", "--first-name", "A", "--last-name", "B",
                "--dob", "1990-01-01", "--phone", "+442079460958", "--sms-number", SMS_NUMBER,
            ],
            env,
            tmp,
        )
    )  # fmt: skip
    run([str(OPTMSG), "optin", "add", user["id"], TRUSTED], env, tmp)
    return str(user["id"])


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": (wrk_version.stdout or wrk_version.stderr).split(" [")[0],
    }


def command() -> str:
    exe = Path(sys.executable)
    shown = exe.relative_to(Path.cwd()) if exe.is_relative_to(Path.cwd()) else exe
    return shlex.join([str(shown), *sys.argv])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    a: WrkResult,
    b: WrkResult,
    rows: RowCheck,
    args: argparse.Namespace,
    started: datetime,
    a2: WrkResult | None = None,
) -> tuple[str, bool]:
    ratio = b.rps / a.rps
    met = ratio >= TARGET_RATIO and b.p99_ms <= TARGET_P99_MS
    info = machine()
    folders = ", ".join(f"{name} {n}" for name, n in sorted(rows.by_folder.items()))
    servers = [("(a) bare aiohttp form parse", a), ("(b) optmsg serve", b)]
    breakdown = ""
    if a2 is not None:
        servers.insert(1, ("(a2) bare + the gateway's verify_sms, nothing stored", a2))
        runs = (("a", a), ("a2", a2), ("b", b))
        per_request = {k: r.cpu["server"] / r.rps * 1e6 for k, r in runs}
        breakdown = (
            f"- breakdown: (a2)/(a) {a2.rps / a.rps:.1%}, (b)/(a2) {b.rps / a2.rps:.1%}; "
            f"CPU per request beyond (a): verification "
            f"{per_request['a2'] - per_request['a']:,.0f} µs, "
            f"the rest of (b) {per_request['b'] - per_request['a2']:,.0f} µs\n"
        )
    table = "\n".join(
        [
            "| server | req/s | p50 ms | p99 ms | requests | non-2xx | server CPU per request "
            "| CPU cores: server / wrk / other |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *(
                f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.requests:,} "
                f"| {r.non_2xx} | {r.cpu['server'] / r.rps * 1e6:,.0f} µs "
                f"| {r.cpu['server']:.2f} / {r.cpu['wrk']:.2f} / {r.cpu['other']:.2f} |"
                for name, r in servers
            ),
        ]
    )
    busy = max(a.cpu["other"], b.cpu["other"])
    warning = (
        f"\n**Warning: other processes used up to {busy:.2f} CPU cores during the runs; "
        "the figures are depressed and noisy. Rerun on a quiet machine.**\n"
        if busy > BUSY_CORES
        else ""
    )
    text = f"""
## {started:%Y-%m-%d %H:%M} UTC: signed SMS webhook throughput

- machine: {info["nproc"]} CPUs ({info["cpu"]}), Python {info["python"]}, \
Linux {info["kernel"]}, SQLite {info["sqlite"]}, {info["wrk"]}
- command: `{command()}`
- load: wrk on 127.0.0.1 (same machine), {args.threads} threads, {args.connections} \
connections, {args.warmup:g} s warm-up then {args.duration:g} s measured per server; \
every request a unique, signed 12-field Twilio SMS form, half from a trusted sender
- (b) is `optmsg serve` with SQLite in a temp dir; rows stored during the measured \
run: {rows.rows:,} ({folders}) for {rows.ok_responses:,} 200 responses counted by wrk \
(at most {rows.tolerance} more allowed: requests in flight when wrk stopped)

{table}

- ratio b/a: {ratio:.1%}
{breakdown}- target (b) >= {TARGET_RATIO:.0%} of (a): {verdict(ratio >= TARGET_RATIO)}
- target (b) p99 <= {TARGET_P99_MS:g} ms at {args.connections} connections: \
{verdict(b.p99_ms <= TARGET_P99_MS)}
{warning}"""
    return text, met


def publish(kind: str, raw: dict[str, Any], text: str, started: datetime, *, no_doc: bool) -> None:
    """Write the raw results to bench/results/ and append the report to the doc."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{kind}-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    if not no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write(text)
    print(
        f"raw results: {out.relative_to(ROOT)}"
        + ("" if no_doc else f"; appended to {DOC.relative_to(ROOT)}")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-rate", type=int, default=20_000,
        help="req/s the request files are sized for (a run that would reuse one fails)",
    )  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument(
        "--profile", type=Path, metavar="FILE",
        help="sample (b) with py-spy (GIL holder only) during its measured run into FILE, "
        "collapsed stacks; the figures then include py-spy's cost",
    )  # fmt: skip
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also measure (a2): the bare handler plus the gateway's verify_sms, storing nothing",
    )  # fmt: skip
    args = parser.parse_args()
    if args.profile and shutil.which("py-spy") is None:
        print("webhook.py: --profile needs py-spy on PATH (pip install py-spy)", file=sys.stderr)
        return 1
    if shutil.which("wrk") is None:
        print(
            "webhook.py: wrk is not installed; install it with `sudo apt-get install -y wrk`\n"
            "(Debian/Ubuntu) or `brew install wrk` (macOS), then run `make bench` again.",
            file=sys.stderr,
        )
        return 1
    # Hermetic: the gateway and the signing below see only the temp config and our overrides.
    for name in [name for name in os.environ if name.startswith("OPTMSG_")]:
        del os.environ[name]
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="optmsg-bench-") as name:
        tmp = Path(name)
        # (a) then (b) listen on this one port in turn, so that both get byte-identical
        # requests (the Host header and the signed URL are part of them).
        port = free_port()
        env = gateway_env(tmp, port)
        try:
            prepare_gateway(tmp, env)
            tw = load_settings(env["OPTMSG_CONFIG"]).bridges.twilio
            url = f"{env['OPTMSG_HTTP__PUBLIC_URL']}{SMS_PATH}"
            print(f"signing requests for up to {args.max_rate:,} req/s ...", flush=True)
            token = tw.auth_token.get_secret_value()
            with ProcessPoolExecutor() as pool:
                jobs = [
                    pool.submit(
                        write_requests,
                        tmp / f"{phase}-{thread}.http",
                        math.ceil(args.max_rate * seconds / args.threads),
                        url,
                        token,
                        tw.account_sid,
                        thread % 2 == 0,
                    )
                    for phase, seconds in (("warm", args.warmup), ("run", args.duration))
                    for thread in range(args.threads)
                ]
                for job in jobs:
                    job.result()
            print("(a) bare aiohttp ...", flush=True)
            a = bench_bare(tmp, port, args)
            a2 = None
            if args.breakdown:
                print("(a2) bare + verify_sms ...", flush=True)
                a2 = bench_verify_only(tmp, env, port, args)
            print("(b) optmsg serve ...", flush=True)
            b, rows = bench_gateway(tmp, env, port, args)
        except BenchError as exc:
            print(f"webhook.py: INVALID RUN: {exc}", file=sys.stderr)
            for log in sorted(tmp.glob("*.err")):
                print(f"--- {log.name} (last lines)\n{tail(log)}", file=sys.stderr)
            return 1
    text, met = report(a, b, rows, args, started, a2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    raw = {
        "started": started.isoformat(),
        "command": command(),
        "machine": machine(),
        "settings": vars(args),
        "bare": asdict(a),
        "verify_only": asdict(a2) if a2 is not None else None,
        "gateway": asdict(b),
        "rows": asdict(rows),
        "ratio": b.rps / a.rps,
        "targets_met": met,
    }
    publish("webhook", raw, text, started, no_doc=args.no_doc)
    return 3 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
