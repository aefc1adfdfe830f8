"""`migrate serve` (one worker) as a process: forwarded headers and how it stops.

Before: uvicorn trusted X-Forwarded-For from 127.0.0.1, so any local caller chose the address the audit log
records; and SIGTERM ended the process with -15 (uvicorn raises the signal again after its graceful shutdown).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from service_helpers import stop, wait_ready

from migrate.batch import steps as batch
from migrate.batch.schedule import interval_ending
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.devservices.broker import start_broker
from migrate.devservices.redis_server import resolve_redis_url, stop_redis
from online.features.materialize import materialize_active
from online.shadow.sink import run_sink

pytestmark = pytest.mark.integration

READY_S = 180
STOP_S = 60
SINK_S = 120
TOKEN = "serve-process-token"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base: str
    world: Any
    bootstrap: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = world.settings
    usecases = tmp_path_factory.mktemp("usecases")  # only the world's use case: the others have no model here
    shutil.copy(Path(settings.usecases_dir) / f"{world.usecase.name}.yaml", usecases)
    batch.run_batch(world.usecase, settings, interval_ending(world.usecase.batch.schedule, world.cutoff), "process")
    materialize_active(world.usecase, settings, resolve_redis_url(settings)[0])
    broker = start_broker(settings)
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRATE_REDIS_URL", "MIGRATE_TRUSTED_PROXIES")}
    env |= {"MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap, "MIGRATE_USECASES_DIR": str(usecases)}
    env["MIGRATE_ADMIN_TOKEN"] = TOKEN
    port = _free_port()
    log = open(settings.state_dir / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "migrate"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, settings.state_dir / "serve.log", READY_S)
        yield Service(process, base, world, broker.bootstrap)
    finally:
        if process.poll() is None:
            stop(process)
        log.close()
        broker.stop()
        stop_redis(settings)


def test_forwarded_for_from_loopback_does_not_name_the_actor(service: Service) -> None:
    name = service.world.usecase.name
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": "203.0.113.9"}
    change = {"stage": "batch", "reason": "forwarded-for test"}
    response = httpx.put(f"{service.base}/v1/admin/flags/{name}", json=change, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    store = FlagStore.from_settings(service.world.settings)
    try:
        assert store.history(name, 1)[0].actor == "admin-api@127.0.0.1"
    finally:
        store.close()


def test_sigterm_stops_cleanly_after_flushing_the_shadow_records(service: Service) -> None:
    settings, name = service.world.settings, service.world.usecase.name
    store = FlagStore.from_settings(settings)
    try:
        store.set(name, Stage.SHADOW, actor="test", reason="sigterm test", source="cli", force=True)
    finally:
        store.close()
    time.sleep(1.0)  # the worker polls flags every 200 ms
    url = f"{service.base}/v1/models/{name}/predict"
    body = {"entities": [{"store_id": 1, "product_id": 1_000_001}]}
    ids = set()
    with httpx.Client(timeout=10) as client:
        for _ in range(40):
            answer = client.post(url, json=body)
            assert answer.status_code == 200 and answer.json()["stage"] == "shadow", answer.text
            ids.add(answer.json()["request_id"])
    service.process.send_signal(signal.SIGTERM)  # at once: the comparisons may still be queued
    assert service.process.wait(timeout=STOP_S) == 0
    shutil.rmtree(settings.shadow_dir / name, ignore_errors=True)
    files = str(settings.shadow_dir / name / "**" / "*.parquet")
    found: set[str] = set()
    deadline = time.monotonic() + SINK_S
    while found != ids and time.monotonic() < deadline:
        run_sink(settings, name, bootstrap=service.bootstrap, idle_timeout_s=5, group_id="sigterm-test")
        if (settings.shadow_dir / name).exists():
            with duckdb.connect() as db:
                found = {row[0] for row in db.execute(f"SELECT request_id FROM read_parquet('{files}')").fetchall()}
            found &= ids
    assert found == ids, f"{len(ids - found)} of {len(ids)} requests have no shadow record after a clean stop"
