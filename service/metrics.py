"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "serving_requests_total", "HTTP requests by route and status.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "serving_batch_size", "Rows per batched SavedModel call.", ["policy"], buckets=BATCH_BUCKETS, registry=r
        )
        self.model_calls = Counter("serving_model_calls_total", "SavedModel calls.", ["policy", "variant"], registry=r)
        self.decisions = Counter("serving_decisions_total", "Decisions logged.", ["policy", "variant"], registry=r)
        self.rewards = Counter("serving_rewards_total", "Rewards logged by outcome.", ["policy", "outcome"], registry=r)
        self.live_version = Gauge(
            "serving_live_version", "Export number of the version each policy serves.", ["policy"], registry=r
        )
        self.refused_versions = Counter(
            "serving_refused_versions_total",
            "Live versions a replica refused to serve (checksum mismatch, unreadable checkpoint).",
            ["policy"],
            registry=r,
        )
        self.live_checkpoint = Gauge(
            "serving_live_checkpoint", "Checkpoint number of the version each policy serves.", ["policy"], registry=r
        )

        self.spooled = Counter(
            "serving_spooled_total", "Writes that went to the local spool instead of Redis.", ["kind"], registry=r
        )
        self.spool_bytes = Gauge("serving_spool_bytes", "Bytes waiting in the local spool.", registry=r)
        self.refused = Counter(
            "serving_refused_requests_total",
            "Requests refused before any work: unauthorized, forbidden, rate_limited.",
            ["reason"],
            registry=r,
        )

    def set_live(self, policy: str, version: str) -> None:
        export, _, checkpoint = version.partition(".")
        self.live_version.labels(policy).set(int(export))
        self.live_checkpoint.labels(policy).set(int(checkpoint or 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
