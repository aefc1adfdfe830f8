"""Serving one use case: route each entity by its cutover flag, fall back to the lookup table, log the shadow.

The critical path only does what the stage serves; everything done for comparison (the online prediction in
`shadow`, the lookup read beside an online answer) runs on a bounded background pool after the response.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from migrate.canary import Guardrail
from migrate.flags import Flag, FlagWatcher, route
from migrate.usecase import UseCase
from online.pool import BoundedPool
from online.predictor import OnlinePredictor, OnlineResult
from online.schemas import Prediction, PredictResponse, Source
from online.shadow_log import ShadowLogger, ShadowRecord

log = logging.getLogger(__name__)
Key = tuple[int | str, ...]


@dataclass
class _Outcome:
    """What one path produced for the entities it was asked about."""

    results: dict[int, Any]
    latency_ms: float
    error: str | None = None
    asked: frozenset[int] = frozenset()  # the entities this path was called for, answered or not


@dataclass(frozen=True)
class _Request:
    """What the shadow comparison needs of one request."""

    id: str
    now: datetime
    flag: Flag
    keys: list[Key]
    entities: Sequence[dict[str, int | str]]
    context: dict[str, Any]


class UseCaseServer:
    """Predictions for one use case, as its cutover flag says."""

    def __init__(
        self,
        usecase: UseCase,
        *,
        lookup: Any,
        lookup_spec: Any,
        predictor: OnlinePredictor,
        flags: FlagWatcher,
        guardrail: Guardrail,
        shadow: ShadowLogger | None,
        background: BoundedPool,
        metrics: Any,
        on_breach: Any,
    ) -> None:
        self.usecase = usecase
        self.lookup = lookup
        self.spec = lookup_spec
        self.predictor = predictor
        self.flags = flags
        self.guardrail = guardrail
        self.shadow = shadow
        self.background = background
        self.metrics = metrics
        self.on_breach = on_breach
        self.key_names = usecase.entity.key_names

    # -- the two paths -------------------------------------------------------------------------------------------

    def _lookup(self, keys: Sequence[Key], indexes: Sequence[int]) -> _Outcome:
        started = time.perf_counter()
        try:
            rows = self.lookup.get_many(self.spec, [keys[i] for i in indexes]) if indexes else {}
        except Exception as exc:
            return _Outcome(
                {}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", frozenset(indexes)
            )
        return _Outcome(
            {i: rows.get(keys[i]) for i in indexes}, (time.perf_counter() - started) * 1000, asked=frozenset(indexes)
        )

    def _online(self, keys: Sequence[Key], indexes: Sequence[int], now: datetime) -> _Outcome:
        started = time.perf_counter()
        try:
            results = self.predictor.predict([keys[i] for i in indexes], now) if indexes else []
        except Exception as exc:
            outcome = _Outcome(
                {}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", frozenset(indexes)
            )
        else:
            outcome = _Outcome(
                dict(zip(indexes, results, strict=True)),
                (time.perf_counter() - started) * 1000,
                asked=frozenset(indexes),
            )
        if indexes:
            breach = self.guardrail.record(outcome.error is None, outcome.latency_ms)
            if breach is not None:
                self.background.submit(self.on_breach, self.usecase.name, str(breach))
            self.metrics.online_latency.labels(self.usecase.name).observe(outcome.latency_ms / 1000)
        return outcome

    # -- a request -----------------------------------------------------------------------------------------------

    def predict(self, entities: Sequence[dict[str, int | str]], context: dict[str, Any]) -> PredictResponse:
        """Answer every entity; never raises for a failing path."""
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        flag = self.flags.current(self.usecase.name)
        keys: list[Key] = [tuple(entity[name] for name in self.key_names) for entity in entities]
        online_idx = [i for i, key in enumerate(keys) if route(flag, key) == "online"]
        online_set = set(online_idx)
        batch_idx = [i for i in range(len(keys)) if i not in online_set]

        online = self._online(keys, online_idx, now)
        fallback_idx = online_idx if online.error is not None and flag.falls_back else []
        batch = self._lookup(keys, batch_idx + fallback_idx) if batch_idx or fallback_idx else _Outcome({}, 0.0)

        predictions: list[Prediction] = []
        for i in range(len(keys)):
            if i in online_set and online.error is None:
                predictions.append(self._from_online(entities[i], online.results[i]))
            elif i in online_set and not flag.falls_back:
                predictions.append(
                    Prediction(
                        key=entities[i],
                        prediction=None,
                        source="online",
                        model_version=None,
                        data_age_s=None,
                        error=online.error,
                    )
                )
            else:
                source: Source = "batch_fallback" if i in online_set else "batch"
                predictions.append(self._from_lookup(entities[i], batch.results.get(i), source, now, batch.error))

        for source, count in Counter(p.source for p in predictions).items():
            self.metrics.predictions.labels(self.usecase.name, source).inc(count)

        # Every stage that has both paths logs both: shadow, canary and online (online_only reads no lookup).
        if flag.computes_online and flag.reads_lookup and self.shadow is not None:
            self._submit_shadow(_Request(request_id, now, flag, keys, entities, context), predictions, online, batch)
        return PredictResponse(
            request_id=request_id, usecase=self.usecase.name, stage=flag.stage, predictions=predictions
        )

    @staticmethod
    def _from_online(entity: dict[str, int | str], result: OnlineResult) -> Prediction:
        return Prediction(
            key=entity,
            prediction=result.prediction,
            source="online",
            model_version=result.model_version,
            data_age_s=result.data_age_s,
        )

    @staticmethod
    def _from_lookup(
        entity: dict[str, int | str], row: Any, source: Source, now: datetime, error: str | None
    ) -> Prediction:
        if row is None:
            return Prediction(
                key=entity,
                prediction=None,
                source=source,
                model_version=None,
                data_age_s=None,
                miss=error is None,
                error=error,
            )
        return Prediction(
            key=entity,
            prediction=row.prediction,
            source=source,
            model_version=row.model_version,
            data_age_s=(now - row.features_as_of).total_seconds(),
        )

    # -- the shadow, off the critical path -----------------------------------------------------------------------

    def _submit_shadow(self, req: _Request, served: list[Prediction], online: _Outcome, batch: _Outcome) -> None:
        submitted = self.background.submit(self._shadow, req, served, online, batch)
        if submitted is None:  # the pool is full or shutting down: the comparison is skipped, and counted
            self.metrics.shadow_skipped.labels(self.usecase.name).inc()

    def _shadow(self, req: _Request, served: list[Prediction], online: _Outcome, batch: _Outcome) -> None:
        request_id, now, flag, keys, entities, context = (
            req.id,
            req.now,
            req.flag,
            req.keys,
            req.entities,
            req.context,
        )
        shadow = self.shadow
        assert shadow is not None  # only submitted when a logger exists
        try:
            # Only what neither path was asked for is computed here: a path that already failed is not retried.
            missing_online = [i for i in range(len(keys)) if i not in online.asked]
            missing_batch = [i for i in range(len(keys)) if i not in batch.asked] if flag.reads_lookup else []
            extra_online = self._online(keys, missing_online, now) if missing_online else _Outcome({}, 0.0)
            extra_batch = self._lookup(keys, missing_batch) if missing_batch else _Outcome({}, 0.0)
            for i, entity in enumerate(entities):
                on = online.results.get(i) or extra_online.results.get(i)
                on_error = online.error if i in online.asked else extra_online.error
                row = batch.results.get(i) or extra_batch.results.get(i)
                shadow.log(
                    ShadowRecord(
                        request_id=request_id,
                        usecase=self.usecase.name,
                        key=dict(entity),
                        request_time=now,
                        stage=str(flag.stage),
                        percent=flag.percent or 0,
                        served_source=served[i].source,
                        batch_prediction=None if row is None else row.prediction,
                        batch_model_version=None if row is None else row.model_version,
                        batch_data_age_s=None if row is None else (now - row.features_as_of).total_seconds(),
                        batch_miss=row is None and batch.error is None and flag.reads_lookup,
                        online_prediction=None if on is None else on.prediction,
                        online_model_version=None if on is None else on.model_version,
                        online_feature_ages_s={} if on is None else on.feature_ages_s,
                        batch_latency_ms=batch.latency_ms + extra_batch.latency_ms,
                        online_latency_ms=online.latency_ms + extra_online.latency_ms,
                        batch_error=batch.error or extra_batch.error,
                        online_error=on_error,
                        context=context,
                    )
                )
        except Exception:
            log.exception("shadow record of request %s for %s failed", request_id, self.usecase.name)
            self.metrics.shadow_skipped.labels(self.usecase.name).inc()
