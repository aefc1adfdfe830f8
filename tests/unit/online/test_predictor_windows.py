"""The online path evaluates the windows a model reads, and reports every group's age whether or not it reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from migrate.registry import load_usecase
from migrate.scoring import Model
from online.features.store import BatchRow, OnlineRead
from online.serving import predictor as predictor_module
from online.serving.predictor import OnlinePredictor

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
USECASE = load_usecase(ROOT / "usecases" / "item_availability.yaml")
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
NEWEST = NOW.timestamp() - 90.0  # the entity's last event, 90 s before the request
NOT_FOUND = NOW.timestamp() - 600.0  # its last "not found" scan, 10 minutes before


class _Store:
    """Batch features for every entity; a window state (no bucket, one last match) for the first only."""

    def read_online(self, usecase: str, keys: Any, names: Any, group_keys: Any, partitions: int) -> OnlineRead:
        features = [BatchRow([0.5] * len(names), [AS_OF] * len(names)) for _ in keys]
        state = [NEWEST, [NOT_FOUND], []]  # WindowState.to_json: newest event, last matches, buckets
        return OnlineRead(features, {group: [[state]] + [[] for _ in keys[1:]] for group in group_keys})


def _model(names: list[str]) -> Model:
    rng = np.random.default_rng(0)
    x = rng.random((200, len(names)))
    y = (x[:, 0] + 0.3 * rng.random(200) > 0.6).astype(int)
    estimator = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y)
    return Model(USECASE.name, "v1", "sha", tuple(names), "binary", estimator)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = predictor_module.evaluate

    def evaluate(spec: Any, partials: Any, at_s: float) -> list[float]:
        calls.append(len(partials))
        return real(spec, partials, at_s)

    monkeypatch.setattr(predictor_module, "evaluate", evaluate)
    return calls


def test_a_model_of_batch_features_only_evaluates_no_window_yet_reports_the_window_ages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _spy(monkeypatch)
    predictor = OnlinePredictor(USECASE, _model(list(USECASE.feature_names)), _Store())  # type: ignore[arg-type]
    first, second = predictor.predict([(1, 7), (2, 8)], NOW, {})
    assert calls == []
    window_names = [f.name for f in USECASE.realtime_features.features]  # type: ignore[union-attr]
    for name in window_names:  # by hand: the request's instant minus the entity's newest event
        assert first.feature_ages_s[name] == pytest.approx(90.0)
        assert name not in second.feature_ages_s  # no event yet: no age
    assert first.group_ages_s["entity"] == pytest.approx(90.0) and second.group_ages_s["entity"] is None
    assert first.feature_ages_s["popularity"] == pytest.approx((NOW - AS_OF).total_seconds())
    assert set(first.features) == set(USECASE.feature_names) and first.missing == []


def test_a_model_reading_windows_evaluates_them_per_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    names = [*USECASE.feature_names, "scans_30m", "minutes_since_not_found"]
    predictor = OnlinePredictor(USECASE, _model(names), _Store())  # type: ignore[arg-type]
    first, second = predictor.predict([(1, 7), (2, 8)], NOW, {})
    assert calls == [1, 0]  # each entity's partial states: one partition's for the first, none for the second
    assert first.features["minutes_since_not_found"] == pytest.approx(10.0)  # by hand: 600 s before the request
    assert first.features["scans_30m"] == 0.0 and second.features["scans_30m"] == 0.0  # no bucket: no scan
    assert second.features["minutes_since_not_found"] is None and second.missing == ["minutes_since_not_found"]
