"""The app the fuzz tests send requests to: the real routes, validation and `UseCaseServer`, over stand-in stores.

Each use case is served at canary 50 %: about half the entities take the online path (down: no model here, so it
answers an error) and fall back to the lookup table (empty: a miss), so both paths and the routing by key hash
run for every request. Besides the examples' use cases, one made up here has a string key and an int and a bool
context value, which no example declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Flag, Stage
from migrate.cutover.guardrail import Guardrail
from migrate.registry import load_usecase
from migrate.usecase import ContextFeature, EntityKey, UseCase
from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.pool import BoundedPool
from online.serving.prediction_paths import Paths
from online.serving.usecase_server import UseCaseServer

USECASES_DIR = Path(__file__).resolve().parents[3] / "usecases"


def made_up_usecase() -> UseCase:
    """A use case keyed by a string and an int, with int, bool, float and optional context values."""
    base = load_usecase(USECASES_DIR / "fraud_detection.yaml")
    keys = [EntityKey(name="region", type="str"), EntityKey(name="account_id", type="int")]
    context = [
        ContextFeature(name="hour", type="int", min=0, max=23),
        ContextFeature(name="is_weekend", type="bool"),
        ContextFeature(name="basket", type="float", min=-5.5, max=1e6, required=False),
        ContextFeature(name="channel", type="str", required=False),
    ]
    return base.model_copy(
        update={"name": "made_up", "entity": base.entity.model_copy(update={"keys": keys}), "context": context}
    )


def usecases() -> dict[str, UseCase]:
    examples = [load_usecase(path) for path in sorted(USECASES_DIR.glob("*.yaml"))]
    return {usecase.name: usecase for usecase in [*examples, made_up_usecase()]}


class EmptyLookup:
    """A lookup store without a row: every entity is a miss."""

    def get_many(self, spec: Any, keys: list[Any]) -> dict[Any, Any]:
        return {}


class CanaryFlags:
    """Every use case at canary 50 %."""

    def current(self, usecase: str) -> Flag:
        return Flag(usecase, Stage.CANARY, 50, revision=1)


ADMIN_TOKEN = "fuzz-admin-token"


def fuzz_app(flag_store: FlagStore | None = None) -> tuple[FastAPI, ServingDeps]:
    """The app and its dependencies (close the paths with ``deps.on_shutdown`` or the app's lifespan); the admin
    API takes `ADMIN_TOKEN` and changes the flags of `flag_store` (without one, it must not get that far)."""
    metrics = ServingMetrics(CollectorRegistry())
    background = BoundedPool(workers=1, capacity=100)
    served = usecases()
    servers: dict[str, UseCaseServer] = {}
    shutdown: list[Any] = [lambda: background.shutdown(wait=True)]
    for name, usecase in served.items():
        paths = Paths(EmptyLookup(), None, None, down="no model in the fuzz tests", deadline_s=5.0)
        shutdown.append(paths.close)
        servers[name] = UseCaseServer(
            usecase,
            paths=paths,
            flags=CanaryFlags(),  # type: ignore[arg-type]
            guardrail=Guardrail.from_policy(usecase.cutover_policy),
            shadow=None,
            background=background,
            metrics=metrics,
            on_breach=lambda *_: None,
        )
    deps = ServingDeps(
        servers=servers,
        usecases=served,
        metrics=metrics,
        flag_store=flag_store,
        admin_token=ADMIN_TOKEN,
        readiness=lambda: {"fuzz": "ok"},
        on_shutdown=shutdown,
    )
    return create_app(deps), deps
