"""Storage per million messages, for the capacity-planning section of
docs/deployment.md.

Stores ``--messages`` SMS (160 characters) through the real ingest pipeline (the
group committer's transaction: route, decide, insert, in batches of 256) and
``--messages`` emails (a raw message of ``--email-kb`` KB kept for export plus its
parsed text and sanitised HTML, rows written as the email path writes them) on a
SQLite file and on PostgreSQL (when reachable), then reports bytes per message with
indexes, extrapolated to one million. Attachment blobs are not included: they are
files in the blob directory, one per distinct content (content-addressed).

Usage: .venv/bin/python bench/storage.py [--messages 20000] [--email-kb 9]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import secrets
import string
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import DatabaseSettings  # noqa: E402
from gateway.pipeline import IngestPipeline  # noqa: E402
from inbox import store  # noqa: E402
from inbox.addresses import E164  # noqa: E402
from inbox.db import Database, open_database  # noqa: E402
from inbox.ids import new_id  # noqa: E402
from inbox.message import Channel, Inbound  # noqa: E402
from inbox.migrate import upgrade  # noqa: E402
from inbox.models import messages_t, raw_messages_t  # noqa: E402
from optin.decide import Policy  # noqa: E402

PG_ADMIN_URL = os.environ.get("OPTMSG_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
USER_NUMBER = "+14155550199"
BATCH = 256
SMS_TEXT = ("Your table is ready. Reply YES to confirm or NO to cancel. " * 3)[:160]


def _user(db: Database) -> str:
    return store.create_user(
        db,
        first_name="Bench",
        last_name="Storage",
        date_of_birth=datetime(1990, 1, 1).date(),
        phone=E164("+14155550100"),
        sms_number=E164(USER_NUMBER),
    ).id


def store_sms(db: Database, count: int) -> None:
    pipeline = IngestPipeline(Policy())
    now = datetime.now(UTC)
    for start in range(0, count, BATCH):
        batch = [
            Inbound(
                bridge="twilio",
                external_id="SM" + secrets.token_hex(16),
                channel=Channel.SMS,
                sender=E164(f"+1415555{(start + i) % 10000:04d}"),
                recipient=E164(USER_NUMBER),
                text=SMS_TEXT,
                received_at=now,
                provider_meta={"AccountSid": "AC" + "0" * 32, "NumSegments": "2"},
            )
            for i in range(min(BATCH, count - start))
        ]
        with db.write.begin() as conn:
            pipeline.process(conn, batch)


def store_email(db: Database, user_id: str, count: int, raw_kb: int) -> None:
    now = datetime.now(UTC)
    # Real mail barely compresses (base64 attachments, varied prose); random content
    # keeps PostgreSQL's TOAST compression from flattering the figure.
    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]

    def prose(chars: int) -> str:
        out: list[str] = []
        while sum(map(len, out)) + len(out) < chars:
            out.append(rng.choice(words))
        return " ".join(out)

    raw = "\r\n".join(
        base64.b64encode(rng.randbytes(57)).decode() for _ in range(raw_kb * 1024 // 78)
    ).encode()
    text = prose(3000)
    html = "<p>" + prose(5000) + "</p>"
    for start in range(0, count, BATCH):
        raws, messages = [], []
        for _ in range(min(BATCH, count - start)):
            raw_id, message_id = new_id("raw"), new_id("msg")
            raws.append(
                {
                    "id": raw_id,
                    "received_at": now,
                    "peer_ip": "192.0.2.1",
                    "helo": "mx.example",
                    "mail_from": "billing@bank.example",
                    "recipients": json.dumps(["ada@optmsg.example"]),
                    "size": len(raw),
                    "sha256": secrets.token_hex(32),
                    "data": raw,
                    "state": "done",
                    "error": None,
                    "auth_results": "mx.optmsg.example; spf=pass; dkim=pass; dmarc=pass",
                }
            )
            messages.append(
                {
                    "id": message_id,
                    "user_id": user_id,
                    "bridge": "email",
                    "external_id": secrets.token_hex(32),
                    "direction": "inbound",
                    "channel": "email",
                    "folder": "inbox",
                    "sender": "billing@bank.example",
                    "recipient": "ada@optmsg.example",
                    "subject": "Your monthly statement",
                    "text": text,
                    "html": html,
                    "received_at": now,
                    "read": False,
                    "reason": "trusted sender",
                    "auth": json.dumps({"spf": "pass", "dkim": "pass", "dmarc": "pass"}),
                    "provider_meta": None,
                    "raw_id": raw_id,
                    "status": None,
                    "error_code": None,
                    "conversation": "email:" + secrets.token_hex(32),
                }
            )
        with db.write.begin() as conn:
            conn.execute(raw_messages_t.insert(), raws)
            conn.execute(messages_t.insert(), messages)


def size_of(db: Database) -> int:
    if db.write.dialect.name == "sqlite":
        raw = db.write.raw_connection()
        try:
            # Outside any transaction, so that the checkpoint can fold the WAL back in.
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = raw.execute("PRAGMA page_count").fetchone()[0]
            page_size = raw.execute("PRAGMA page_size").fetchone()[0]
            return int(pages) * int(page_size)
        finally:
            raw.close()
    with db.write.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        total = conn.exec_driver_sql(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).scalar_one()
        return int(total)


def measure(url: str, count: int, raw_kb: int) -> dict[str, float]:
    results = {}
    for kind in ("sms", "email"):
        db = open_database(DatabaseSettings(url=url))
        try:
            upgrade(db)
            user_id = _user(db)
            empty = size_of(db)
            if kind == "sms":
                store_sms(db, count)
            else:
                store_email(db, user_id, count, raw_kb)
            results[kind] = (size_of(db) - empty) / count
            with db.write.begin() as conn:
                conn.execute(messages_t.delete())
                conn.execute(raw_messages_t.delete())
                conn.execute(sa.text("DELETE FROM user_addresses"))
                conn.execute(sa.text("DELETE FROM users"))
        finally:
            db.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--email-kb", type=int, default=9)
    args = parser.parse_args()
    engines: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engines["SQLite"] = measure(f"sqlite:///{tmp}/storage.db", args.messages, args.email_kb)
        # Each engine starts empty: a fresh SQLite file, a fresh PostgreSQL database.
        name = "optmsg_bench_" + secrets.token_hex(4)
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.OperationalError as exc:
            print(f"PostgreSQL skipped: {exc.orig}", file=sys.stderr)
        else:
            try:
                url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
                engines["PostgreSQL"] = measure(url, args.messages, args.email_kb)
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()
    print(
        f"# storage per message ({args.messages:,} of each; {platform.node()}, "
        f"{datetime.now(UTC):%Y-%m-%d})"
    )
    print("| engine | SMS bytes/msg | GB per 1M SMS | email bytes/msg | GB per 1M emails |")
    print("|---|---|---|---|---|")
    for engine, r in engines.items():
        print(
            f"| {engine} | {r['sms']:,.0f} | {r['sms'] * 1e6 / 1e9:.2f} | "
            f"{r['email']:,.0f} | {r['email'] * 1e6 / 1e9:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
