"""The trainer of the delivery-ETA example: gradient-boosted regression of delivery minutes on the batch features
(batch model), or on the batch and real-time features (online model).

It learns from the deliveries of the ``TRAINING_DAYS`` before ``as_of``, each paired point in time with the
features the nightly batch had at that moment (and, online, the real-time features the stream processor held just
before it), and holds the last day out to report MAE and RMSE in minutes (`migrate.examples.skeleton.training`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingRegressor

from migrate.batch.training import TrainedModel
from migrate.examples.skeleton.training import HOLDOUT, TRAINING_DAYS, Matrix, WindowTrainer, boosted_trees
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "MIN_EVENTS", "TRAINING_DAYS", "make_estimator", "train"]

MIN_EVENTS = 50  # fewer labelled deliveries than this in a part: no model worth storing


def make_estimator() -> HistGradientBoostingRegressor:
    return boosted_trees(HistGradientBoostingRegressor, max_iter=200, min_samples_leaf=40)


def _shortfall(minutes: npt.NDArray[Any]) -> str | None:
    return f" (at least {MIN_EVENTS} needed)" if minutes.size < MIN_EVENTS else None


def _measure(
    estimator: HistGradientBoostingRegressor, x_test: Matrix, y_test: npt.NDArray[Any], y_train: npt.NDArray[Any]
) -> dict[str, float]:
    error = estimator.predict(x_test) - y_test
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        # What knowing nothing scores: the training mean for every order.
        "mae_of_mean": float(np.mean(np.abs(y_test - y_train.mean()))),
        "holdout_mean_minutes": float(y_test.mean()),
    }


_TRAINER = WindowTrainer("regression", "deliveries", make_estimator, _shortfall, _measure)


def train(usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
    """Fit on deliveries in [as_of - 10 days, as_of - 1 day) and report MAE and RMSE on the last day."""
    return _TRAINER.train(usecase, offline_path, as_of, online=online)
