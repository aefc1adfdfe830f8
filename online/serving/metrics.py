"""Prometheus metrics of the serving process (one registry per app, so tests can build several apps).

With several uvicorn workers (``migrate serve --workers N``) each worker is its own process: prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) makes every worker write its values to files there, and
whichever worker answers ``/metrics`` sums them (`exposition`), so a scrape sees the whole service. Gauges say
how workers combine (``multiprocess_mode``): a worker's files for the ``live*`` modes are removed when it exits
(`mark_dead`). Info and Enum metrics do not work in that mode: the stage and the model version are gauges of 1
with the value in a label.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from migrate.errors import ConfigError

__all__ = [
    "MULTIPROC_ENV",
    "STAGES",
    "ServingMetrics",
    "exposition",
    "fallback_reason",
    "mark_dead",
    "multiprocess_dir",
    "observe_many",
    "prepare_multiprocess_dir",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("batch", "shadow", "canary", "online", "online_only")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Feature data ages span seconds (a stream's windows) to days (a nightly batch that did not run).
_AGE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3_600.0, 6 * 3_600.0, 86_400.0, 2 * 86_400.0, 7 * 86_400.0)


class ServingMetrics:
    """Counters, gauges and histograms of the prediction API."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "migrate_predict_requests_total",
            "Prediction requests by use case and HTTP status.",
            ["usecase", "status"],
            registry=registry,
        )
        self.http_requests = Counter(
            "migrate_http_requests_total",
            "Every HTTP request by route template and status, 4xx/5xx answered by middleware or validation included.",
            ["route", "status"],
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
        self.shadow_unsampled = Counter(
            "migrate_shadow_unsampled_total",
            "Entities the shadow comparison left out by its sample (the use case's shadow.sample_percent).",
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
        # Each worker follows the flag on its own: livemax shows a stage any live worker serves (two, for the
        # second a change takes to reach them all).
        self.stage = Gauge(
            "migrate_usecase_stage",
            "1 for the cutover stage the use case is served at, 0 for the others.",
            ["usecase", "stage"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.canary_percent = Gauge(
            "migrate_canary_percent",
            "Percent of entities served online at canary (0 at other stages).",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.model_info = Gauge(
            "migrate_model_info",
            "1 for the online model version loaded (an info metric: the version is the label).",
            ["usecase", "model_version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.feature_age = Histogram(
            "migrate_feature_age_seconds",
            "Age of the data behind each answered entity, per feature group ('lookup' for a lookup-table answer).",
            ["usecase", "group"],
            buckets=_AGE_BUCKETS,
            registry=registry,
        )
        self.lookup_misses = Counter(
            "migrate_lookup_misses_total",
            "Entities the lookup table had no row for.",
            ["usecase"],
            registry=registry,
        )
        self.lookup_errors = Counter(
            "migrate_lookup_errors_total",
            "Entities the lookup-table read failed for (answered with the error, no prediction), by why: timeout "
            "(MIGRATE_LOOKUP_TIMEOUT_S) or store_error.",
            ["usecase", "reason"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "migrate_fallbacks_total",
            "Entities routed online but answered from the lookup table, by why the online path failed.",
            ["usecase", "reason"],
            registry=registry,
        )
        # Each worker keeps its own guardrail window: summed, they are the service's last minute of online calls.
        self.guardrail_calls = Gauge(
            "migrate_guardrail_window_calls",
            "Online calls in the guardrail's sliding window.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.guardrail_errors = Gauge(
            "migrate_guardrail_window_errors",
            "Failed online calls in the guardrail's sliding window.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.guardrail_slow = Gauge(
            "migrate_guardrail_window_slow_calls",
            "Online calls slower than the p99 latency limit in the guardrail's sliding window.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.guardrail_max_error_rate = Gauge(
            "migrate_guardrail_max_error_rate",
            "The use case's max_error_rate (cutover_policy).",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.guardrail_max_p99 = Gauge(
            "migrate_guardrail_max_p99_latency_seconds",
            "The use case's max_p99_latency_ms (cutover_policy), in seconds.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.guardrail_breaches = Counter(
            "migrate_guardrail_breaches_total",
            "Guardrail breaches (each one rolls the use case back to shadow), by kind.",
            ["usecase", "kind"],
            registry=registry,
        )

    def served_stage(self, usecase: str, stage: str, percent: int | None) -> None:
        """Set the stage gauges of `usecase` (every stage written: multiprocess mode cannot remove a label set)."""
        for name in STAGES:
            self.stage.labels(usecase, name).set(1 if name == stage else 0)
        self.canary_percent.labels(usecase).set(percent or 0 if stage == "canary" else 0)

    def guardrail_window(self, usecase: str, calls: int, errors: int, slow: int) -> None:
        """Set the guardrail window gauges of `usecase`."""
        self.guardrail_calls.labels(usecase).set(calls)
        self.guardrail_errors.labels(usecase).set(errors)
        self.guardrail_slow.labels(usecase).set(slow)


class UseCaseSeries:
    """The series one use case's requests write, bound to their labels once.

    prometheus-client's ``labels()`` takes a lock and builds the label key on every call; a request wrote ten or
    so, and one histogram sample per answered entity and feature group. The online latency and the lookup
    misses are bound at start (their series read 0 until the first sample); the per-source and per-group
    children on first use. The guardrail gauges are written at most every `gauge_every_s` per worker by
    requests, and always when called without `now` (`UseCaseServer.before_scrape`, before each scrape).
    """

    def __init__(self, metrics: ServingMetrics, usecase: str, *, gauge_every_s: float = 0.1) -> None:
        self.metrics = metrics
        self.usecase = usecase
        self.online_latency = metrics.online_latency.labels(usecase)
        self.lookup_misses = metrics.lookup_misses.labels(usecase)
        self.shadow_unsampled = metrics.shadow_unsampled.labels(usecase)
        self._predictions: dict[str, Any] = {}
        self._ages: dict[str, Any] = {}
        self._gauge_every_s = gauge_every_s
        self._gauges_at = float("-inf")

    def predictions(self, source: str, count: int) -> None:
        child = self._predictions.get(source)
        if child is None:
            child = self._predictions[source] = self.metrics.predictions.labels(self.usecase, source)
        child.inc(count)

    def feature_ages(self, ages: Mapping[str, Sequence[float]]) -> None:
        """Observe every age of each group (one bulk write per group and request, not one per entity)."""
        children = self._ages
        for group, values in ages.items():
            child = children.get(group)
            if child is None:
                child = children[group] = self.metrics.feature_age.labels(self.usecase, group)
            observe_many(child, values)

    def guardrail_window(self, window: Callable[[], tuple[int, int, int]], *, now: float | None = None) -> None:
        """Set the guardrail window gauges from `window()`, unless they were set less than `gauge_every_s` ago
        (`now` None: always, as before a scrape)."""
        if now is not None:
            if now - self._gauges_at < self._gauge_every_s:
                return
            self._gauges_at = now
        self.metrics.guardrail_window(self.usecase, *window())


# Below this magnitude (2¹⁰⁰⁰, ~1e301) no sum of a running sum and fewer than 2²³ values overflows, in any order.
_SUMMED_ONE_BY_ONE = 2.0**1000


def observe_many(child: Any, amounts: Sequence[float]) -> None:
    """What ``child.observe(a)`` for each of `amounts` does, with one write per bucket that got any.

    `child` is one labelled child of a prometheus-client `Histogram`. Its ``observe`` takes the value lock twice
    per sample (the sum and one bucket): a 100-entity answer with two feature groups paid 400 locked writes,
    about a fifth of the event loop's time under load (py-spy). This counts the samples per bucket first, then
    adds each count and the sum once, using the child's own bounds and values (``_upper_bounds``, ``_buckets``,
    ``_sum``: the attributes its ``observe`` uses), so the multiprocess files stay right too. As ``observe``
    does, a NaN lands in no bucket and makes the sum NaN. Tested against ``observe`` itself
    (tests/unit/online/test_metrics_bulk.py).
    """
    if len(amounts) < 2:  # one sample: the library's own observe is cheaper than counting (0.5 µs less here)
        for amount in amounts:
            child.observe(amount)
        return
    bounds: Sequence[float] = child._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        total += amount
        if not math.isnan(amount):
            counts[bisect.bisect_left(bounds, amount)] += 1
    if max(map(abs, amounts)) >= _SUMMED_ONE_BY_ONE or abs(child._sum.get()) >= _SUMMED_ONE_BY_ONE:
        # Near the largest float the grouping decides whether a sum overflows: one value at a time the running sum
        # of 9.9e307, -3.3e307, -9.3e307 stays finite, the batch's -3.3e307 - 9.3e307 - ... does not (hypothesis
        # found it). Such values (and ±inf) are added one by one, as `observe` adds them: the library's sum exactly.
        for amount in amounts:
            child._sum.inc(amount)
    else:
        child._sum.inc(total)
    buckets = child._buckets
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)


def lookup_error_reason(error: str) -> str:
    """The bounded label of a lookup read's error: timeout or store_error."""
    return "timeout" if error.startswith("TimeoutError") else "store_error"


def fallback_reason(error: str) -> str:
    """The bounded label of an online path's error: timeout, model_not_loaded or online_error."""
    if error.startswith("TimeoutError"):
        return "timeout"
    if error.startswith("the online model is not loaded"):
        return "model_not_loaded"
    return "online_error"


def multiprocess_dir() -> Path | None:
    """The directory workers share their values through, None when the process is not in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets: every worker's values in multiprocess mode, else `registry`'s.

    In multiprocess mode, collectors registered on `registry` by hand (the shadow process's counts) are per
    worker and not included: the shadow processes write their own counters to the shared directory.
    """
    path = multiprocess_dir()
    if path is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=str(path))  # type: ignore[no-untyped-call]
    return generate_latest(merged)


def mark_dead(pid: int | None = None) -> None:
    """Remove this process's (or `pid`'s) live-gauge files, so a worker that exited stops counting."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid() if pid is None else pid, str(path))  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(default: Path) -> Path:
    """Empty (creating) the shared directory before workers start, and set ``PROMETHEUS_MULTIPROC_DIR`` for them.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is kept (only its ``*.db`` files are removed); otherwise `default`.
    A previous run's files would add its counts to this run's.
    """
    path = multiprocess_dir() or default
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{MULTIPROC_ENV}={path} is not a directory",
            fix=f"point {MULTIPROC_ENV} at a directory (or unset it to use {default})",
        )
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path
