"""`migrate serve --workers 2` for real: a flag change reaches every worker within 1 s."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
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

READY_S = 180  # two workers loading a model on a loaded 2-core machine
BOTH_WORKERS_S = 60
SINK_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str]]:
    """Two uvicorn workers over the world's lookup table, with the embedded Redis and broker."""
    settings = world.settings
    # Serve only the world's use case: the project's other ones have no model here and would keep /readyz at 503.
    usecases = tmp_path_factory.mktemp("usecases")
    shutil.copy(Path(settings.usecases_dir) / f"{world.usecase.name}.yaml", usecases)
    batch.run_batch(world.usecase, settings, interval_ending(world.usecase.batch.schedule, world.cutoff), "workers")
    # The state dir's embedded Redis, which serve then reuses.
    materialize_active(world.usecase, settings, resolve_redis_url(settings)[0])
    port = _free_port()
    broker = start_broker(settings)
    env = {k: v for k, v in os.environ.items() if k != "MIGRATE_REDIS_URL"}
    env["MIGRATE_KAFKA_BOOTSTRAP"] = broker.bootstrap
    env["MIGRATE_USECASES_DIR"] = str(usecases)
    log = open(settings.state_dir / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "migrate"), "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, settings.state_dir / "serve.log", READY_S)
        yield base, world, broker.bootstrap
    finally:
        stop(process)
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
        before = _until_both_workers_answer(url, body)
        assert {r.json()["stage"] for r in before} == {"shadow"}
        store.set(name, Stage.CANARY, 10, actor="test", reason="workers test", source="cli")
        time.sleep(1.0)  # the spec's bound: every worker has the change within 1 s
        after = _until_both_workers_answer(url, body)  # every answer from here on, from either worker
        assert {r.json()["stage"] for r in after} == {"canary"}
    finally:
        store.set(name, Stage.BATCH, actor="test", reason="workers test done", source="cli")
        store.close()


