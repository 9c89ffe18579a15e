"""Shared fixtures: settings, databases on SQLite and PostgreSQL, signed webhooks.

Services: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). A missing one
skips the tests that need it, unless OPTMSG_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from config import Settings
from inbox.db import Database, open_database
from inbox.migrate import upgrade

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN_URL = os.environ.get("OPTMSG_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
AUTH_TOKEN = "test-auth-token-" + "0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
PUBLIC_URL = "https://gw.example.com"
SHARED_KEY_ID = "webhooks_sharedkey_test1"
SHARED_KEY_SECRET = "shared-key-secret-" + "fedcba9876543210"


def services_required() -> bool:
    return os.environ.get("OPTMSG_REQUIRE_SERVICES") == "1"


def missing_service(name: str, why: str) -> NoReturn:
    """Skip (locally) or fail (CI sets OPTMSG_REQUIRE_SERVICES=1), saying what is missing."""
    message = f"{name} not available: {why}"
    if services_required():
        pytest.fail(message + " (OPTMSG_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    sections: dict[str, Any] = {
        "http": {"listen": "127.0.0.1:0", "public_url": PUBLIC_URL},
        # Tests that exercise SMTP turn it on (on a free port); the rest keep it off.
        "smtp": {"enabled": False, "listen": "127.0.0.1:0", "hostname": "mx.test.example"},
        "database": {"url": db_url, "batch_max": 64},
        "storage": {"blob_dir": tmp_path / "blobs"},
        # Never the shared default var/spool: a test's leftovers would be replayed by
        # another test's gateway into another database.
        "spool": {"dir": tmp_path / "spool"},
        "bridges": {
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "webhook_shared_keys": {SHARED_KEY_ID: SHARED_KEY_SECRET},
            }
        },
        "optin": {"default_region": "US"},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return Settings(**sections)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not _port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = "optmsg_t_" + secrets.token_hex(6)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        missing_service("PostgreSQL", str(exc.orig))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A key namespace of this test's own on the shared Redis (127.0.0.1:6379): tests
    put every key under ``<namespace>:``, and those keys are removed afterwards; the
    rest of the server is never touched (no FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        missing_service("Redis", str(exc))
    namespace = "optmsg-test-" + secrets.token_hex(6)
    try:
        yield namespace
    finally:
        for key in client.scan_iter(match=namespace + ":*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def redis_backend(redis_namespace: str) -> dict[str, Any]:
    """The [redis] settings for the real Redis, with the test's own namespace."""
    return {"url": REDIS_URL, "namespace": redis_namespace}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/optmsg.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/optmsg.db"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = open_database(settings.database)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


def twilio_form(
    *,
    sender: str = "+14155550100",
    to: str = "+14155550199",
    body: str = "hello",
    sid: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The parameters Twilio posts for one inbound SMS."""
    sid = sid or "SM" + secrets.token_hex(16)
    form = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "94105",
        "SmsSid": sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def twilio_signature(
    url: str, form: dict[str, str], *, secret: str = AUTH_TOKEN, algorithm: str | None = None
) -> str:
    """Signed by the twilio package's own RequestValidator, not by our code."""
    return RequestValidator(secret).compute_signature(url, form, algorithm)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """The CLI configures the root logger; give every test the logging it started with."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
