"""Build a serving worker's dependencies from settings; ``app_factory`` is what uvicorn workers import."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from migrate.errors import ConfigError, MigrateError
from migrate.settings import Settings, get_settings
from online.app import ServingDeps, create_app
from online.metrics import ServingMetrics

log = logging.getLogger(__name__)


def build_deps(settings: Settings) -> ServingDeps:
    """Open the stores, load every use case's model, start the flag watcher and the shadow loggers."""
    from migrate.artifact import ArtifactStore
    from migrate.batch import open_lookup_store, table_spec
    from migrate.canary import Guardrail, auto_rollback
    from migrate.flag_store import FlagStore
    from migrate.flags import FlagWatcher
    from migrate.registry import Registry
    from migrate.scoring import load_model
    from online.pool import BoundedPool
    from online.predictor import OnlinePredictor
    from online.redis_store import RedisFeatureStore
    from online.serving import UseCaseServer
    from online.shadow_log import ShadowLogger

    if settings.redis_url is None:
        raise ConfigError(
            "the online service needs a feature store: MIGRATE_REDIS_URL is not set",
            fix="run `migrate serve` (it starts an embedded Redis) or set MIGRATE_REDIS_URL",
        )
    metrics = ServingMetrics(CollectorRegistry())
    lookup = open_lookup_store(settings)
    features = RedisFeatureStore.from_settings(settings, settings.redis_url.get_secret_value())
    flag_store = FlagStore.from_settings(settings)
    flag_store.ensure_schema()
    watcher = FlagWatcher(flag_store).start()
    background = BoundedPool(workers=2, capacity=1_000)
    shutdown: list[Any] = [watcher.stop, lambda: background.shutdown(wait=True), features.close]
    servers: dict[str, UseCaseServer] = {}
    usecases = {u.name: u for u in Registry(settings.usecases_dir).load_all()}
    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    not_ready: dict[str, str] = {}

    for usecase in usecases.values():
        try:
            model = load_model(usecase, artifacts)
        except MigrateError as exc:
            not_ready[usecase.name] = exc.what
            log.error("use case %s is not served: %s", usecase.name, exc)
            continue
        guardrail = Guardrail.from_policy(usecase.cutover_policy)
        shadow = None
        if settings.kafka_bootstrap:
            shadow = ShadowLogger(
                settings.kafka_bootstrap,
                usecase.name,
                topic_prefix=settings.shadow_topic_prefix,
                queue_size=settings.shadow_queue_size,
                timeout_s=settings.kafka_timeout_s,
                registry=metrics.registry,
            )
            shutdown.append(shadow.close)

        def on_breach(name: str, detail: str, guard: Guardrail = guardrail) -> None:
            flag = auto_rollback(flag_store, name, "guardrail breached on the online path", detail)
            metrics.auto_rollbacks.labels(name).inc()
            guard.reset()
            log.warning("automatic rollback of %s to %s: %s", name, flag.stage, detail)

        servers[usecase.name] = UseCaseServer(
            usecase,
            lookup=lookup,
            lookup_spec=table_spec(usecase, settings),
            predictor=OnlinePredictor(usecase.name, model, features),
            flags=watcher,
            guardrail=guardrail,
            shadow=shadow,
            background=background,
            metrics=metrics,
            on_breach=on_breach,
        )

    def readiness() -> dict[str, str]:
        checks = {f"model:{name}": f"not loaded: {why}" for name, why in not_ready.items()}
        checks.update({f"model:{name}": "ok" for name in servers})
        try:
            features.ping()
            checks["feature_store"] = "ok"
        except MigrateError as exc:
            checks["feature_store"] = exc.what
        checks["flags"] = "ok" if watcher.revision >= 0 else "not loaded yet"
        return checks

    return ServingDeps(
        servers=servers,
        usecases=usecases,
        metrics=metrics,
        flag_store=flag_store,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        readiness=readiness,
        on_shutdown=shutdown,
    )


def app_factory() -> FastAPI:
    """The app of one uvicorn worker, configured from the environment."""
    return create_app(build_deps(get_settings()))
