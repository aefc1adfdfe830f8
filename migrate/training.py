"""Training: call the use case's trainer, then store the model as a new versioned artifact."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from migrate.artifact import ArtifactInfo, ArtifactStore
from migrate.errors import ConfigError
from migrate.settings import Settings
from migrate.usecase import UseCase


@dataclass(frozen=True)
class TrainedModel:
    """What a trainer returns: a fitted scikit-learn estimator and its holdout metrics."""

    estimator: Any
    feature_names: list[str]
    metrics: dict[str, float]
    trained_on: tuple[datetime, datetime]


Trainer = Callable[[UseCase, Path, datetime], TrainedModel]


def resolve_trainer(usecase: UseCase) -> Trainer:
    """Import the ``package.module:function`` named in the use case's ``model.trainer``."""
    module_name, _, attr = usecase.model.trainer.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"use case {usecase.name!r}: cannot import trainer module {module_name!r}: {exc}",
            fix="fix model.trainer in its YAML or install the package that holds it",
        ) from None
    trainer = getattr(module, attr, None)
    if not callable(trainer):
        raise ConfigError(
            f"use case {usecase.name!r}: {module_name} has no function {attr!r}", fix="fix model.trainer in its YAML"
        )
    return cast(Trainer, trainer)


def train(usecase: UseCase, settings: Settings, as_of: datetime) -> ArtifactInfo:
    """Train on data before `as_of` and write a new artifact version with its sha256."""
    trained = resolve_trainer(usecase)(usecase, settings.offline_store_path, as_of)
    if list(trained.feature_names) != usecase.feature_names:
        raise ConfigError(
            f"trainer of {usecase.name!r} used features {trained.feature_names}, "
            f"but the YAML declares {usecase.feature_names}",
            fix="train on exactly the batch_features the use case declares, in order",
        )
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    return store.save(usecase, trained.estimator, trained_as_of=as_of, metrics=trained.metrics)
