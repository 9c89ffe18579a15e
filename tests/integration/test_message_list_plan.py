"""The message list (GET /api/v1/messages) is keyset-paged through the
(user_id, folder, id) index: the query store.list_messages really sends, explained
by the database itself (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN``), for
the first page, a cursor page, and the unread filter, shows an index search in id
order: no table scan and no sort, whatever the number of messages.

PostgreSQL rightly prefers a sequential scan, or another index and a sort, for a table
as small as a test's; with sequential scans, bitmap scans and sorts priced out, a plan
with neither proves that the index can deliver the page in order (bench/messages_api.py
shows the plan PostgreSQL picks by itself at 1,000,000 messages).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from inbox import store
from inbox.db import Database
from inbox.ids import new_id
from inbox.message import Folder
from inbox.models import messages_t
from tests.integration.helpers import make_user

INDEX = "ix_messages_user_folder_id"


OTHER_USERS = 40
PER_OTHER_USER = 50


def _bulk_messages(db: Database, user_id: str, count: int) -> None:
    """``count`` inbox SMS for the user, inserted as rows (the plan depends on the
    rows' shape and number, not on how they arrived)."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": new_id("msg"),
            "user_id": user_id,
            "bridge": "twilio",
            "external_id": f"SM{secrets.token_hex(16)}",
            "direction": "inbound",
            "channel": "sms",
            "folder": "inbox",
            "sender": "+14155550111",
            "recipient": "+14155550199",
            "text": f"m{n}",
            "received_at": now,
            "read": n % 3 == 0,
            "reason": "trusted sender",
        }
        for n in range(count)
    ]
    with db.write.begin() as conn:
        conn.execute(messages_t.insert(), rows)


@pytest.fixture
def user(db: Database) -> str:
    """A user with a few pages of inbox messages (a third read), among many users'."""
    users = [
        make_user(db, phone=f"+1415555{i:04d}", sms_number=f"+1415556{i:04d}")
        for i in range(OTHER_USERS + 1)
    ]
    for user_id in users:
        _bulk_messages(db, user_id, PER_OTHER_USER)
    return users[OTHER_USERS // 2]


def list_queries(db: Database, call: Any) -> list[tuple[str, Any]]:
    """The statements (and parameters) ``call()`` sends to the read engine. On SQLite
    the list runs as plain SQL on the driver, so the driver's own trace is read: it
    reports each statement with its values filled in."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    traced: list[Any] = []

    def trace(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.set_trace_callback(lambda statement: sent.append((statement, ())))
        traced.append(dbapi_conn)

    sa.event.listen(db.read, "before_cursor_execute", record)
    if db.read.dialect.name == "sqlite":
        sa.event.listen(db.read, "checkout", trace)
    try:
        call()
    finally:
        sa.event.remove(db.read, "before_cursor_execute", record)
        if db.read.dialect.name == "sqlite":
            sa.event.remove(db.read, "checkout", trace)
        for dbapi_conn in traced:
            dbapi_conn.set_trace_callback(None)
    return sent


def explain(db: Database, statement: str, parameters: Any) -> str:
    with db.read.connect() as conn:
        if db.read.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("ANALYZE messages")
        for method in ("seqscan", "bitmapscan", "sort"):
            conn.exec_driver_sql(f"SET enable_{method} = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(r[0]) for r in rows)


def plan_of_the_list(db: Database, user: str, **kwargs: Any) -> str:
    """The plan of the messages query of one store.list_messages call."""
    queries = list_queries(db, lambda: store.list_messages(db, user, Folder.INBOX, **kwargs))
    (statement, parameters) = next((s, p) for s, p in queries if "FROM messages" in s)
    return explain(db, statement, parameters)


def assert_index_in_order(plan: str) -> None:
    assert INDEX in plan, plan
    lowered = plan.lower()
    assert "temp b-tree" not in lowered and "sort" not in lowered, plan  # no sort step
    # SQLite says SCAN for a full pass; PostgreSQL's is a Seq Scan.
    assert "scan messages" not in lowered.replace("scan messages using", ""), plan
    assert "seq scan" not in lowered, plan


def first_cursor(db: Database, user: str, **kwargs: Any) -> str:
    cursor = store.list_messages(db, user, Folder.INBOX, limit=2, **kwargs).next
    assert cursor is not None
    return cursor


def test_the_first_page_searches_the_index_in_id_order(db: Database, user: str) -> None:
    assert_index_in_order(plan_of_the_list(db, user, limit=50))


def test_a_cursor_page_searches_the_index_in_id_order(db: Database, user: str) -> None:
    cursor = first_cursor(db, user)
    assert_index_in_order(plan_of_the_list(db, user, limit=50, cursor=cursor))


@pytest.mark.parametrize("unread", [True, False])
def test_the_unread_filter_searches_the_index_in_id_order(
    db: Database, user: str, unread: bool
) -> None:
    assert_index_in_order(plan_of_the_list(db, user, limit=50, unread=unread))
    cursor = first_cursor(db, user, unread=unread)
    assert_index_in_order(plan_of_the_list(db, user, limit=50, unread=unread, cursor=cursor))


def test_the_other_folders_search_the_index_in_id_order(db: Database, user: str) -> None:
    for folder in (Folder.QUARANTINE, Folder.SENT):
        queries = list_queries(db, lambda f=folder: store.list_messages(db, user, f, limit=50))
        statement, parameters = next((s, p) for s, p in queries if "FROM messages" in s)
        assert_index_in_order(explain(db, statement, parameters))


def test_a_pages_attachments_are_found_by_index(db: Database, user: str) -> None:
    queries = list_queries(db, lambda: store.list_messages(db, user, Folder.INBOX, limit=50))
    statement, parameters = next((s, p) for s, p in queries if "FROM attachments" in s)
    plan = explain(db, statement, parameters).lower()
    assert "seq scan" not in plan and "scan attachments" not in plan.replace(
        "scan attachments using", ""
    ), plan
