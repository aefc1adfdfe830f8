"""The comparison of one use case over one window: every metric, the noise floor, the explanation and the verdict.

A thin coordinator: it loads the rows (`comparisons.shadow_rows`), the lookup versions and the entity source into one
DuckDB connection, and asks each metric module for its part.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from comparisons import (
    accuracy,
    agreement,
    baselines,
    coverage,
    hourly,
    latency,
    noise,
    segments,
    skew,
    staleness,
    waste,
)
from comparisons.background import in_background
from comparisons.explain import Explanation
from comparisons.explain import measure as explain
from comparisons.lookup import Prefetch, likely_versions, open_lookup
from comparisons.runtime import tuned
from comparisons.shadow_rows import Rows, Window, load, readable
from comparisons.stats import Result
from comparisons.verdict import Evidence, Verdict, decide, primary_metric
from lookup_tables import TableSpec
from migrate.artifact import ArtifactStore
from migrate.batch.offline_zone import table_sql
from migrate.clock import recorded_speed
from migrate.errors import MigrateError
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration

__all__ = ["STEPS", "Comparison", "OnStep", "compare", "warm"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Comparison(Result):
    """Everything measured about one use case's batch and live paths over one window."""

    usecase: str
    since: datetime | None
    until: datetime | None
    first_request: datetime
    last_request: datetime
    rows: int
    files: int
    backtest: bool = Field(default=False, description="Every row is a backtest's answer from history.")
    shadow_sample_percent: float = Field(
        default=100.0,
        description="The smallest share of entities the shadow log sampled in the window (shadow.sample_percent): "
        "counts are of the sampled entities' requests; shares, latencies and accuracy hold as measured.",
    )
    label_delay_s: float
    lookup_version: int | None
    lookup_cutoff: datetime | None
    staleness: staleness.Staleness
    coverage: coverage.Coverage
    accuracy: accuracy.Accuracy
    baselines: baselines.Baselines
    feature_skew: skew.Skew
    segments: segments.Segments
    agreement: agreement.Agreement
    latency: latency.Latency
    waste: waste.Waste
    noise_floor: noise.NoiseFloor
    explanation: Explanation
    hourly: list[hourly.Hour]
    verdict: Verdict
    timings: dict[str, float]
    scatter: dict[str, list[float]] = Field(default_factory=dict, exclude=True)


# The steps of `compare`, in order: each is timed (Comparison.timings) and reported to `on_step` as it ends.
# Some run on a connection and a thread of their own (`_Forks`) while others run: the accuracy from
# "staleness_coverage" on ("accuracy" times the wait for it and the baseline checks), the latency during
# "agreement_latency_waste_hourly", the segments during "explain" and "feature_skew" ("segments" times the wait).
STEPS = (
    "load",
    "lookup",
    "noise_floor",
    "staleness_coverage",
    "agreement_latency_waste_hourly",
    "explain",
    "feature_skew",
    "segments",
    "accuracy",
    "verdict",
)
OnStep = Callable[[str], None]


class _Clock:
    def __init__(self, on_step: OnStep | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()
        self._on_step = on_step

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._last, 4)
        self._last = now
        if self._on_step is not None:
            self._on_step(name)


def warm(*modules: str) -> threading.Thread:
    """Import ``modules`` on a background thread: DuckDB releases the GIL, so the seconds of importing the model
    and plotting libraries overlap the queries instead of following them. A failure here is only logged: the
    real import, where the module is used, raises it."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # an ImportError or whatever a module raises on import
                log.debug("background import of %s failed: %s", name, exc)

    thread = threading.Thread(target=run, name="comparisons-warm", daemon=True)
    thread.start()
    return thread


def _may_deserialize(usecase: UseCase, settings: Settings) -> bool:
    """Whether the explanation may need a model's scikit-learn estimator: a trained version of the use case without a
    compiled forest (`migrate.scoring.model_from_artifact` scores one with it without importing scikit-learn or skops),
    or manifests that cannot be read. Only decides what to import ahead on a thread."""
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    try:
        entries = [entry for role in ("batch", "online") for entry in store.list(usecase.name, role)]
    except MigrateError:
        return True
    return not entries or any(entry.forest_file is None for entry in entries)


def _timeline(usecase: UseCase, settings: Settings) -> tuple[list[Any], str]:
    """Every version of the use case's lookup table (any status), oldest first; or none and why."""
    store = open_lookup(settings)
    try:
        return sorted(store.versions(TableSpec.for_usecase(usecase, settings)), key=lambda v: v.version), ""
    except MigrateError as exc:
        log.warning("lookup versions of %s unavailable: %s", usecase.name, exc.what)
        return [], f"lookup store unavailable: {exc.what}"
    finally:
        store.close()


