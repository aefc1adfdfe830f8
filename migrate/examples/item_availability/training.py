"""The trainer of the item-availability example: gradient boosting on the batch features (batch model), or on
the batch and real-time features (online model).

It learns from the scan events of the ``TRAINING_DAYS`` before ``as_of``, each paired point in time with the
features the nightly batch had at that moment (and, online, the real-time features the stream processor held just
before it), and holds the last day out to measure it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from migrate.batch.event_history import online_training_frame
from migrate.batch.offline_store import open_offline, training_frame, utc_aware
from migrate.batch.training import TrainedModel
from migrate.errors import OfflineStoreError, UseCaseError
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "TRAINING_DAYS", "train"]

TRAINING_DAYS = 10
HOLDOUT = timedelta(days=1)
RANDOM_STATE = 0


def _matrix(frame: pa.Table, names: list[str]) -> npt.NDArray[np.float64]:
    # Null features become NaN, which the boosted trees route as "missing" (no scans → no rate).
    return np.column_stack([frame[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names])


def _labels(frame: pa.Table, name: str) -> npt.NDArray[np.int64]:
    return np.asarray(frame[name].to_numpy(zero_copy_only=False), dtype=np.int64)


def make_estimator() -> HistGradientBoostingClassifier:
    # No early stopping: its validation split would be random, and the holdout already measures the fit.
    return HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=50,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )


def train(usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
    """Fit on events in [as_of - 10 days, as_of - 1 day) and report AUC, log loss and Brier on the last day."""
    if usecase.label.kind != "binary":
        raise UseCaseError(
            f"usecases/{usecase.name}.yaml",
            "label.kind",
            f"is {usecase.label.kind!r}",
            fix="this trainer fits a classifier; use kind: binary or another trainer",
        )
    as_of = utc_aware(as_of)
    start, split = as_of - timedelta(days=TRAINING_DAYS), as_of - HOLDOUT
    con = open_offline(offline_path)
    try:
        frame = (
            online_training_frame(con, usecase, start, as_of) if online else training_frame(con, usecase, start, as_of)
        )
    finally:
        con.close()
    times = frame["event_time"]
    is_test = np.asarray(times.to_numpy(zero_copy_only=False) >= np.datetime64(split.replace(tzinfo=None), "us"))
    names = usecase.online_feature_names if online else usecase.feature_names
    x, y = _matrix(frame, names), _labels(frame, usecase.label.name)
    x_train, y_train, x_test, y_test = x[~is_test], y[~is_test], x[is_test], y[is_test]
    for part, labels, (lo, hi) in (("training", y_train, (start, split)), ("holdout", y_test, (split, as_of))):
        if np.unique(labels).size < 2:
            raise OfflineStoreError(
                f"the {part} window {lo.isoformat()} - {hi.isoformat()} of {usecase.name!r} has "
                f"{labels.size} labelled events, not both classes",
                fix="generate more days of events (the trainer needs 10 days before as_of) or pick a later as_of",
            )
    estimator = make_estimator().fit(x_train, y_train)
    proba = estimator.predict_proba(x_test)[:, 1]
    metrics = {
        "auc": float(roc_auc_score(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y_test, proba)),
        "holdout_positive_rate": float(y_test.mean()),
        "n_train": float(y_train.size),
        "n_test": float(y_test.size),
    }
    return TrainedModel(estimator=estimator, feature_names=list(names), metrics=metrics, trained_on=(start, split))
