"""Build a serving worker's dependencies from settings; ``app_factory`` is what uvicorn workers import."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from migrate.errors import ConfigError, MigrateError
from migrate.settings import Settings, get_settings
from online.app import ServingDeps, create_app
from online.metrics import ServingMetrics
from online.paths import Paths

log = logging.getLogger(__name__)


@dataclass
class Stores:
    """Every use case's two paths over one lookup store and one feature store, and what could not load."""

    paths: dict[str, Paths]
    features: Any
    usecases: dict[str, Any]
    not_ready: dict[str, str] = field(default_factory=dict)


def build_paths(settings: Settings, names: Sequence[str] | None = None) -> Stores:
    """Open the stores and load each use case's model (the serving worker and the shadow process both do)."""
    from migrate.artifact import ArtifactStore
    from migrate.batch import open_lookup_store, table_spec
    from migrate.registry import Registry
    from migrate.scoring import load_model
    from online.predictor import OnlinePredictor
    from online.redis_store import RedisFeatureStore

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
        try:
            # The online path serves the online model (batch + real-time features), or the batch one until an
            # online model is trained; the lookup path reads the table the batch model wrote.
            model = load_model(usecase, artifacts, "online")
        except MigrateError as exc:
            stores.not_ready[usecase.name] = exc.what
            log.error("use case %s is not served: %s", usecase.name, exc)
            continue
        since = frozenset(
            f.name
            for f in (usecase.realtime_features.features if usecase.realtime_features else [])
            if f.aggregation == "minutes_since"
        )
        predictor = OnlinePredictor(usecase.name, model, features, since)
        stores.paths[usecase.name] = Paths(lookup, table_spec(usecase, settings), predictor)
    return stores


def build_deps(settings: Settings, *, shadow_process: bool = True) -> ServingDeps:
    """Everything one worker serves with; comparisons go to a process of their own unless told otherwise."""
    from migrate.canary import Guardrail, auto_rollback
    from migrate.flag_store import FlagStore
    from migrate.flags import FlagWatcher
    from online.clock import clock_of
    from online.pool import BoundedPool
    from online.serving import UseCaseServer
    from online.shadow_process import InProcessShadow, ShadowProcess, ShadowSink

    metrics = ServingMetrics(CollectorRegistry())
    stores = build_paths(settings)
    flag_store = FlagStore.from_settings(settings)
    flag_store.ensure_schema()
    watcher = FlagWatcher(flag_store).start()
    background = BoundedPool(workers=2, capacity=1_000)
    # Closed in reverse order: the flag store last, after the watcher that polls it has stopped.
    shutdown: list[Any] = [
        flag_store.close,
        watcher.stop,
        lambda: background.shutdown(wait=True),
        stores.features.close,
    ]
    shutdown += [paths.close for paths in stores.paths.values()]  # closed in reverse: before the stores
    process = None
    if settings.kafka_bootstrap and shadow_process:
        # A short queue in front of the process: its logger keeps the long one (shadow_queue_size).
        process = ShadowProcess(list(stores.paths), capacity=1_000, max_entities=10_000, registry=metrics.registry)
        shutdown.append(process.close)

    servers: dict[str, UseCaseServer] = {}
    clock = clock_of(settings)  # the wall clock, or a replayed day's (MIGRATE_CLOCK_*)
    for name, paths in stores.paths.items():
        usecase = stores.usecases[name]
        guardrail = Guardrail.from_policy(usecase.cutover_policy)
        shadow: ShadowSink | None = None
        if process is not None:
            shadow = process.channel(name)
        elif settings.kafka_bootstrap:
            from online.shadow_log import ShadowLogger

            logger = ShadowLogger.from_settings(settings, name, registry=metrics.registry)
            shutdown.append(logger.close)
            shadow = InProcessShadow(name, paths, logger, background)

        def on_breach(usecase_name: str, detail: str, guard: Guardrail = guardrail) -> None:
            flag = auto_rollback(flag_store, usecase_name, "guardrail breached on the online path", detail)
            metrics.auto_rollbacks.labels(usecase_name).inc()
            guard.reset()
            log.warning("automatic rollback of %s to %s: %s", usecase_name, flag.stage, detail)

        servers[name] = UseCaseServer(
            usecase,
            paths=paths,
            flags=watcher,
            guardrail=guardrail,
            shadow=shadow,
            background=background,
            metrics=metrics,
            on_breach=on_breach,
            clock=clock,
        )

    def readiness() -> dict[str, str]:
        checks = {f"model:{name}": f"not loaded: {why}" for name, why in stores.not_ready.items()}
        checks.update({f"model:{name}": "ok" for name in servers})
        try:
            stores.features.ping()
            checks["feature_store"] = "ok"
        except MigrateError as exc:
            checks["feature_store"] = exc.what
        checks["flags"] = "ok" if watcher.revision >= 0 else "not loaded yet"
        return checks

    return ServingDeps(
        servers=servers,
        usecases=stores.usecases,
        metrics=metrics,
        flag_store=flag_store,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        readiness=readiness,
        on_shutdown=shutdown,
    )


def app_factory() -> FastAPI:
    """The app of one uvicorn worker, configured from the environment."""
    return create_app(build_deps(get_settings()))
