"""The one scoring code path: the batch DAG and the online service both call `score`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from migrate.artifact import ArtifactStore, deserialize
from migrate.errors import ArtifactError
from migrate.usecase import UseCase

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Model:
    """A verified, loaded model with the facts every prediction carries."""

    usecase: str
    version: str
    sha256: str
    feature_names: tuple[str, ...]
    label_kind: Literal["binary", "regression"]
    estimator: Any

    def score(self, features: FloatArray) -> FloatArray:
        """Predictions for a 2-D matrix whose columns are `feature_names`, in order."""
        return score(self, features)


def score(model: Model, features: FloatArray) -> FloatArray:
    """Score a feature matrix: probability of the positive class for binary labels, else the value."""
    if features.ndim != 2 or features.shape[1] != len(model.feature_names):
        raise ArtifactError(
            f"model {model.version} of {model.usecase!r} takes {len(model.feature_names)} features "
            f"{list(model.feature_names)}, got a matrix of shape {features.shape}",
            fix="pass the columns named in the use case's batch_features, in that order",
        )
    if features.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    if model.label_kind == "binary":
        return np.ascontiguousarray(model.estimator.predict_proba(features)[:, 1], dtype=np.float64)
    return np.asarray(model.estimator.predict(features), dtype=np.float64)


def load_model(usecase: UseCase, store: ArtifactStore) -> Model:
    """Load the use case's current artifact, verifying its sha256 before deserialising it."""
    path, expected, info = store.resolve(usecase)
    data = store.load_bytes(path, expected, usecase.name)
    estimator = deserialize(data, path)
    feature_names = info.feature_names if info is not None else tuple(usecase.feature_names)
    if tuple(feature_names) != tuple(usecase.feature_names):
        raise ArtifactError(
            f"model {path} of {usecase.name!r} was trained on {list(feature_names)}, "
            f"but the use case declares {usecase.feature_names}",
            fix=f"retrain with `migrate train {usecase.name}`",
        )
    version = info.version if info is not None else f"pinned-{expected[:12]}"
    return Model(usecase.name, version, expected, tuple(feature_names), usecase.label.kind, estimator)
