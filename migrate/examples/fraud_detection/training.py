"""The trainer of the fraud example: gradient-boosted classification of authorizations as fraud, on the nightly
card features (batch model) or on those plus the card's and the merchant's last minutes and the amount (online).

Rows come from the toolkit, not from here: one per authorization (``training.spine``), labelled by the chargeback
that names it within ``label.available_after`` (``label.from_event``), with the batch features strictly before it
and, online, the real-time windows the stream processor held at that instant. An authorization of the last three
days has no closed label yet and is left out, so the holdout is the last day whose labels are all in (as in
`migrate.examples.skeleton.training.WindowTrainer`; this one keeps its own fraud counts and probability metrics).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from migrate.batch.event_history import online_training_frame, refused_request_metrics
from migrate.batch.offline_store import labels_closed, open_offline, training_frame, utc_aware
from migrate.batch.own_outcome import own_outcome_metrics
from migrate.batch.training import TrainedModel
from migrate.errors import OfflineStoreError, UseCaseError
from migrate.examples.skeleton.training import boosted_trees
from migrate.usecase import UseCase

__all__ = ["HOLDOUT", "MIN_FRAUD", "WINDOW", "classifier", "train"]

WINDOW = timedelta(days=10)  # authorizations this far before as_of are read
HOLDOUT = timedelta(days=1)  # the last labelled day is held out
MIN_FRAUD = 20  # fewer disputed authorizations than this in a part: nothing to learn or to measure


def classifier() -> HistGradientBoostingClassifier:
    """The examples' seeded boosted trees, a little longer: fraud is 2 % of rows, so leaves may be smaller."""
    return boosted_trees(HistGradientBoostingClassifier, max_iter=250, min_samples_leaf=30)


def _inputs(frame: pa.Table, names: list[str]) -> npt.NDArray[np.float64]:
    """The named columns as a float matrix; nulls become NaN, which the trees treat as missing (no purchase yet)."""
    if not frame.num_rows:
        return np.empty((0, len(names)), dtype=np.float64)
    return np.column_stack([np.asarray(frame[n].to_numpy(zero_copy_only=False), dtype=np.float64) for n in names])


def _check(usecase: UseCase, part: str, labels: npt.NDArray[np.float64], span: tuple[datetime, datetime]) -> None:
    fraud = int(labels.sum())
    if fraud < MIN_FRAUD or fraud == labels.size:
        raise OfflineStoreError(
            f"{usecase.name!r}: the {part} authorizations {span[0].isoformat()} - {span[1].isoformat()} hold "
            f"{labels.size} rows of which {fraud} disputed (at least {MIN_FRAUD} of each kind needed)",
            fix=f"generate more cards or days (labels close {usecase.label.available_after} after an "
            "authorization), or train at a later as_of",
        )


def _require_binary(usecase: UseCase) -> None:
    """AUC, log loss and Brier need a 0/1 label: refuse another kind before reading any data."""
    if usecase.label.kind == "binary":
        return
    fix = "this trainer classifies authorizations: use kind: binary, or another trainer"
    raise UseCaseError(f"usecases/{usecase.name}.yaml", "label.kind", f"is {usecase.label.kind!r}", fix=fix)


def train(usecase: UseCase, offline_path: Path, as_of: datetime, *, online: bool = False) -> TrainedModel:
    """Fit on authorizations from as_of - 10 days to the last closed day, report AUC, log loss and Brier on it."""
    _require_binary(usecase)
    as_of = utc_aware(as_of)
    closed = labels_closed(usecase, as_of)  # as_of - available_after: later authorizations may still be disputed
    start, split = as_of - WINDOW, closed - HOLDOUT
    read = online_training_frame if online else training_frame
    with open_offline(offline_path) as con:
        frame = read(con, usecase, start, as_of)
    names = usecase.online_feature_names if online else usecase.feature_names
    x, y = _inputs(frame, names), _inputs(frame, [usecase.label.name])[:, 0]
    times = frame["prediction_time"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    held = np.asarray(times >= np.datetime64(split.replace(tzinfo=None), "us"))
    _check(usecase, "training", y[~held], (start, split))
    _check(usecase, "holdout", y[held], (split, closed))
    model = classifier().fit(x[~held], y[~held])
    p = model.predict_proba(x[held])[:, 1]
    metrics = {
        "auc": float(roc_auc_score(y[held], p)),
        "log_loss": float(log_loss(y[held], p, labels=[0.0, 1.0])),
        "brier": float(brier_score_loss(y[held], p)),
        "holdout_positive_rate": float(y[held].mean()),
        "n_train": float((~held).sum()),
        "n_test": float(held.sum()),
    } | own_outcome_metrics(frame)
    if online:  # the rows left out because serving refuses their context (an amount beyond its max, say)
        metrics |= refused_request_metrics(frame)
    return TrainedModel(estimator=model, feature_names=list(names), metrics=metrics, trained_on=(start, split))
