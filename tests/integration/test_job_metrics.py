"""Job, queue and pool figures for /metrics: recorded by a dramatiq middleware and
read from the real broker (in-memory and Redis) and SQLAlchemy pools at scrape time."""

from __future__ import annotations

import asyncio
import secrets
import smtplib
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.job_metrics import JobMetrics, PoolUse, QueueDepth
from gateway.jobs import QUEUES
from gateway.keys import RUNTIME
from inbox import store
from inbox.addresses import E164, EmailAddress
from inbox.db import open_database
from inbox.migrate import upgrade
from tests.conftest import make_settings, missing_service


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def stub(registry: CollectorRegistry) -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.add_middleware(JobMetrics(registry))
    broker.declare_queue("work")
    yield broker
    broker.close()


def _run(broker: StubBroker) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("work", fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_a_finished_job_is_counted_ok_and_timed(
    stub: StubBroker, registry: CollectorRegistry
) -> None:
    @dramatiq.actor(broker=stub, queue_name="work", actor_name="fine")
    def fine() -> None:
        return None

    fine.send()
    _run(stub)
    assert _value(registry, "optmsg_jobs_total", actor="fine", outcome="ok") == 1
    assert _value(registry, "optmsg_job_seconds_count", actor="fine") == 1


def test_a_raising_job_is_counted_as_an_error(
    stub: StubBroker, registry: CollectorRegistry
) -> None:
    @dramatiq.actor(broker=stub, queue_name="work", actor_name="broken", max_retries=0)
    def broken() -> None:
        raise RuntimeError("the provider said no")

    broken.send()
    _run(stub)
    assert _value(registry, "optmsg_jobs_total", actor="broken", outcome="error") == 1


def test_in_memory_queue_depth_counts_waiting_jobs(stub: StubBroker) -> None:
    @dramatiq.actor(broker=stub, queue_name="work", actor_name="later")
    def later() -> None:
        return None

    for _ in range(3):
        later.send()
    registry = CollectorRegistry()
    registry.register(QueueDepth(stub, lambda: iter(["work"])))
    assert _value(registry, "optmsg_queue_depth", queue="work", state="ready") == 3
    assert _value(registry, "optmsg_queue_depth", queue="work", state="delayed") == 0


@pytest.fixture
def redis_broker() -> Iterator[RedisBroker]:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        missing_service("Redis", "nothing listens on 127.0.0.1:6379")
    namespace = "optmsg-test-" + secrets.token_hex(4)
    broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=namespace)  # type: ignore[no-untyped-call]
    broker.declare_queue("work")
    yield broker
    for key in broker.client.scan_iter(namespace + ":*"):
        broker.client.delete(key)
    broker.close()


def test_redis_queue_depth_counts_waiting_jobs(redis_broker: RedisBroker) -> None:
    @dramatiq.actor(broker=redis_broker, queue_name="work", actor_name="queued")
    def queued() -> None:
        return None

    queued.send()
    queued.send()
    registry = CollectorRegistry()
    registry.register(QueueDepth(redis_broker, lambda: iter(["work"])))
    assert _value(registry, "optmsg_queue_depth", queue="work", state="ready") == 2
    assert _value(registry, "optmsg_queue_depth", queue="work", state="dead") == 0


def test_an_unreachable_broker_leaves_the_depth_out_instead_of_failing_the_scrape() -> None:
    broker = RedisBroker(url="redis://127.0.0.1:1/0", namespace="nowhere")  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(QueueDepth(broker, lambda: iter(["work"])))
    assert _value(registry, "optmsg_queue_depth", queue="work", state="ready") is None


def test_pool_use_counts_connections_checked_out(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'pool.db'}", pool_size=2, max_overflow=0)
    registry = CollectorRegistry()
    registry.register(PoolUse({"read": engine}))
    with engine.connect():
        assert _value(registry, "optmsg_db_connections", engine="read", state="in_use") == 1
    assert _value(registry, "optmsg_db_connections", engine="read", state="in_use") == 0
    assert _value(registry, "optmsg_db_connections", engine="read", state="idle") == 1
    engine.dispose()


async def test_the_gateway_metrics_show_queue_depth_and_pool_use(
    tmp_path: Path, db_url: str, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    settings = make_settings(tmp_path, db_url)
    client = await aiohttp_client(create_app(settings))
    text = await (await client.get("/metrics")).text()
    for queue in QUEUES:
        assert f'optmsg_queue_depth{{queue="{queue}",state="ready"}} 0.0' in text
    assert 'optmsg_db_connections{engine="read",state="in_use"}' in text
    assert "# TYPE optmsg_jobs_total counter" in text


async def test_smtp_data_to_reply_time_is_observed_per_outcome(
    tmp_path: Path, db_url: str, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    settings = make_settings(tmp_path, db_url, smtp={"enabled": True})
    db = open_database(settings.database)
    upgrade(db)
    store.create_user(
        db, first_name="Ada", last_name="L", date_of_birth=date(1990, 1, 1),
        phone=E164("+14155550100"), email_address=EmailAddress("ada@optmsg.test"),
    )  # fmt: skip
    db.dispose()
    client = await aiohttp_client(create_app(settings))
    port = client.app[RUNTIME].smtp_port
    assert port is not None

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("bob@example.org", ["ada@optmsg.test"], b"Subject: hi\r\n\r\nhello\r\n")

    await asyncio.to_thread(send)
    text = await (await client.get("/metrics")).text()
    assert 'optmsg_smtp_data_seconds_count{outcome="stored"} 1.0' in text
