"""The two prediction paths of every use case, built from settings: the lookup table and the online model.

A serving worker builds them once at start; the shadow comparison process builds its own copy the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lookup_tables import TableSpec, open_lookup_store
from migrate.artifact import ArtifactStore
from migrate.errors import ConfigError, MigrateError
from migrate.registry import Registry
from migrate.scoring import load_model
from migrate.settings import Settings
from online.features.redis_store import RedisFeatureStore
from online.serving.prediction_paths import Paths
from online.serving.predictor import OnlinePredictor

__all__ = ["Stores", "build_paths"]

log = logging.getLogger(__name__)


@dataclass
class Stores:
    """Every use case's two paths over one lookup store and one feature store, and what could not load."""

    paths: dict[str, Paths]
    features: Any
    usecases: dict[str, Any]
    degraded: dict[str, str] = field(default_factory=dict)
    """use case → why its online path is down (its lookup table still answers)"""


def build_paths(settings: Settings, names: Sequence[str] | None = None) -> Stores:
    """Open the stores and load each use case's model (the serving worker and the shadow process both do)."""
    if settings.redis_url is None:
        raise ConfigError(
            "the online service needs a feature store: MIGRATE_REDIS_URL is not set",
            fix="run `migrate serve` (it starts an embedded Redis) or set MIGRATE_REDIS_URL",
        )
    lookup = open_lookup_store(settings)
    features = RedisFeatureStore.from_settings(settings, settings.redis_url.get_secret_value())
    usecases = {u.name: u for u in Registry(settings.usecases_dir).load_all() if names is None or u.name in names}
    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    stores = Stores({}, features, usecases)
    for usecase in usecases.values():
        predictor: OnlinePredictor | None = None
        try:
            # The online path serves the online model (batch + real-time features), or the batch one until an
            # online model is trained; the lookup path reads the table the batch model wrote.
            predictor = OnlinePredictor(usecase, load_model(usecase, artifacts, "online"), features)
        except (MigrateError, ValueError) as exc:
            # A missing or corrupt model takes down the online path only: the lookup table keeps answering.
            reason = exc.what if isinstance(exc, MigrateError) else str(exc)
            stores.degraded[usecase.name] = reason
            log.error(
                "use case %s is served by its lookup table only, its online model is not loaded: %s",
                usecase.name,
                reason,
            )
        lookup_spec = TableSpec.for_usecase(usecase, settings)
        stores.paths[usecase.name] = Paths(
            lookup,
            lookup_spec,
            predictor,
            down=stores.degraded.get(usecase.name),
            deadline_s=settings.redis_timeout_s,  # a request waits for the online path no longer than this
            lookup_deadline_s=settings.lookup_timeout_s,  # nor for its lookup read longer than this
        )
    return stores
