"""Prometheus metrics of one app: request counts and latencies by route, events stored,
forget requests, and the recall of each ANN index (its own registry, so several apps in one
process, as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "polyrec_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "polyrec_request_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "polyrec_events_stored", "Events stored (duplicates excluded).", registry=self.registry
        )
        self.duplicates = Counter(
            "polyrec_events_duplicate",
            "Events skipped as duplicates of a stored idempotency key.",
            registry=self.registry,
        )
        self.forget = Counter(
            "polyrec_forget_requests", "Forget requests by kind.", ["kind"], registry=self.registry
        )
        self.cold_start = Counter(
            "polyrec_cold_start",
            "Recommendations answered by the popularity fallback.",
            registry=self.registry,
        )
        self.recall = Gauge(
            "polyrec_ann_recall",
            "Recall of each ANN index against exact search, measured at build time.",
            ["model", "index"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
