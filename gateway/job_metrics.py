"""Prometheus figures of background jobs and pools: job durations and outcomes (a
dramatiq middleware), queue depth and database connections in use (read at scrape
time, so they cost nothing between scrapes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: dramatiq puts retries waiting for their backoff in "<queue>.DQ" and messages that
#: used up their retries in the "<queue>.XQ" sorted set.
_DELAYED, _DEAD = ".DQ", ".XQ"


class JobMetrics(dramatiq.Middleware):
    """Times every job and counts its outcome: ``ok``, ``error`` (raised; dramatiq
    retries it until the actor's max_retries) or ``skipped``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "optmsg_job_seconds",
            "Time to run one background job, per actor",
            ["actor"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.jobs = Counter(
            "optmsg_jobs_total",
            "Background jobs run, per actor and outcome (ok, error, skipped)",
            ["actor", "outcome"],
            registry=registry,
        )
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self.seconds.labels(message.actor_name).observe(time.perf_counter() - started)
        self.jobs.labels(message.actor_name, "ok" if exception is None else "error").inc()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started.pop(message.message_id, None)
        self.jobs.labels(message.actor_name, "skipped").inc()


class QueueDepth(Collector):
    """``optmsg_queue_depth{queue,state}``: jobs ready, waiting out a retry backoff
    (delayed) and given up on (dead), asked of the broker at scrape time."""

    def __init__(self, broker: dramatiq.Broker, queues: Callable[[], Iterator[str]]) -> None:
        self._broker = broker
        self._queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "optmsg_queue_depth", "Background jobs waiting, per queue", labels=["queue", "state"]
        )
        try:
            for queue, state, depth in self._depths():
                family.add_metric([queue, state], depth)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("queue depth unavailable (broker unreachable)")
            return
        yield family

    def _depths(self) -> Iterator[tuple[str, str, int]]:
        broker = self._broker
        if isinstance(broker, StubBroker):
            for queue in self._queues():
                yield queue, "ready", broker.queues[queue].qsize()
                yield queue, "delayed", broker.queues[queue + _DELAYED].qsize()
                yield queue, "dead", len(broker.dead_letters_by_queue[queue])
        elif isinstance(broker, RedisBroker):
            client = broker.client
            prefix = broker.namespace + ":"
            for queue in self._queues():
                yield queue, "ready", int(client.llen(prefix + queue))
                yield queue, "delayed", int(client.llen(prefix + queue + _DELAYED))
                yield queue, "dead", int(client.zcard(prefix + queue + _DEAD))


class PoolUse(Collector):
    """``optmsg_db_connections{engine,state}``: connections checked out and idle in
    each SQLAlchemy pool (``pool_size`` + overflow is the ceiling)."""

    def __init__(self, engines: dict[str, sa.Engine]) -> None:
        self._engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "optmsg_db_connections",
            "Database connections per engine: in use (checked out) and idle",
            labels=["engine", "state"],
        )
        for name, engine in self._engines.items():
            pool = engine.pool
            checked_out = getattr(pool, "checkedout", None)
            checked_in = getattr(pool, "checkedin", None)
            if checked_out is None or checked_in is None:
                continue  # a pool without counters (NullPool, StaticPool)
            family.add_metric([name, "in_use"], checked_out())
            family.add_metric([name, "idle"], checked_in())
        yield family
