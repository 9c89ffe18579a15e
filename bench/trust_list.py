"""The opt-in filter at size: decide() + trust lookup with a big trust list and address
book, and a screener Allow of a sender with many held messages.

One invocation, on SQLite files in a temp dir:

1. Per-message cost of routing, trust lookup and decide() (the ingest pipeline's work
   before the insert, in write transactions of ``--batch`` messages as the group
   committer runs them) for a user with an empty trust list (baseline) and for a user
   with ``--entries`` trust entries and ``--contacts`` contacts; reported in µs per
   message and as a ratio, so that the figure says whether a big list costs anything.
   Both runs interleave (ABAB...) and the best of ``--rounds`` is kept, because this
   machine is shared.
2. The whole pipeline (insert included) per message, same two users, as above.
3. Allow (and its undo) of one sender with ``--held`` held messages: target < 1 s.

Prints a table and appends a dated section to docs/benchmarks.md (unless --no-doc).
Exit 3 with --strict when the Allow target is missed.

Usage: .venv/bin/python bench/trust_list.py [--entries 10000] [--contacts 10000] [--held 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook import DOC, DOC_HEADER, command  # noqa: E402

from config.settings import DatabaseSettings  # noqa: E402
from gateway.pipeline import IngestPipeline  # noqa: E402
from inbox import store  # noqa: E402
from inbox.addresses import E164  # noqa: E402
from inbox.db import Database, open_database  # noqa: E402
from inbox.ingest_store import (  # noqa: E402
    NewMessage,
    insert_messages,
    lookup_routes,
    lookup_trust,
)
from inbox.message import Channel, Inbound  # noqa: E402
from inbox.migrate import upgrade  # noqa: E402
from inbox.models import contacts_t, trust_entries_t  # noqa: E402
from optin import screener  # noqa: E402
from optin.decide import Policy, TrustVerdict, decide  # noqa: E402

BIG_NUMBER = "+14155550199"
EMPTY_NUMBER = "+14155550198"
SENDER_PREFIX = "+1628555"  # 10,000 distinct valid-looking senders


def sender(i: int) -> str:
    return f"{SENDER_PREFIX}{i % 10_000:04d}"


def make_db(path: Path) -> Database:
    db = open_database(DatabaseSettings(url=f"sqlite:///{path}"))
    upgrade(db)
    return db


def make_user(db: Database, phone: str, sms: str) -> str:
    user = store.create_user(
        db,
        first_name="Bench",
        last_name="User",
        date_of_birth=datetime(1990, 1, 1).date(),
        phone=E164(phone),
        sms_number=E164(sms),
    )
    return user.id


def fill(db: Database, user_id: str, entries: int, contacts: int) -> None:
    now = datetime.now(UTC)
    with db.write.begin() as conn:
        conn.execute(
            trust_entries_t.insert(),
            [
                {
                    "user_id": user_id,
                    "address": f"+1212555{i:04d}" if i < 10_000 else f"u{i}@example.com",
                    "verdict": "trusted" if i % 10 else "blocked",
                    "source": "contacts",
                    "created_at": now,
                }
                for i in range(entries)
            ],
        )
        conn.execute(
            contacts_t.insert(),
            [
                {
                    "id": f"con_{i:032x}",
                    "user_id": user_id,
                    "name": f"Contact {i}",
                    "phones": f'["+1212555{i % 10_000:04d}"]',
                    "emails": "[]",
                    "created_at": now,
                }
                for i in range(contacts)
            ],
        )
        # Half of the benchmark's senders are trusted, as in the webhook benchmark.
        conn.execute(
            trust_entries_t.insert(),
            [
                {
                    "user_id": user_id,
                    "address": sender(i),
                    "verdict": "trusted",
                    "source": "manual",
                    "created_at": now,
                }
                for i in range(0, 10_000, 2)
            ],
        )


def inbound(i: int, to: str) -> Inbound:
    return Inbound(
        bridge="twilio",
        external_id=f"SM{to[-2:]}{i:012d}",
        channel=Channel.SMS,
        sender=E164(sender(i)),
        recipient=E164(to),
        text=f"bench message {i}",
        received_at=datetime.now(UTC),
    )


def time_batches(
    db: Database, to: str, work: Callable[..., Any], start: int, count: int, batch: int
) -> float:
    """µs per message of ``work(conn, batch)`` over ``count`` messages."""
    pipeline = IngestPipeline(Policy())
    total = 0.0
    for offset in range(start, start + count, batch):
        items = [inbound(i, to) for i in range(offset, offset + batch)]
        with db.write.begin() as conn:
            began = time.perf_counter()
            work(pipeline, conn, items)
            total += time.perf_counter() - began
    return total / count * 1e6


def decide_only(pipeline: IngestPipeline, conn: sa.Connection, items: list[Inbound]) -> None:
    # The pipeline's routing, trust lookup and decision without the insert: the
    # insert is the same whatever the trust list holds.
    routes = lookup_routes(conn, (m.recipient for m in items))
    trust = lookup_trust(conn, ((routes[m.recipient], m.sender) for m in items))
    for m in items:
        entry = trust.get((routes[m.recipient], m.sender))
        decide(m.sender, TrustVerdict(entry) if entry else None, None, pipeline.policy)


def whole_pipeline(pipeline: IngestPipeline, conn: sa.Connection, items: list[Inbound]) -> None:
    pipeline.process(conn, items)


def held_messages(db: Database, user_id: str, count: int) -> None:
    rows = [
        NewMessage(
            user_id,
            Inbound(
                bridge="twilio",
                external_id=f"SMheld{i:010d}",
                channel=Channel.SMS,
                sender=E164("+16505550000"),
                recipient=E164(BIG_NUMBER),
                text=f"held message {i}",
                received_at=datetime.now(UTC),
            ),
            "quarantine",
            "unknown sender: not on your trusted list",
        )
        for i in range(count)
    ]
    with db.write.begin() as conn:
        insert_messages(conn, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=4_000, help="per round and user")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="optmsg-bench-optin-") as tmp:
        db = make_db(Path(tmp) / "optin.db")
        big = make_user(db, "+442079460958", BIG_NUMBER)
        make_user(db, "+442079460959", EMPTY_NUMBER)  # the baseline: no entries
        fill(db, big, args.entries, args.contacts)
        results: dict[str, dict[str, float]] = {}
        for label, work in (
            ("route + trust lookup + decide", decide_only),
            ("whole pipeline", whole_pipeline),
        ):
            best = {"empty": float("inf"), "big": float("inf")}
            for r in range(args.rounds):
                start = (r + (0 if work is decide_only else args.rounds)) * args.messages
                for user, number in (("empty", EMPTY_NUMBER), ("big", BIG_NUMBER)):
                    us = time_batches(db, number, work, start, args.messages, args.batch)
                    best[user] = min(best[user], us)
            results[label] = best
        held_messages(db, big, args.held)
        began = time.perf_counter()
        decision = screener.allow(db, big, ["+16505550000"])
        allow_s = time.perf_counter() - began
        began = time.perf_counter()
        undone = screener.undo(db, big, window_seconds=3600)
        undo_s = time.perf_counter() - began
        if decision.messages != args.held or undone.messages != args.held:
            print(f"invalid run: allow moved {decision.messages}, undo {undone.messages}")
            return 1
        db.dispose()
    allow_ok = allow_s < 1.0
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC: opt-in filter with a big trust list",
        "",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        f"- command: `{command()}`",
        f"- trust list: {args.entries:,} entries + 5,000 for the benchmark's senders, "
        f"{args.contacts:,} contacts (the baseline user has none); batches of {args.batch} "
        f"messages per write transaction; best of {args.rounds} interleaved rounds of "
        f"{args.messages:,} messages per user",
        "",
        "| per message | empty trust list µs | big trust list µs | ratio big/empty |",
        "|---|---:|---:|---:|",
    ]
    for label, best in results.items():
        lines.append(
            f"| {label} | {best['empty']:.1f} | {best['big']:.1f} | "
            f"{best['big'] / best['empty']:.2f} |"
        )
    lines += [
        "",
        f"- Allow of one sender with {args.held:,} held messages: {allow_s * 1000:.0f} ms "
        f"(undo {undo_s * 1000:.0f} ms); target < 1 s: {'PASS' if allow_ok else 'FAIL'}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        if not DOC.exists():
            DOC.write_text(DOC_HEADER, encoding="utf-8")
        with open(DOC, "a", encoding="utf-8") as doc:
            doc.write("\n" + text)
    return 3 if args.strict and not allow_ok else 0


if __name__ == "__main__":
    sys.exit(main())
