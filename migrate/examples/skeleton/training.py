"""The examples' trainer, parameterised by use case: boosted trees on the days before ``as_of``, the last day whose
labels are all in held out.

It learns from the labelled events of the ``TRAINING_DAYS`` before ``as_of``, each paired point in time with the
features the nightly batch had at that moment (and, online, the real-time features the stream processor held just
before it), and measures the model on the last day before the labels close: ``as_of`` for a label the event
carries, ``as_of − label.available_after`` for one that waits for its window (``label.from_event``, a table of past
requests), whose later rows the training frame leaves out. An example supplies the label kind, its estimator, what
makes a window too thin to train on, and its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from migrate.batch.event_history import online_training_frame, refused_request_metrics
from migrate.batch.offline_store import labels_closed, open_offline, training_frame, utc_aware
from migrate.batch.own_outcome import own_outcome_metrics
from migrate.batch.training import TrainedModel
from migrate.errors import OfflineStoreError, UseCaseError
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "RANDOM_STATE", "TRAINING_DAYS", "Matrix", "WindowTrainer", "boosted_trees"]

TRAINING_DAYS = 10
HOLDOUT = timedelta(days=1)
RANDOM_STATE = 0

Matrix = npt.NDArray[np.float64]
E = TypeVar("E")
LabelKind = Literal["binary", "regression"]
# What each label kind trains: the estimator named in errors, and the labels' dtype.
_FITS: dict[str, tuple[str, type[np.generic]]] = {
    "binary": ("a classifier", np.int64),
    "regression": ("a regressor", np.float64),
}


def boosted_trees(estimator: Callable[..., E], *, max_iter: int, min_samples_leaf: int) -> E:
    """`estimator` (a scikit-learn HistGradientBoosting class) with the examples' shared, seeded settings."""
    # No early stopping: its validation split would be random, and the holdout already measures the fit.
    return estimator(
        max_iter=max_iter,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=min_samples_leaf,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )


def _column(frame: pa.Table, name: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    # Null features become NaN, which the boosted trees route as "missing" (no events → no mean or rate).
    return np.asarray(frame[name].to_numpy(zero_copy_only=False), dtype=dtype)


@dataclass(frozen=True)
class WindowTrainer:
    """One example's trainer: its label kind, the noun of its events, and its model's parts."""

    label_kind: LabelKind
    events: str  # what a labelled event is called in errors: "events", "deliveries"
    make_estimator: Callable[[], Any]
    # Why one part's labels cannot train or measure a model (", not both classes"), or None when they can.
    shortfall: Callable[[npt.NDArray[Any]], str | None]
    # The holdout metrics of the fitted estimator, given (estimator, x_test, y_test, y_train).
    measure: Callable[[Any, Matrix, npt.NDArray[Any], npt.NDArray[Any]], dict[str, float]]

    def train(self, usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
        """Fit on events in [as_of - 10 days, closed - 1 day) and measure on [closed - 1 day, closed), where
        closed is when the labels close (`labels_closed`: as_of, or as_of - label.available_after)."""
        fits, dtype = _FITS[self.label_kind]
        if usecase.label.kind != self.label_kind:
            raise UseCaseError(
                f"usecases/{usecase.name}.yaml",
                "label.kind",
                f"is {usecase.label.kind!r}",
                fix=f"this trainer fits {fits}; use kind: {self.label_kind} or another trainer",
            )
        as_of = utc_aware(as_of)
        closed = labels_closed(usecase, as_of)  # later predictions may still get their label: not in the frame
        start, split = as_of - timedelta(days=TRAINING_DAYS), closed - HOLDOUT
        if split <= start:
            raise UseCaseError(
                f"usecases/{usecase.name}.yaml",
                "label.available_after",
                f"is {usecase.label.available_after}: labels close at {closed.isoformat()}, which leaves no training "
                f"days before the holdout in the {TRAINING_DAYS} days this trainer reads before as_of",
                fix=f"shorten available_after to under {TRAINING_DAYS - HOLDOUT.days} days, or use a trainer that "
                "reads more days",
            )
        frame = _window(usecase, offline_path, start, as_of, online=online)
        times = np.asarray(frame["event_time"].to_numpy(zero_copy_only=False))
        # Half-open like every window: a row at `closed` itself (its label window ends at as_of) is in neither part.
        is_train = np.asarray(times < np.datetime64(split.replace(tzinfo=None), "us"))
        is_test = ~is_train & np.asarray(times < np.datetime64(closed.replace(tzinfo=None), "us"))
        names = usecase.online_feature_names if online else usecase.feature_names
        x = (
            np.column_stack([_column(frame, n, np.float64) for n in names])
            if frame.num_rows
            else np.empty((0, len(names)))
        )
        y = _column(frame, usecase.label.name, dtype)
        x_train, y_train, x_test, y_test = x[is_train], y[is_train], x[is_test], y[is_test]
        for part, labels, (lo, hi) in (("training", y_train, (start, split)), ("holdout", y_test, (split, closed))):
            if (why := self.shortfall(labels)) is not None:
                closes = "" if closed == as_of else f"; labels close {usecase.label.available_after} before as_of"
                raise OfflineStoreError(
                    f"the {part} window {lo.isoformat()} - {hi.isoformat()} of {usecase.name!r} has "
                    f"{labels.size} labelled {self.events}{why}",
                    fix=f"generate more days of {self.events} (the trainer reads {TRAINING_DAYS} days before as_of"
                    f"{closes}) or pick a later as_of",
                )
        estimator = self.make_estimator().fit(x_train, y_train)
        metrics = self.measure(estimator, x_test, y_test, y_train) | {
            "n_train": float(y_train.size),
            "n_test": float(y_test.size),
        }
        metrics |= own_outcome_metrics(frame)
        if online:  # the rows left out because serving refuses their context (a value beyond its max, say)
            metrics |= refused_request_metrics(frame)
        return TrainedModel(estimator=estimator, feature_names=list(names), metrics=metrics, trained_on=(start, split))


def _window(usecase: UseCase, offline_path: Path, start: datetime, end: datetime, *, online: bool) -> pa.Table:
    """The labelled events in [start, end) with their point-in-time features (batch, or batch and real-time)."""
    con = open_offline(offline_path)
    try:
        return online_training_frame(con, usecase, start, end) if online else training_frame(con, usecase, start, end)
    finally:
        con.close()
