"""Serving one use case: route each entity by its cutover flag, fall back to the lookup table, log the shadow.

The critical path only does what the stage serves; everything done for comparison (the online prediction in
`shadow`, the lookup read beside an online answer) is handed to a shadow sink (its own process in production).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from migrate.canary import Guardrail
from migrate.flags import FlagWatcher, route
from migrate.usecase import UseCase
from online.paths import NOTHING, Key, Outcome, Paths, Request
from online.pool import BoundedPool
from online.predictor import OnlineResult
from online.schemas import Prediction, PredictResponse, Source
from online.shadow_process import ShadowSink

log = logging.getLogger(__name__)


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
    ) -> None:
        self.usecase = usecase
        self.paths = paths
        self.flags = flags
        self.guardrail = guardrail
        self.shadow = shadow
        self.background = background  # for the rare auto rollback, never per request
        self.metrics = metrics
        self.on_breach = on_breach
        self.key_names = usecase.entity.key_names

    # -- the two paths -------------------------------------------------------------------------------------------

    def _online(self, keys: Sequence[Key], indexes: Sequence[int], now: datetime) -> Outcome:
        outcome = self.paths.online(keys, indexes, now)
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
        batch = self.paths.lookup_read(keys, batch_idx + fallback_idx) if batch_idx or fallback_idx else NOTHING

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
            served = [p.source for p in predictions]
            if not self.shadow.submit(Request(request_id, now, flag, keys, entities, context), served, online, batch):
                self.metrics.shadow_skipped.labels(self.usecase.name).inc()  # the sink is full: dropped, counted
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
