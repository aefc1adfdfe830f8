"""The online path: features from the feature store at request time, scored by the one scoring function."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from migrate.feature_windows import since_minutes
from migrate.scoring import Model, score
from online.features.store import FeatureStore


@dataclass(frozen=True)
class OnlineResult:
    """One entity's live prediction and the age of each feature behind it."""

    prediction: float
    model_version: str
    feature_ages_s: dict[str, float] = field(default_factory=dict)
    features: dict[str, float | None] = field(default_factory=dict)  # the values scored (None: missing → NaN)

    @property
    def data_age_s(self) -> float | None:
        """Age of the oldest feature used (None when the entity had no stored feature at all)."""
        return max(self.feature_ages_s.values()) if self.feature_ages_s else None


class OnlinePredictor:
    """Scores entities live for one use case: one pipelined feature read, one model call for the whole batch."""

    def __init__(self, usecase: str, model: Model, features: FeatureStore, since: frozenset[str] = frozenset()) -> None:
        """`since`: the ``minutes_since`` real-time features, stored as the event time of the last matching event
        and turned into minutes before the request time here (as training does at the label's time)."""
        self.usecase = usecase
        self.model = model
        self.features = features
        self._names = list(model.feature_names)
        self._since = frozenset(n for n in self._names if n in since)

    def predict(self, keys: Sequence[tuple[int | str, ...]], now: datetime | Sequence[datetime]) -> list[OnlineResult]:
        """Live predictions for `keys`, in order, feature ages as of `now` (one time, or one per key: coalesced
        requests each keep their own); raises the feature store's error when it cannot answer."""
        stored = self.features.read(self.usecase, keys, self._names)
        nows = [now] * len(keys) if isinstance(now, datetime) else now
        matrix = np.full((len(keys), len(self._names)), np.nan, dtype=np.float64)
        ages: list[dict[str, float]] = []
        used: list[dict[str, float | None]] = []
        for row, values in enumerate(stored):
            entity_ages: dict[str, float] = {}
            entity_values: dict[str, float | None] = {}
            if values:
                for column, name in enumerate(self._names):
                    feature = values.get(name)
                    if feature is None:
                        continue
                    value = feature.value
                    if value is not None and not math.isnan(value):
                        if name in self._since:
                            value = since_minutes(value, nows[row].timestamp())
                        matrix[row, column] = value
                        entity_values[name] = value
                    else:
                        entity_values[name] = None
                    entity_ages[name] = (nows[row] - feature.event_time).total_seconds()
            ages.append(entity_ages)
            used.append(entity_values)
        predictions = score(self.model, matrix)
        return [
            OnlineResult(float(p), self.model.version, entity_ages, entity_values)
            for p, entity_ages, entity_values in zip(predictions, ages, used, strict=True)
        ]
