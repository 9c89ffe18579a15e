"""Prometheus metrics, one registry per app (no process-global collectors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram

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