def test_each_workers_comparison_process_runs_only_on_idle_cpu(service: tuple[str, Any, str]) -> None:
    """Comparisons are evidence and answers are the product: on a busy machine the scheduler serves the worker
    first (MIGRATE_SHADOW_CPU, default ``idle``: SCHED_IDLE); a comparison that falls behind is skipped and counted."""
    base, _, _ = service
    worker = int(httpx.get(f"{base}/healthz", timeout=10).headers["x-worker-pid"])
    deadline = time.monotonic() + 60  # the comparison process lowers its priority first thing after its imports
    while True:
        children = [
            int(child)
            for task in Path(f"/proc/{worker}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
        policies = {pid: os.sched_getscheduler(pid) for pid in children}
        if os.SCHED_IDLE in policies.values():
            break
        assert time.monotonic() < deadline, f"worker {worker}, children's scheduling policies: {policies}"
        time.sleep(0.2)
    # The worker itself keeps the normal policy.
    assert os.sched_getscheduler(worker) == os.SCHED_OTHER


def test_each_worker_ships_its_shadow_records_through_kafka(service: tuple[str, Any, str]) -> None:
    base, world, bootstrap = service
    name = world.usecase.name
    store = FlagStore.from_settings(world.settings)
    try:
        store.set(name, Stage.SHADOW, actor="test", reason="shadow records test", source="cli", force=True)
        time.sleep(1.0)
        body = {"entities": [{"store_id": 1, "product_id": 1_000_001}, {"store_id": 1, "product_id": 1_000_002}]}
        url = f"{base}/v1/models/{name}/predict"
        ids = {r.json()["request_id"] for r in _until_both_workers_answer(url, body, at_least=50)}
    finally:
        store.set(name, Stage.BATCH, actor="test", reason="shadow records test done", source="cli")
        store.close()
    shutil.rmtree(world.settings.shadow_dir / name, ignore_errors=True)
    files = str(world.settings.shadow_dir / name / "**" / "*.parquet")
    rows: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + SINK_S
    # The comparison processes send their records when they get to them: on a loaded machine some arrive after
    # one sink run went idle. The group's committed offsets let the next run take up where the last one stopped.
    while len(rows) < 2 * len(ids) and time.monotonic() < deadline:
        run_sink(world.settings, name, bootstrap=bootstrap, idle_timeout_s=5, group_id="workers-test")
        if (world.settings.shadow_dir / name).exists():
            with duckdb.connect() as db:
                found = db.execute(
                    f"SELECT request_id, online_prediction, batch_prediction FROM read_parquet('{files}')"
                )
                rows = [row for row in found.fetchall() if row[0] in ids]
    assert len(rows) == 2 * len(ids)  # both entities of every request, from both workers' comparison processes
    assert all(online is not None and batch is not None for _, online, batch in rows)


def test_metrics_add_up_every_workers_requests(service: tuple[str, Any, str]) -> None:
    """Multiprocess mode: whichever worker answers the scrape, it counts the requests both workers served."""
    base, world, _ = service
    name = world.usecase.name
    url = f"{base}/v1/models/{name}/predict"
    body = {"entities": [{"store_id": 1, "product_id": 1_000_001}]}

    def served(text: str, status: str) -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "migrate_predict_requests_total" and sample.labels == {"usecase": name, "status": status}
        )

    def scrapes() -> list[httpx.Response]:
        """Scrapes on new connections until both workers have answered one."""
        deadline = time.monotonic() + BOTH_WORKERS_S
        found: list[httpx.Response] = []
        with ThreadPoolExecutor(4) as threads:
            while len({r.headers["x-worker-pid"] for r in found}) < 2:
                assert time.monotonic() < deadline, "one worker answered every scrape"
                found += threads.map(lambda _: httpx.get(f"{base}/metrics", timeout=10), range(8))
        return found

    before = served(httpx.get(f"{base}/metrics", timeout=10).text, "200")
    refused_before = served(httpx.get(f"{base}/metrics", timeout=10).text, "422")
    answers = _until_both_workers_answer(url, body, at_least=32)
    for _ in range(3):
        assert httpx.post(url, json={"entities": [{"store_id": "x"}]}, timeout=10).status_code == 422
    for scrape in scrapes():
        assert served(scrape.text, "200") == before + len(answers), scrape.headers["x-worker-pid"]
        assert served(scrape.text, "422") == refused_before + 3
        stages = [line for line in scrape.text.splitlines() if line.startswith("migrate_usecase_stage{")]
        assert [line for line in stages if line.endswith(" 1.0")] == [
            f'migrate_usecase_stage{{stage="batch",usecase="{name}"}} 1.0'
        ], stages


def _until_both_workers_answer(url: str, body: dict[str, Any], at_least: int = 16) -> list[httpx.Response]:
    """At least `at_least` answers, sent from 8 threads at once on new connections, until both worker pids
    (x-worker-pid) have answered; one worker may take many sequential requests, concurrent ones reach both."""
    deadline = time.monotonic() + BOTH_WORKERS_S

    def post(_: int) -> httpx.Response:
        response = httpx.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response

    answers: list[httpx.Response] = []
    with ThreadPoolExecutor(8) as threads:
        while len({r.headers["x-worker-pid"] for r in answers}) < 2 or len(answers) < at_least:
            assert time.monotonic() < deadline, (
                f"only workers {sorted({r.headers['x-worker-pid'] for r in answers})} answered "
                f"{len(answers)} requests in {BOTH_WORKERS_S} s"
            )
            answers += threads.map(post, range(16))
    return answers


def test_readiness_reports_the_shadow_log_from_the_comparison_process(service: tuple[str, Any, str]) -> None:
    """Healthy while records are delivered; degraded, with the reason, once the broker is gone — and still ready.

    Runs last in this module: it kills the module's broker (its own child; the fixture's stop copes).
    """
    base, world, bootstrap = service
    name = world.usecase.name
    url = f"{base}/v1/models/{name}/predict"
    body = {"entities": [{"store_id": 1, "product_id": 1_000_001}]}
    store = FlagStore.from_settings(world.settings)
    try:
        store.set(name, Stage.SHADOW, actor="test", reason="shadow readiness test", source="cli", force=True)
        time.sleep(1.0)
        _until_both_workers_answer(url, body)
        # The comparison processes report every 0.5 s, under SCHED_IDLE: on a busy machine, a while after. Until a
        # worker's process first reports, its /readyz says the shadow log is starting (ready all the same).
        healthy = f'migrate_shadow_log_healthy{{usecase="{name}"}} 1.0'
        deadline = time.monotonic() + SINK_S
        while healthy not in (scrape := httpx.get(f"{base}/metrics", timeout=10).text):
            assert time.monotonic() < deadline, [line for line in scrape.splitlines() if "shadow" in line]
            time.sleep(0.2)
        for _ in range(8):  # the requests land on either worker: each must say "ok" once its process reported
            while (ready := httpx.get(f"{base}/readyz", timeout=10)).json()["checks"]["shadow_log"] != "ok":
                checks = ready.json()["checks"]
                assert ready.status_code == 200 and checks["shadow_log"].startswith("degraded: "), checks
                assert time.monotonic() < deadline, checks
                time.sleep(0.2)

        os.kill(_broker_pid(bootstrap), signal.SIGKILL)
        deadline = time.monotonic() + SINK_S
        ready = httpx.get(f"{base}/readyz", timeout=10)
        while not ready.json()["checks"]["shadow_log"].startswith("degraded: "):
            assert time.monotonic() < deadline, ready.json()
            _until_both_workers_answer(url, body)  # records to send, so that the loggers find the broker gone
            ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200  # predictions do not depend on the shadow log
        assert ready.json()["checks"]["shadow_log"].startswith(f"degraded: {name}: ")
    finally:
        store.set(name, Stage.BATCH, actor="test", reason="shadow readiness test done", source="cli")
        store.close()


def _broker_pid(bootstrap: str) -> int:
    """The pid of this module's Tansu, found by the listener address on its command line."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tansu" in command and f"tcp://{bootstrap}\0".encode() in command:
                return int(entry.name)
    raise AssertionError(f"no tansu listening on {bootstrap}")
