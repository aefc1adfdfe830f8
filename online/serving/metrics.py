"""Prometheus metrics of the serving process (one registry per app, so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServingMetrics:
    """Counters and latency histograms of the prediction API."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "migrate_predict_requests_total",
            "Prediction requests by use case and HTTP status.",
            ["usecase", "status"],
            registry=registry,
        )
        self.predictions = Counter(
            "migrate_predictions_total",
            "Entities answered, by the source that answered.",
            ["usecase", "source"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "migrate_predict_seconds",
            "Served latency of a predict request.",
            ["usecase"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.online_latency = Histogram(
            "migrate_online_path_seconds",
            "Latency of the online path (features + model).",
            ["usecase"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_skipped = Counter(
            "migrate_shadow_skipped_total",
            "Shadow comparisons not computed (background pool full or failing).",
            ["usecase"],
            registry=registry,
        )
        self.admin_refused = Counter(
            "migrate_admin_refused_total",
            "Admin API calls refused before the audit log: no token configured or sent, a wrong one, no such use case.",
            ["reason"],
            registry=registry,
        )
        self.auto_rollbacks = Counter(
            "migrate_auto_rollbacks_total", "Automatic rollbacks to shadow.", ["usecase"], registry=registry
        )
