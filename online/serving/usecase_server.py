"""Serving one use case: route each entity by its cutover flag, fall back to the lookup table, log the shadow.

The critical path only does what the stage serves; everything done for comparison (the online prediction in
`shadow`, the lookup read beside an online answer) is handed to a shadow sink (its own process in production).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from migrate.cutover.flags import Flag, FlagWatcher, in_shadow_sample, route
from migrate.cutover.guardrail import Guardrail
from migrate.usecase import UseCase
from online.serving.metrics import UseCaseSeries, fallback_reason, lookup_error_reason
from online.serving.pool import BoundedPool
from online.serving.prediction_paths import NOTHING, Key, Outcome, Paths, Request
from online.serving.predictor import OnlineResult
from online.serving.schemas import Source
from online.serving.shadow_handoff import ShadowSink
from online.serving.timing import REQUEST_TIMING

log = logging.getLogger(__name__)


class _RequestIds:
    """Request ids: 32 hex digits, a random 64-bit prefix per process and a counter (``uuid4`` asked the kernel
    for 16 random bytes per request, a measurable share of a 1-entity answer). A forked child draws its own."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_REQUEST_IDS = _RequestIds()


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class UseCaseServer:
    """Predictions for one use case, as its cutover flag says."""

    def __init__(
        self,
        usecase: UseCase,
        *,
        paths: Paths,
        flags: FlagWatcher,
        guardrail: Guardrail,
        shadow: ShadowSink | None,
        background: BoundedPool,
        metrics: Any,
        on_breach: Any,
        clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        self.usecase = usecase
        self.clock = clock
        self.paths = paths
        self.flags = flags
        self.guardrail = guardrail
        self.shadow = shadow
        self.background = background  # for the rare auto rollback, never per request
        self.metrics = metrics
        self.on_breach = on_breach
        self.key_names = usecase.entity.key_names
        self.series = UseCaseSeries(metrics, usecase.name)
        self._flag_seen: Flag | None = None  # the flag the stage gauges show, and whose calls the guardrail holds

    def publish_stage(self) -> None:
        """Set the stage gauges from the flag in force, when it changed since they were last set; on a new flag
        revision, empty the guardrail's window.

        The guardrail judges the online path at the flag in force. Calls made under an earlier one, before a
        promotion or still routed online while a rollback reached this worker, must not roll the new one back:
        in the bench, the slow calls a worker made between a breach and seeing its rollback stayed in the window
        and rolled the next promotion back on its first 100 calls."""
        flag, seen = self.flags.current(self.usecase.name), self._flag_seen
        if flag is not seen:
            self._flag_seen = flag
            self.metrics.served_stage(self.usecase.name, str(flag.stage), flag.percent)
            if seen is not None and flag.revision != seen.revision:
                self.guardrail.reset()

    def before_scrape(self) -> None:
        """Bring this worker's gauges up to date (requests write the guardrail's at most every 0.1 s)."""
        self.publish_stage()
        self.series.guardrail_window(self.guardrail.window)

    # -- the two paths -------------------------------------------------------------------------------------------

    async def _online(
        self, keys: Sequence[Key], indexes: Sequence[int], now: datetime, context: dict[str, Any]
    ) -> Outcome:
        outcome = await self.paths.online_async(keys, indexes, now, context)
        if indexes:
            breach = self.guardrail.record(outcome.error is None, outcome.latency_ms)
            if breach is not None:
                self.metrics.guardrail_breaches.labels(self.usecase.name, breach.kind).inc()
                self.background.submit(self.on_breach, self.usecase.name, str(breach))
            self.series.guardrail_window(self.guardrail.window, now=time.monotonic())
            self.series.online_latency.observe(outcome.latency_ms / 1000)
        return outcome

    def _count(
        self,
        counts: dict[Source, int],
        predictions: list[PredictionBody],
        ages: dict[str, list[float]],
        fallback_error: str | None,
    ) -> None:
        for source, count in counts.items():
            self.series.predictions(source, count)
        misses = sum(p["miss"] for p in predictions)
        if misses:
            self.series.lookup_misses.inc(misses)
        if fallback_error is not None and counts.get("batch_fallback"):
            reason = fallback_reason(fallback_error)
            self.metrics.fallbacks.labels(self.usecase.name, reason).inc(counts["batch_fallback"])
        self.series.feature_ages(ages)

    def _shadow(self, req: Request, predictions: list[PredictionBody], online: Outcome, batch: Outcome) -> None:
        """Hand the request's sampled entities to the shadow comparison (`shadow.sample_percent` of the use case);
        the others are counted, never compared."""
        served = [p["source"] for p in predictions]
        percent = self.usecase.shadow.sample_percent
        if percent < 100:
            kept = [i for i, key in enumerate(req.keys) if in_shadow_sample(self.usecase.name, key, percent)]
            if len(kept) < len(req.keys):
                self.series.shadow_unsampled.inc(len(req.keys) - len(kept))
                if not kept:
                    return
                entities = [req.entities[i] for i in kept]
                req = Request(req.id, req.now, req.flag, [req.keys[i] for i in kept], entities, req.context, percent)
                served, online, batch = [served[i] for i in kept], online.only(kept), batch.only(kept)
            else:
                req = Request(req.id, req.now, req.flag, req.keys, req.entities, req.context, percent)
        if self.shadow is not None and not self.shadow.submit(req, served, online, batch):
            self.metrics.shadow_skipped.labels(self.usecase.name).inc()  # the sink is full: dropped, counted

    # -- a request -----------------------------------------------------------------------------------------------

    async def predict(self, entities: Sequence[dict[str, int | str]], context: dict[str, Any]) -> Answer:
        """Answer every entity (the body of `PredictResponse`, built as plain dicts); never raises for a failing
        path."""
        request_id = _REQUEST_IDS.next()
        now = self.clock()
        flag = self.flags.current(self.usecase.name)
        if flag is not self._flag_seen:
            self.publish_stage()
        keys: list[Key] = [tuple(entity[name] for name in self.key_names) for entity in entities]
        online_idx = [i for i, key in enumerate(keys) if route(flag, key) == "online"]
        online_set = set(online_idx)
        batch_idx = [i for i in range(len(keys)) if i not in online_set]

        online = await self._online(keys, online_idx, now, context) if online_idx else NOTHING
        fallback_idx = online_idx if online.error is not None and flag.falls_back else []
        lookup_idx = batch_idx + fallback_idx
        batch = await self.paths.lookup_read_async(keys, lookup_idx) if lookup_idx else NOTHING
        if batch.error is not None and lookup_idx:  # each such entity is answered with the error: counted here
            self.metrics.lookup_errors.labels(self.usecase.name, lookup_error_reason(batch.error)).inc(len(lookup_idx))

        timing = REQUEST_TIMING.get()
        if timing is not None:
            first = next(iter(online.results.values()), None)
            if first is not None:
                timing.features_ms, timing.model_ms = first.features_ms, first.model_ms
            if lookup_idx:
                timing.lookup_ms = batch.latency_ms

        predictions: list[PredictionBody] = []
        counts: dict[Source, int] = {}
        ages: dict[str, list[float]] = {}
        for i, entity in enumerate(entities):
            if i in online_set and online.error is None:
                result = online.results[i]
                answer = _from_online(entity, result)
                for group, age in result.group_ages_s.items():
                    if age is not None:
                        ages.setdefault(group, []).append(age)
            elif i in online_set and not flag.falls_back:
                answer = _answer(entity, "online", error=online.error)
            else:
                source: Source = "batch_fallback" if i in online_set else "batch"
                answer = _from_lookup(entity, batch.results.get(i), source, now, batch.error)
                if answer["data_age_s"] is not None:
                    ages.setdefault("lookup", []).append(answer["data_age_s"])
            predictions.append(answer)
            counts[answer["source"]] = counts.get(answer["source"], 0) + 1
        self._count(counts, predictions, ages, None if not fallback_idx else online.error)

        # Every stage that has both paths logs both: shadow, canary and online (online_only reads no lookup).
        if flag.logs_shadow and self.shadow is not None:
            self._shadow(Request(request_id, now, flag, keys, entities, context), predictions, online, batch)
        return {
            "request_id": request_id,
            "usecase": self.usecase.name,
            "stage": str(flag.stage),
            "predictions": predictions,
        }


class PredictionBody(TypedDict):
    """One entity's answer, as `online.serving.schemas.Prediction` documents it."""

    key: dict[str, int | str]
    prediction: float | None
    source: Source
    model_version: str | None
    data_age_s: float | None
    miss: bool
    error: str | None
    missing_features: list[str] | None
    group_ages_s: dict[str, float | None] | None


class Answer(TypedDict):
    """A request's answer, as `online.serving.schemas.PredictResponse` documents it."""

    request_id: str
    usecase: str
    stage: str
    predictions: list[PredictionBody]


def _answer(
    entity: dict[str, int | str],
    source: Source,
    *,
    prediction: float | None = None,
    model_version: str | None = None,
    data_age_s: float | None = None,
    miss: bool = False,
    error: str | None = None,
    missing_features: list[str] | None = None,
    group_ages_s: dict[str, float | None] | None = None,
) -> PredictionBody:
    return {
        "key": entity,
        "prediction": prediction,
        "source": source,
        "model_version": model_version,
        "data_age_s": data_age_s,
        "miss": miss,
        "error": error,
        "missing_features": missing_features,
        "group_ages_s": group_ages_s,
    }


def _from_online(entity: dict[str, int | str], result: OnlineResult) -> PredictionBody:
    # The result's own list and dict, not copies: the answer is serialised once, right after.
    return _answer(
        entity,
        "online",
        prediction=result.prediction,
        model_version=result.model_version,
        data_age_s=result.data_age_s,
        missing_features=result.missing,
        group_ages_s=result.group_ages_s,
    )


def _from_lookup(
    entity: dict[str, int | str], row: Any, source: Source, now: datetime, error: str | None
) -> PredictionBody:
    if row is None:
        return _answer(entity, source, miss=error is None, error=error)
    return _answer(
        entity,
        source,
        prediction=None if row.prediction is None else float(row.prediction),
        model_version=row.model_version,
        data_age_s=(now - row.features_as_of).total_seconds(),
    )
