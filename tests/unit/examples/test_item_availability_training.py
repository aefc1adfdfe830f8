"""The example trainer: learns something real from batch features, the same way every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from migrate.errors import OfflineStoreError, UseCaseError
from migrate.examples.item_availability.generator import GenerationSummary, SimulationConfig, generate
from migrate.examples.item_availability.training import train
from migrate.usecase import UseCase


@pytest.fixture(scope="module")
def six_days(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    config = SimulationConfig(seed=11, stores=4, products=60, days=6)
    return generate(tmp_path_factory.mktemp("six_days") / "offline.duckdb", config)


def test_model_beats_chance_on_the_held_out_day(six_days: GenerationSummary, usecase: UseCase) -> None:
    model = train(usecase, six_days.path, six_days.end)
    assert model.metrics["auc"] > 0.65
    assert model.metrics["n_train"] > 3_000
    assert model.metrics["n_test"] > 500
    # Better calibrated than always predicting the holdout's base rate.
    base = model.metrics["holdout_positive_rate"]
    assert model.metrics["brier"] < base * (1 - base)
    assert model.feature_names == usecase.feature_names
    assert model.trained_on == (six_days.end - timedelta(days=10), six_days.end - timedelta(days=1))


def test_training_is_deterministic(six_days: GenerationSummary, usecase: UseCase) -> None:
    first, second = train(usecase, six_days.path, six_days.end), train(usecase, six_days.path, six_days.end)
    assert first.metrics == second.metrics
    probe = np.array([[0.5, 4.0, 0.8, 30.0, 0.85, 0.8, 1.0, 100.0], [np.nan, 0.0, np.nan, 0.0, 0.9, np.nan, 0.2, 0.5]])
    assert np.array_equal(first.estimator.predict_proba(probe), second.estimator.predict_proba(probe))


def test_training_window_without_events_is_a_clear_error(six_days: GenerationSummary, usecase: UseCase) -> None:
    with pytest.raises(OfflineStoreError, match=r"training window .* has 0 labelled events"):
        train(usecase, six_days.path, six_days.start)


def test_regression_labels_need_another_trainer(usecase: UseCase, tmp_path: Path) -> None:
    raw = usecase.model_dump()
    raw["label"]["kind"] = "regression"
    with pytest.raises(UseCaseError, match=r"label\.kind"):
        train(UseCase.model_validate(raw), tmp_path / "unused.duckdb", datetime(2026, 11, 7, tzinfo=UTC))
