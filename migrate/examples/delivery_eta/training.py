"""The trainer of the delivery-ETA example: gradient-boosted regression of delivery minutes on the batch features
(batch model), or on the batch and real-time features (online model).

It learns from the deliveries of the ``TRAINING_DAYS`` before ``as_of``, each paired point in time with the
features the nightly batch had at that moment (and, online, the real-time features the stream processor held just
before it), and holds the last day out to report MAE and RMSE in minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingRegressor

from migrate.batch.event_history import online_training_frame
from migrate.batch.offline_store import open_offline, training_frame, utc_aware
from migrate.batch.training import TrainedModel
from migrate.errors import OfflineStoreError, UseCaseError
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "MIN_EVENTS", "TRAINING_DAYS", "make_estimator", "train"]

TRAINING_DAYS = 10
HOLDOUT = timedelta(days=1)
MIN_EVENTS = 50  # fewer labelled deliveries than this in a part: no model worth storing
RANDOM_STATE = 0


def _column(frame: pa.Table, name: str) -> npt.NDArray[np.float64]:
    # Null features become NaN, which the boosted trees route as "missing" (no deliveries → no mean).
    return np.asarray(frame[name].to_numpy(zero_copy_only=False), dtype=np.float64)


def make_estimator() -> HistGradientBoostingRegressor:
    # No early stopping: its validation split would be random, and the holdout already measures the fit.
    return HistGradientBoostingRegressor(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )


def train(usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
    """Fit on deliveries in [as_of - 10 days, as_of - 1 day) and report MAE and RMSE on the last day."""
    if usecase.label.kind != "regression":
        raise UseCaseError(
            f"usecases/{usecase.name}.yaml",
            "label.kind",
            f"is {usecase.label.kind!r}",
            fix="this trainer fits a regressor; use kind: regression or another trainer",
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
    times = frame["event_time"].to_numpy(zero_copy_only=False)
    is_test = np.asarray(times >= np.datetime64(split.replace(tzinfo=None), "us"))
    names = usecase.online_feature_names if online else usecase.feature_names
    x = np.column_stack([_column(frame, n) for n in names]) if frame.num_rows else np.empty((0, len(names)))
    y = _column(frame, usecase.label.name)
    x_train, y_train, x_test, y_test = x[~is_test], y[~is_test], x[is_test], y[is_test]
    for part, labels, (lo, hi) in (("training", y_train, (start, split)), ("holdout", y_test, (split, as_of))):
        if labels.size < MIN_EVENTS:
            raise OfflineStoreError(
                f"the {part} window {lo.isoformat()} - {hi.isoformat()} of {usecase.name!r} has "
                f"{labels.size} labelled deliveries (at least {MIN_EVENTS} needed)",
                fix="generate more days of deliveries (the trainer reads 10 days before as_of) or pick a later as_of",
            )
    estimator = make_estimator().fit(x_train, y_train)
    error = estimator.predict(x_test) - y_test
    metrics = {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        # What knowing nothing scores: the training mean for every order.
        "mae_of_mean": float(np.mean(np.abs(y_test - y_train.mean()))),
        "holdout_mean_minutes": float(y_test.mean()),
        "n_train": float(y_train.size),
        "n_test": float(y_test.size),
    }
    return TrainedModel(estimator=estimator, feature_names=list(names), metrics=metrics, trained_on=(start, split))
