"""The trainer's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applied = Counter(
            "trainer_examples_applied_total", "Examples applied to a policy.", ["policy"], registry=r
        )
        self.join_outcomes = Counter(
            "trainer_join_outcomes_total",
            "Decisions and rewards by join outcome (rewarded, defaulted, late, duplicate).",
            ["policy", "outcome"],
            registry=r,
        )
        self.update_seconds = Histogram(
            "trainer_update_seconds", "Duration of one batched update.", ["policy"], registry=r
        )
        self.publish_seconds = Histogram(
            "trainer_publish_seconds", "Duration of writing and announcing a checkpoint.", ["policy"], registry=r
        )
        self.lag = Gauge("trainer_lag_events", "Decisions logged but not yet applied.", ["policy"], registry=r)
        self.pending = Gauge("trainer_pending_joins", "Decisions waiting for their reward.", ["policy"], registry=r)
        self.live_checkpoint = Gauge(
            "trainer_published_checkpoint", "Checkpoint number last published.", ["policy"], registry=r
        )
