"""`migrate serve --workers 2` for real: a flag change reaches every worker within 1 s."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from migrate import batch
from migrate.flag_store import FlagStore
from migrate.flags import Stage
from migrate.schedule import interval_ending
from online.broker import start_broker
from online.materialize import materialize_active
from online.redis_server import stop_redis
from online.sink import run_sink

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(world: Any) -> Iterator[tuple[str, Any, str]]:
    """Two uvicorn workers over the world's lookup table, with the embedded Redis and broker."""
    settings = world.settings
    batch.run_batch(world.usecase, settings, interval_ending(world.usecase.batch.schedule, world.cutoff), "workers")
    materialize_active(world.usecase, settings)  # starts the state dir's embedded Redis, which serve then reuses
    port = _free_port()
    broker = start_broker(settings)
    env = {k: v for k, v in os.environ.items() if k != "MIGRATE_REDIS_URL"}
    env["MIGRATE_KAFKA_BOOTSTRAP"] = broker.bootstrap
    log = open(settings.state_dir / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "migrate"), "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (settings.state_dir / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not become ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield base, world, broker.bootstrap
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        broker.stop()
        stop_redis(settings)


def test_flag_change_reaches_every_worker_within_a_second(service: tuple[str, Any, str]) -> None:
    base, world, _ = service
    name = world.usecase.name
    url = f"{base}/v1/models/{name}/predict"
    body = {"entities": [{"store_id": 1, "product_id": 1_000_001}]}
    store = FlagStore.from_settings(world.settings)
    try:
        store.set(name, Stage.SHADOW, actor="test", reason="workers test", source="cli", force=True)
        time.sleep(1.0)
        # A new connection per request: a kept-alive one would stay with one worker.
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            before = [client.post(url, json=body) for _ in range(60)]
            assert {r.json()["stage"] for r in before} == {"shadow"}
            assert len({r.headers["x-worker-pid"] for r in before}) == 2, "both workers should have answered"
            store.set(name, Stage.CANARY, 10, actor="test", reason="workers test", source="cli")
            time.sleep(1.0)  # the spec's bound: every worker has the change within 1 s
            after = [client.post(url, json=body) for _ in range(60)]
        assert {r.json()["stage"] for r in after} == {"canary"}
        assert len({r.headers["x-worker-pid"] for r in after}) == 2
    finally:
        store.set(name, Stage.BATCH, actor="test", reason="workers test done", source="cli")
        store.close()


def test_each_worker_ships_its_shadow_records_through_kafka(service: tuple[str, Any, str]) -> None:
    base, world, bootstrap = service
    name = world.usecase.name
    store = FlagStore.from_settings(world.settings)
    try:
        store.set(name, Stage.SHADOW, actor="test", reason="shadow records test", source="cli", force=True)
        time.sleep(1.0)
        body = {"entities": [{"store_id": 1, "product_id": 1_000_001}, {"store_id": 1, "product_id": 1_000_002}]}
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            ids = {client.post(f"{base}/v1/models/{name}/predict", json=body).json()["request_id"] for _ in range(50)}
    finally:
        store.set(name, Stage.BATCH, actor="test", reason="shadow records test done", source="cli")
        store.close()
    import shutil

    import duckdb

    shutil.rmtree(world.settings.shadow_dir / name, ignore_errors=True)
    run_sink(world.settings, name, bootstrap=bootstrap, idle_timeout_s=5, group_id="workers-test")
    files = str(world.settings.shadow_dir / name / "**" / "*.parquet")
    everything = duckdb.sql(f"SELECT request_id, online_prediction, batch_prediction FROM read_parquet('{files}')")
    rows = [row for row in everything.fetchall() if row[0] in ids]
    assert len(rows) == 2 * len(ids)  # both entities of every request, from both workers' comparison processes
    assert all(online is not None and batch is not None for _, online, batch in rows)
