"""Build a serving worker's dependencies from settings; ``app_factory`` is what uvicorn workers import."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from migrate.artifact import ArtifactStore
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import FlagWatcher
from migrate.cutover.guardrail import Guardrail, auto_rollback
from migrate.errors import MigrateError
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import AliasWatcher
from migrate.settings import Settings, get_settings
from online.serving.app import ModelAdmin, ServingDeps, create_app
from online.serving.assembly import build_paths
from online.serving.clock import clock_of
from online.serving.metrics import ServingMetrics, mark_dead
from online.serving.model_swap import ModelSwitcher
from online.serving.pool import BoundedPool
from online.serving.shadow_handoff import InProcessShadow, ShadowProcess, ShadowSink
from online.serving.usecase_server import UseCaseServer
from online.shadow.log import ShadowLogger

log = logging.getLogger(__name__)


def build_deps(settings: Settings, *, shadow_process: bool = True) -> ServingDeps:
    """Everything one worker serves with; comparisons go to a process of their own unless told otherwise."""
    metrics = ServingMetrics(CollectorRegistry())
    stores = build_paths(settings)
    flag_store = FlagStore.from_settings(settings)
    flag_store.ensure_schema()
    watcher = FlagWatcher(flag_store).start()
    background = BoundedPool(workers=2, capacity=1_000)
    # Closed in reverse order: the flag store last, after the watcher that polls it has stopped.
    shutdown: list[Any] = [
        mark_dead,  # last: this worker's live gauges leave the shared view once it has stopped serving
        flag_store.close,
        watcher.stop,
        lambda: background.shutdown(wait=True),
        stores.features.close,
        stores.features.aclose,  # before `close`: the asyncio client `aopen` opened on the worker's loop
    ]
    shutdown += [paths.close for paths in stores.paths.values()]  # closed in reverse: before the stores
    # The live model alias of each use case, followed without a restart (online/serving/model_swap.py).
    alias_store = AliasStore.from_settings(settings)
    alias_store.ensure_schema()
    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    switcher = ModelSwitcher(
        stores.usecases, stores.paths, stores.features, artifacts, audit=alias_store, registry=metrics.registry
    )
    alias_watcher = AliasWatcher(alias_store, on_change=switcher.apply).start()  # applied before serving starts
    shutdown[:0] = [alias_store.close, alias_watcher.stop]
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
        metrics.guardrail_max_error_rate.labels(name).set(usecase.cutover_policy.max_error_rate)
        metrics.guardrail_max_p99.labels(name).set(usecase.cutover_policy.max_p99_latency_ms / 1000)
        if paths.predictor is not None:
            metrics.model_info.labels(name, paths.predictor.model.version).set(1)
        shadow: ShadowSink | None = None
        if process is not None:
            shadow = process.channel(name)
        elif settings.kafka_bootstrap:
            logger = ShadowLogger.from_settings(settings, name, registry=metrics.registry)
            shutdown.append(logger.close)
            shadow = InProcessShadow(name, paths, logger, background, switcher.candidate)

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
        # Per use case: "ok", or "degraded: …" when only its lookup table answers (still ready to serve).
        checks = {f"usecase:{name}": "ok" for name in servers}
        down = {name: why for name, why in stores.degraded.items() if stores.paths[name].predictor is None}
        checks.update({f"usecase:{name}": f"degraded: {why}" for name, why in down.items()})
        try:
            stores.features.ping()
            checks["feature_store"] = "ok"
        except MigrateError as exc:
            checks["feature_store"] = exc.what
        checks["flags"] = "ok" if watcher.revision >= 0 else "not loaded yet"
        # A refused model alias is not served, the model before it is: ready, and says why.
        refused = "; ".join(f"{name}: {why}" for name, why in sorted(switcher.problems.items()))
        checks["model_aliases"] = "ok" if not refused else f"degraded: {refused}"
        # The shadow log is evidence, not the answer: while it cannot deliver, serving is ready but degraded.
        shadows = {name: server.shadow for name, server in servers.items() if server.shadow is not None}
        if shadows:
            problems = [f"{name}: {why}" for name, sink in shadows.items() if (why := sink.health())]
            checks["shadow_log"] = "ok" if not problems else "degraded: " + "; ".join(problems)
        return checks

    return ServingDeps(
        servers=servers,
        usecases=stores.usecases,
        metrics=metrics,
        flag_store=flag_store,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        readiness=readiness,
        # The online path's feature read waits on the worker's loop, not on a thread (online/serving/batcher.py).
        on_start=[stores.features.aopen],
        on_shutdown=shutdown,
        trusted_proxies=list(settings.trusted_proxies),
        reports_dir=settings.state_dir / "reports",
        # A worker that has served no request yet still shows the stage it would serve at.
        on_scrape=[server.before_scrape for server in servers.values()],
        models=ModelAdmin(alias_store, artifacts, switcher.served),
    )


def app_factory() -> FastAPI:
    """The app of one uvicorn worker, configured from the environment."""
    return create_app(build_deps(get_settings()))
