"""The trainer of the item-availability example: gradient boosting on the batch features (batch model), or on
the batch and real-time features (online model).

It learns from the scan events of the ``TRAINING_DAYS`` before ``as_of``, each paired point in time with the
features the nightly batch had at that moment (and, online, the real-time features the stream processor held just
before it), and holds the last day out to measure it (`migrate.examples.skeleton.training`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from migrate.batch.training import TrainedModel
from migrate.examples.skeleton.training import HOLDOUT, TRAINING_DAYS, Matrix, WindowTrainer, boosted_trees
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "TRAINING_DAYS", "make_estimator", "train"]


def make_estimator() -> HistGradientBoostingClassifier:
    return boosted_trees(HistGradientBoostingClassifier, max_iter=100, min_samples_leaf=50)


def _shortfall(found: npt.NDArray[Any]) -> str | None:
    return ", not both classes" if np.unique(found).size < 2 else None


def _measure(
    estimator: HistGradientBoostingClassifier, x_test: Matrix, y_test: npt.NDArray[Any], _: npt.NDArray[Any]
) -> dict[str, float]:
    proba = estimator.predict_proba(x_test)[:, 1]
    return {
        "auc": float(roc_auc_score(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y_test, proba)),
        "holdout_positive_rate": float(y_test.mean()),
    }


_TRAINER = WindowTrainer("binary", "events", make_estimator, _shortfall, _measure)


def train(usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
    """Fit on events in [as_of - 10 days, as_of - 1 day) and report AUC, log loss and Brier on the last day."""
    return _TRAINER.train(usecase, offline_path, as_of, online=online)
