"""Training: call the use case's trainer, then store the model as a new versioned artifact."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from migrate.artifact import ArtifactInfo, ArtifactStore, Role
from migrate.batch.event_history import refused_by_stream
from migrate.batch.offline_store import open_offline
from migrate.batch.own_outcome import OWN_OUTCOME_METRIC, checks_own_outcome
from migrate.errors import ConfigError
from migrate.scoring import save_model
from migrate.settings import Settings
from migrate.usecase import UseCase

REFUSED_EVENTS_METRIC = "refused_events"
"""An online model's metric: the events of its history the stream processor refuses, in no training window."""


@dataclass(frozen=True)
class TrainedModel:
    """What a trainer returns: a fitted scikit-learn estimator and its holdout metrics."""

    estimator: Any
    feature_names: list[str]
    metrics: dict[str, float]
    trained_on: tuple[datetime, datetime]


Trainer = Callable[..., TrainedModel]
"""``trainer(usecase, offline_path, as_of, *, online=False)``: ``online=True`` adds the real-time features."""


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


def train(usecase: UseCase, settings: Settings, as_of: datetime, *, role: Role = "batch") -> ArtifactInfo:
    """Train on data before `as_of` and write a new artifact version with its sha256.

    ``role="online"`` trains the online model: batch features plus the real-time ones, computed with the stream
    processor's window code over the event history (point in time, no leakage).
    """
    trainer = resolve_trainer(usecase)
    if role == "online":
        if not usecase.realtime_feature_names:
            raise ConfigError(
                f"use case {usecase.name!r} declares no real-time features, so it has no online model to train",
                fix="declare realtime_features (with events) in its YAML, or serve the batch model online",
            )
        trained = trainer(usecase, settings.offline_store_path, as_of, online=True)
        expected = usecase.online_feature_names
        with open_offline(settings.offline_store_path) as con:
            # The event history's rows the stream processor refuses are in no training window, as serving's stream
            # dead-letters them: how many, beside the trainer's own metrics (0 on a clean history).
            refused = sum(refused_by_stream(con, usecase, as_of).values())
        trained = replace(trained, metrics={**trained.metrics, REFUSED_EVENTS_METRIC: float(refused)})
    else:
        trained = trainer(usecase, settings.offline_store_path, as_of)
        expected = usecase.feature_names
    if list(trained.feature_names) != expected:
        raise ConfigError(
            f"trainer of {usecase.name!r} used features {trained.feature_names}, but the YAML declares {expected}",
            fix="train on exactly the features the use case declares, in order (batch, then real-time)",
        )
    by_reference = usecase.label.from_event
    allowed = by_reference is not None and by_reference.allow_own_outcome_known and checks_own_outcome(usecase)
    if allowed and OWN_OUTCOME_METRIC not in trained.metrics:
        # The rows it allows may inflate every holdout metric: the model must say how many it trained on.
        raise ConfigError(
            f"trainer of {usecase.name!r} returned no metric {OWN_OUTCOME_METRIC!r}, which "
            "label.from_event.allow_own_outcome_known requires",
            fix="add migrate.batch.own_outcome.own_outcome_metrics(frame) to the metrics it returns",
        )
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    # With its compiled forest, when it has one: served and explained without importing scikit-learn.
    return save_model(usecase, store, trained.estimator, trained_as_of=as_of, metrics=trained.metrics, role=role)
