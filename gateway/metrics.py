"""Prometheus metrics, one registry per app (no process-global collectors)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
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
