"""A corrupt online model takes down the online path only: the lookup table keeps answering, readiness says why.

Before, one flipped byte in the online artifact made predict answer 404 "no use case" at stage shadow, where the
lookup table alone could answer, and one untrained use case kept /readyz at 503 for every other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from migrate.artifact import ArtifactStore
from migrate.batch import steps as batch
from migrate.batch.schedule import interval_ending
from migrate.batch.training import train
from migrate.cutover.flags import Stage
from migrate.devservices.redis_server import RedisServer
from migrate.settings import get_settings
from online.serving.app import create_app
from online.serving.runtime import build_deps

pytestmark = pytest.mark.integration

KEY = {"store_id": 1, "product_id": 1_000_001}


@pytest.fixture(scope="module")
def served(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any, Any]]:
    settings, usecase = world.settings, world.usecase
    batch.run_batch(usecase, settings, interval_ending(usecase.batch.schedule, world.cutoff), "degraded")
    info = train(usecase, settings, world.cutoff, role="online")
    artifact = settings.artifacts_dir / usecase.name / info.file
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: the recorded sha256 no longer matches
    artifact.write_bytes(bytes(data))
    assert ArtifactStore(settings.artifacts_dir, settings.project_dir).list(usecase.name, "online")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    os.environ["MIGRATE_REDIS_URL"] = server.url
    try:
        deps = build_deps(get_settings(), shadow_process=False)
        with TestClient(create_app(deps), raise_server_exceptions=False) as client:
            yield client, deps, world
    finally:
        os.environ.pop("MIGRATE_REDIS_URL", None)
        server.stop()


def stage(deps: Any, name: str, to: Stage) -> None:
    flag = deps.flag_store.set(name, to, None, actor="test", reason="degraded test", source="cli", force=True)
    deadline = time.monotonic() + 5
    while deps.servers[name].flags.current(name).revision != flag.revision:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_readiness_is_per_use_case_and_a_degraded_one_is_still_ready(served: tuple[TestClient, Any, Any]) -> None:
    client, _, world = served
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    state = checks[f"usecase:{world.usecase.name}"]
    assert state.startswith("degraded: ") and "sha256" in state
    # Every use case of the registry is served, even without any model (its lookup path answers).
    assert {name for name in checks if name.startswith("usecase:")} >= {"usecase:delivery_eta"}


def test_the_lookup_table_answers_when_the_online_model_cannot_load(served: tuple[TestClient, Any, Any]) -> None:
    client, deps, world = served
    name = world.usecase.name
    url = f"/v1/models/{name}/predict"
    try:
        for at, source in ((Stage.SHADOW, "batch"), (Stage.ONLINE, "batch_fallback")):
            stage(deps, name, at)
            response = client.post(url, json={"entities": [KEY]})
            assert response.status_code == 200, response.text
            [prediction] = response.json()["predictions"]
            assert prediction["source"] == source and prediction["prediction"] is not None, prediction
        stage(deps, name, Stage.ONLINE_ONLY)  # no fallback: the answer is the error, naming the model
        [prediction] = client.post(url, json={"entities": [KEY]}).json()["predictions"]
        assert prediction["prediction"] is None and "online model is not loaded" in prediction["error"]
    finally:
        stage(deps, name, Stage.BATCH)
