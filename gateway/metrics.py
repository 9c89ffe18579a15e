"""Prometheus metrics, one registry per app (no process-global collectors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inbox.message import Outcome


@dataclass(eq=False)
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = Counter(
            "optmsg_messages_total",
            "Inbound messages by bridge and outcome (admitted, quarantined, dropped, unroutable)",
            ["bridge", "outcome"],
            registry=r,
        )
        self.duplicates = Counter(
            "optmsg_duplicate_deliveries_total",
            "Provider retries answered from an already stored message",
            ["bridge"],
            registry=r,
        )
        self.rejected = Counter(
            "optmsg_webhook_rejected_total",
            "Webhook requests refused before storing (reason: signature, malformed, too_large)",
            ["bridge", "reason"],
            registry=r,
        )
        self.store_failures = Counter(
            "optmsg_store_failures_total",
            "Inbound messages not acknowledged because the store failed",
            ["bridge"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "optmsg_webhook_seconds",
            "Time from request received to response, per bridge",
            ["bridge"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        # The webhook spool (gateway.spool_replay): messages acknowledged while the
        # database was down, waiting to be stored.
        self.spool_messages = Gauge(
            "optmsg_spool_messages",
            "Webhooks in this process's local spool, acknowledged and not yet stored",
            registry=r,
        )
        self.spooled = Counter(
            "optmsg_spooled_total",
            "Webhooks acknowledged from the local spool because the store was unavailable",
            ["bridge", "kind"],
            registry=r,
        )
        self.spool_replayed = Counter(
            "optmsg_spool_replayed_total",
            "Spooled webhooks stored once the database answered again",
            ["bridge", "kind"],
            registry=r,
        )
        self.spool_refused = Counter(
            "optmsg_spool_refused_total",
            "Webhooks answered 503 because the store failed and the spool was full "
            "or unusable (reason: full, error)",
            ["bridge", "reason"],
            registry=r,
        )
        self.spool_dead = Counter(
            "optmsg_spool_dead_letters_total",
            "Spooled records that could not be stored with the database up, kept in dead.log",
            registry=r,
        )

        self.flood_held = Counter(
            "optmsg_flood_held_total",
            "Inbound messages stored but held because their sender went over "
            "limits.sender_messages within limits.sender_window_s",
            ["bridge"],
            registry=r,
        )
        self.ratelimit_errors = Counter(
            "optmsg_ratelimit_errors_total",
            "Exchanges of flood and API limit counts with Redis that failed (the limits "
            "are then counted by each process alone)",
            registry=r,
        )
        self.api_rate_limited = Counter(
            "optmsg_api_rate_limited_total",
            "Client API requests answered 429 because their client IP went over "
            "limits.api_requests_per_ip",
            registry=r,
        )

        self.smtp_seconds = Histogram(
            "optmsg_smtp_data_seconds",
            "Time from the end of an SMTP DATA to the reply (the raw message durably "
            "stored: 250; or not: 451), by outcome",
            ["outcome"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )

    # Resolving label values costs a dict lookup plus locking per call; the hot path
    # asks for the same few children again and again, so they are cached.
    def count_inbound(self, bridge: str, outcome: Outcome, *, duplicate: bool) -> None:
        self._inbound_child(bridge, outcome, duplicate).inc()

    @lru_cache(maxsize=256)  # noqa: B019 - one Metrics per app, lives as long as the app
    def _inbound_child(self, bridge: str, outcome: Outcome, duplicate: bool) -> Counter:
        if duplicate:
            return self.duplicates.labels(bridge)
        return self.messages.labels(bridge, outcome.value)

    @lru_cache(maxsize=64)  # noqa: B019 - one Metrics per app, lives as long as the app
    def webhook_latency(self, bridge: str) -> Histogram:
        return self.webhook_seconds.labels(bridge)