@dataclass(frozen=True)
class _Served:
    """The lookup versions behind the window's requests, as loaded for the metrics."""

    primary: Any  # the version that answered most requests (VersionInfo), or None
    previous: Any  # the newest kept version older than it, or None
    loaded: tuple[int, ...]  # served versions whose rows are registered as ``lookup_v<n>``
    gone: tuple[int, ...]  # served versions no longer kept (their rows were dropped)
    note: str


def _lookup(
    rows: Rows, usecase: UseCase, settings: Settings, timeline: list[Any], note: str, *, prefetch: Prefetch
) -> _Served:
    """Register table ``versions(version, cutoff)``, the served versions' rows (``lookup_v<n>``) and, for the noise
    floor, the primary served version and the one before it as ``lookup_active`` / ``lookup_previous``.

    Coverage, waste and the noise floor use the version that served each request (``s.lv``), so a later batch
    run does not change a report over a past window."""
    if not timeline:
        return _Served(None, None, (), (), note or "no published lookup version")
    rows.con.register(
        "versions",
        pa.table(
            {
                "version": pa.array([v.version for v in timeline], pa.int64()),
                "cutoff": pa.array([v.data_interval_end for v in timeline], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    counts = dict(rows.con.execute("SELECT lv, count(*) FROM s WHERE lv IS NOT NULL GROUP BY lv").fetchall())
    by_number = {v.version: v for v in timeline}
    active = next((v for v in timeline if v.status == "active"), None)
    primary = by_number.get(max(counts, key=lambda n: counts[n])) if counts else active
    if primary is None:
        return _Served(None, None, (), (), "no published lookup version")
    kept = {v.version for v in timeline if v.status in ("active", "ready")}
    older = [v for v in timeline if v.version < primary.version and v.version in kept]
    previous = older[-1] if older else None
    spec = TableSpec.for_usecase(usecase, settings)
    store = open_lookup(settings)
    loaded: list[int] = []
    try:
        for number in sorted(set(counts) | {primary.version}):
            if number not in kept:
                continue
            # Registered Arrow tables: DuckDB scans them in place, no copy into a table.
            rows.con.register(f"lookup_v{number}", prefetch.export(store, spec, number))
            loaded.append(number)
        if primary.version in kept:
            rows.con.execute(f"CREATE VIEW lookup_active AS SELECT * FROM lookup_v{primary.version}")
        if previous is not None:
            rows.con.register("lookup_previous", prefetch.export(store, spec, previous.version))
    except MigrateError as exc:
        log.warning("lookup versions of %s unavailable: %s", usecase.name, exc.what)
        return _Served(primary, None, (), tuple(sorted(counts)), f"lookup store unavailable: {exc.what}")
    finally:
        store.close()
    gone = tuple(sorted(n for n in counts if n not in kept))
    return _Served(primary, previous, tuple(loaded), gone, "")


def _entities(rows: Rows, usecase: UseCase, settings: Settings) -> bool:
    """Load the entity source (keys, created_at) as table ``entities``; False when the offline store is absent."""
    path = settings.offline_store_path
    if not path.exists():
        return False
    source = usecase.entity.source
    keys = ", ".join(f'"{k}" AS k_{k}' for k in usecase.entity.key_names)
    try:
        rows.con.execute(f"ATTACH '{path}' AS offline (READ_ONLY)")
        table = table_sql(rows.con, usecase, source.table, catalog="offline")  # times in offline_time_zone
        rows.con.execute(
            f'CREATE TEMP TABLE entities AS SELECT {keys}, CAST("{source.created_at_column}" AS TIMESTAMP) '
            f"AS created_at FROM {table}"
        )
        rows.con.execute("DETACH offline")
    except Exception as exc:  # duckdb raises many types here: a locked file, a missing table or column
        log.warning("entity source of %s unavailable: %s", usecase.name, exc)
        return False
    return True


class _Forks:
    """Measures each on a thread and a connection of its own (`Rows.fork`: a cursor of the comparison's connection
    with table ``s``) while the caller's queries run on theirs: a query's serial parts (a percentile's final
    selection, numpy over its result) then overlap the other's parallel scan.

    `close` closes the comparison's connection once no fork runs: DuckDB refuses to close a connection while a
    cursor of it is busy, and that refusal would hide the error that ended the comparison early."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows
        self._running: list[Future[Any]] = []

    def start(self, name: str, measure: Callable[[Rows], T]) -> Future[T]:
        fork = self._rows.fork()

        def run() -> T:
            try:
                return measure(fork)
            finally:
                fork.con.close()

        future = in_background(f"comparisons-{name}", run)
        self._running.append(future)
        return future

    def close(self) -> None:
        wait(self._running)
        self._rows.con.close()


def compare(
    usecase: UseCase,
    settings: Settings,
    window: Window | None = None,
    *,
    explain_limit: int = 200,
    on_step: OnStep | None = None,
    skew_grace: timedelta | None = None,
) -> Comparison:
    """Measure the use case's shadow log over ``window`` (default: everything) and decide the verdict; `on_step`
    is called with each of `STEPS` as it ends (a progress bar's total is their number). `skew_grace`: how far
    behind a request its real-time features may be (default ``cutover_policy.feature_skew_grace``, times the speed of
    the simulated clock a rehearsal recorded beside its shadow log: `migrate.clock.recorded_speed`)."""

    with tuned():  # BLAS on one thread, the heap frozen: comparisons/runtime.py
        return _compare(usecase, settings, window, explain_limit=explain_limit, on_step=on_step, skew_grace=skew_grace)


def _compare(
    usecase: UseCase,
    settings: Settings,
    window: Window | None,
    *,
    explain_limit: int,
    on_step: OnStep | None,
    skew_grace: timedelta | None,
) -> Comparison:
    clock = _Clock(on_step)
    if _may_deserialize(usecase, settings):  # the explanation re-scores with the live model
        warm("skops.io", "sklearn.ensemble", "sklearn.linear_model")
    window = window or Window()
    policy = usecase.cutover_policy
    metric_name = primary_metric(policy, usecase.label.kind)
    timeline, lookup_note = _timeline(usecase, settings)
    published = [(v.version, v.published_at) for v in timeline if v.published_at is not None]
    # The lookup versions the window most likely needs are read while the rows load.
    prefetch = Prefetch(settings, TableSpec.for_usecase(usecase, settings), likely_versions(timeline))
    shadow_root, labels_root = settings.shadow_dir / usecase.name, settings.labels_dir / usecase.name
    rows = load(usecase, shadow_root, labels_root, window, published=published)
    # The measures read the window's shadow files again (the feature-skew sample, the explanation's logged
    # features): a damaged file is named there too.
    forks = _Forks(rows)
    with readable(shadow_root, labels_root) as reading, closing(forks):
        reading.extend(rows.paths)
        clock.lap("load")
        served = _lookup(rows, usecase, settings, timeline, lookup_note, prefetch=prefetch)
        active, previous = served.primary, served.previous
        entities_loaded = _entities(rows, usecase, settings)
        clock.lap("lookup")
        threshold = policy.decision_threshold
        if active is None:
            floor = noise.unknown(served.note)
        elif active.version not in served.loaded:
            floor = noise.unknown(f"version {active.version} served the window but its rows are no longer kept")
        elif previous is None:
            floor = noise.unknown("one lookup version only: the noise floor is unknown", active.version)
        else:
            floor = noise.measure(rows.con, rows.keys, threshold, previous.version, active.version)
        if floor.known and floor.abs_delta.p95 is not None and floor.abs_delta.p95 > 0:
            tau, basis = floor.abs_delta.p95, "p95 |Δ| between the two newest batch versions (noise floor)"
        else:
            tau, basis = policy.disagreement_threshold, "cutover_policy.disagreement_threshold (noise floor unknown)"
        clock.lap("noise_floor")
        scoring = forks.start("accuracy", lambda fork: accuracy.measure(fork, policy.confidence))
        stale = staleness.measure(rows)
        cover = coverage.measure(rows, active is not None, entities_loaded)
        clock.lap("staleness_coverage")
        timed = forks.start("latency", latency.measure)
        agree = agreement.measure(rows, threshold, tau, basis)
        scatter_b, scatter_l = agreement.sample(rows, agree.pairs)
        wasted = waste.measure(rows, served.loaded, served.gone, served.note)
        hours = hourly.measure(rows, threshold, tau)
        lat = timed.result()
        clock.lap("agreement_latency_waste_hourly")
        parted = forks.start("segments", lambda fork: segments.measure(fork, metric_name))
        explanation = explain(rows, usecase, settings, tau, limit=explain_limit)
        clock.lap("explain")
        if skew_grace is None:  # a log written on a simulated clock (a rehearsal) lagged in wall-clock time
            skew_grace = policy.skew_grace * recorded_speed(settings.shadow_dir / usecase.name)
        skewed = skew.measure(rows, usecase, settings, skew_grace)
        clock.lap("feature_skew")
        parts = parted.result()
        clock.lap("segments")
        acc = scoring.result()
        checked = baselines.measure(rows, acc, settings, metric_name)
        clock.lap("accuracy")
        span = rows.con.execute(
            "SELECT min(request_time), max(request_time), bool_and(backtest), min(sp) FROM s"
        ).fetchall()[0]
        assert span is not None
    evidence = paired_evidence(
        metric_name,
        acc,
        cover,
        lat,
        checked.paths["live"],
        confidence=policy.confidence,
        fallback_rate=lat.fallback_rate,
        disagreement_share=agree.disagreement_share,
        noise_flip_share=floor.flip_share,
        live_flip_share=agree.flip_share,
        backtest=bool(span[2]),
        **skew.evidence(skewed),
    )
    verdict = decide(policy, evidence)
    clock.lap("verdict")
    return Comparison(
        usecase=usecase.name,
        since=window.since,
        until=window.until,
        first_request=span[0].astimezone(UTC),
        last_request=span[1].astimezone(UTC),
        shadow_sample_percent=float(span[3]) if span[3] is not None else 100.0,
        rows=rows.rows,
        files=rows.files,
        backtest=bool(span[2]),
        label_delay_s=parse_duration(usecase.label.available_after).total_seconds(),
        lookup_version=None if active is None else active.version,
        lookup_cutoff=None if active is None else active.data_interval_end,
        staleness=stale,
        coverage=cover,
        accuracy=acc,
        baselines=checked,
        feature_skew=skewed,
        segments=parts,
        agreement=agree,
        latency=lat,
        waste=wasted,
        noise_floor=floor,
        explanation=explanation,
        hourly=hours,
        verdict=verdict,
        timings=clock.timings,
        scatter={"batch": [float(v) for v in np.asarray(scatter_b)], "live": [float(v) for v in np.asarray(scatter_l)]},
    )


def paired_evidence(
    metric: str,
    acc: accuracy.Accuracy,
    cover: coverage.Coverage,
    lat: latency.Latency,
    live: baselines.PathCheck,
    *,
    confidence: float,
    **more: Any,
) -> Evidence:
    """The verdict's evidence from the paired measures of one comparison: ``batch`` is the side judged against and
    ``live`` the side judged (the lookup table and the online path, or the live model and the candidate); ``more``
    sets what only some comparisons measure."""
    score = acc.score(metric)
    assert score is not None
    return Evidence(
        requests=cover.requests,
        labeled_pairs=acc.pairs,
        metric=metric,
        higher_is_better=score.higher_is_better,
        batch_value=score.batch,
        live_value=score.live,
        improvement=score.improvement,
        improvement_low=score.improvement_low,
        improvement_high=score.improvement_high,
        confidence=confidence,
        live_share=cover.live_share,
        live_error_rate=lat.live.error_rate,
        live_p99_ms=lat.live.latency_ms.p99,
        live_served=lat.live.latency_ms.n,
        live_background_p99_ms=lat.live.background_ms.p99,
        loss_metric=live.loss_metric,
        live_loss=live.loss,
        baseline_loss=live.baseline_loss,
        live_calibration_error=live.calibration_error,
        live_holdout=live.holdout,
        live_offline_gap=live.offline_gap,
        **more,
    )
