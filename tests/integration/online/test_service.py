"""The online service over real components: SQLite lookup table, embedded Redis, flags in the SQL store."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any

import pytest
import redis as redis_client
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from lookup_tables import TableSpec, open_lookup_store
from migrate.batch import steps as batch
from migrate.batch.offline_store import open_offline, utc_naive
from migrate.batch.schedule import interval_ending
from migrate.cutover.flags import Stage
from migrate.cutover.guardrail import Guardrail
from migrate.devservices.redis_server import RedisServer
from migrate.settings import get_settings
from online.features.materialize import materialize
from online.features.redis_store import RedisFeatureStore
from online.serving.app import ServingDeps, create_app
from online.serving.runtime import build_deps
from online.serving.shadow_handoff import InProcessShadow
from online.shadow.log import DROP_REASONS, ShadowLogger
from online.shadow.record import WireRecord

pytestmark = pytest.mark.integration


class Served:
    """A running app with its dependencies and the embedded Redis behind it."""

    def __init__(self, client: TestClient, deps: ServingDeps, redis_server: RedisServer, world: Any) -> None:
        self.client = client
        self.deps = deps
        self.redis = redis_server
        self.world = world
        self.url = f"/v1/models/{world.usecase.name}/predict"

    def set_stage(self, stage: Stage, percent: int | None = None) -> None:
        name = self.world.usecase.name
        flag = self.deps.flag_store.set(name, stage, percent, actor="test", reason="test", source="cli", force=True)
        watcher = self.deps.servers[name].flags
        deadline = time.monotonic() + 5
        while watcher.current(name).revision != flag.revision:
            assert time.monotonic() < deadline, "the flag did not reach the worker"
            time.sleep(0.02)

    def predict(self, keys: list[tuple[int, int]]) -> dict[str, Any]:
        body = {"entities": [{"store_id": s, "product_id": p} for s, p in keys]}
        response = self.client.post(self.url, json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def served(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = world.settings
    interval = interval_ending(world.usecase.batch.schedule, world.cutoff)
    batch.run_batch(world.usecase, settings, interval, "test_service")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    os.environ["MIGRATE_REDIS_URL"] = server.url
    try:
        with RedisFeatureStore(server.url, read_timeout_s=2.0) as store:
            materialize(world.usecase, settings, store, world.cutoff)
        deps = build_deps(get_settings())
        with TestClient(create_app(deps), raise_server_exceptions=False) as client:
            yield Served(client, deps, server, world)
    finally:
        os.environ.pop("MIGRATE_REDIS_URL", None)
        server.stop()


def _known_and_new(served: Served) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:

    with open_offline(served.world.settings.offline_store_path) as con:
        known = con.execute(
            "SELECT store_id, product_id FROM store_products WHERE listed_at <= ? "
            "ORDER BY store_id, product_id LIMIT 40",
            [utc_naive(served.world.cutoff)],
        ).fetchall()
        new = con.execute(
            "SELECT store_id, product_id FROM store_products WHERE listed_at > ? ORDER BY store_id, product_id LIMIT 3",
            [utc_naive(served.world.cutoff)],
        ).fetchall()
    return [tuple(k) for k in known], [tuple(k) for k in new]


def test_batch_stage_serves_the_lookup_table(served: Served) -> None:
    known, new = _known_and_new(served)
    served.set_stage(Stage.BATCH)
    body = served.predict(known[:5] + new[:1])
    assert body["stage"] == "batch" and body["request_id"]
    sources = [p["source"] for p in body["predictions"]]
    assert sources == ["batch"] * 6
    spec = TableSpec.for_usecase(served.world.usecase, served.world.settings)
    rows = open_lookup_store(served.world.settings).get_many(spec, known[:5])
    for p, key in zip(body["predictions"][:5], known[:5], strict=True):
        assert p["prediction"] == pytest.approx(rows[key].prediction)
        assert p["model_version"] == rows[key].model_version and p["data_age_s"] > 0
    if new:  # listed after last night's run: the lookup table has no row
        assert body["predictions"][5]["miss"] is True and body["predictions"][5]["prediction"] is None


def test_online_stage_uses_the_same_scoring_path(served: Served) -> None:
    known, _ = _known_and_new(served)
    served.set_stage(Stage.BATCH)
    from_batch = served.predict(known[:10])["predictions"]
    served.set_stage(Stage.ONLINE)
    from_online = served.predict(known[:10])["predictions"]
    assert {p["source"] for p in from_online} == {"online"}
    # Same artifact, same features (materialized from the batch snapshot), same code: the same scores.
    for b, o in zip(from_batch, from_online, strict=True):
        assert o["prediction"] == pytest.approx(b["prediction"], abs=1e-12)
        assert o["model_version"] == b["model_version"]


def _snapshot_rows(served: Served, keys: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, Any]]:
    """Each entity's newest batch-feature row at or before the materialization instant, read from DuckDB here."""
    batch_features = served.world.usecase.batch_features
    names = [f.name for f in batch_features.features]
    with open_offline(served.world.settings.offline_store_path) as con:
        rows = con.execute(
            f"SELECT store_id, product_id, {batch_features.timestamp_column} AS as_of, {', '.join(names)} "
            f"FROM {batch_features.table} WHERE {batch_features.timestamp_column} <= ? "
            f"QUALIFY row_number() OVER (PARTITION BY store_id, product_id ORDER BY as_of DESC) = 1",
            [utc_naive(served.world.cutoff)],
        ).fetchall()
    found = {(r[0], r[1]): dict(zip(["as_of", *names], r[2:], strict=True)) for r in rows}
    return {key: found[key] for key in keys if key in found}


def test_the_online_path_reads_redis_on_the_workers_loop_with_no_thread_between(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's start-up opened the store's asyncio client on its loop: an online answer awaits Redis there,
    never the blocking read on a thread (two hand-offs a call: ~50 µs each at the median, docs/serving.md), and
    scores what the blocking read scores."""
    known, _ = _known_and_new(served)
    paths = served.deps.servers[served.world.usecase.name].paths
    assert paths.predictor is not None
    store = paths.predictor.features
    blocking: list[str] = []
    read_online = store.read_online
    monkeypatch.setattr(store, "read_online", lambda *a: blocking.append("read") or read_online(*a))
    served.set_stage(Stage.ONLINE_ONLY)
    try:
        answered = served.predict(known[:6])["predictions"]
    finally:
        served.set_stage(Stage.BATCH)
    assert {p["source"] for p in answered} == {"online"}
    assert blocking == [] and store._async is not None
    assert not [t.name for t in threading.enumerate() if t.name == "migrate-online"]
    alone = paths.predictor.predict(known[:6], served.deps.servers[served.world.usecase.name].clock(), {})
    assert blocking == ["read"]  # the blocking read, called here: the spy sees it
    assert [p["model_version"] for p in answered] == [r.model_version for r in alone]
    # The same features at a moment a few ms apart: the windows' ages differ, the scores of batch features do not.
    assert [p["prediction"] for p in answered] == pytest.approx([r.prediction for r in alone], abs=1e-12)


def test_online_answers_say_which_features_were_missing_and_how_old_each_group_was(served: Served) -> None:
    known, new = _known_and_new(served)
    assert new, "the world has no entity listed after the cutoff"
    usecase = served.world.usecase
    batch_names = [f.name for f in usecase.batch_features.features]
    realtime = usecase.realtime_features
    groups = ["batch"]
    if realtime is not None:
        groups += [*(["entity"] if realtime.features else []), *(g.name for g in realtime.all_groups if g.features)]
    served.set_stage(Stage.ONLINE)
    before = time.time()
    body = served.predict(known[:10] + new[:1])
    after = time.time()
    snapshot = _snapshot_rows(served, known[:10])
    assert len(snapshot) == 10
    implied_now = []
    for answer, key in zip(body["predictions"][:10], known[:10], strict=True):
        assert answer["source"] == "online"
        row = snapshot[key]
        # Independently of the service: a batch feature is missing exactly when its snapshot value is NULL.
        nulls = [name for name in batch_names if row[name] is None or row[name] != row[name]]
        assert [m for m in answer["missing_features"] if m in batch_names] == nulls
        inputs = {*batch_names, *usecase.realtime_feature_names, *usecase.context_names}
        assert set(answer["missing_features"]) <= inputs
        assert list(answer["group_ages_s"]) == groups
        # The batch group's age is the request instant minus the row's as_of: one instant for the whole request.
        as_of = row["as_of"].replace(tzinfo=UTC).timestamp()
        implied_now.append(as_of + answer["group_ages_s"]["batch"])
        assert answer["data_age_s"] >= answer["group_ages_s"]["batch"]
    assert max(implied_now) - min(implied_now) < 1e-3
    assert before - 1e-3 <= implied_now[0] <= after + 1e-3
    # An entity the feature store does not know: still a number (the model's answer to NaNs), and it says so.
    unknown = body["predictions"][10]
    assert unknown["source"] == "online" and unknown["prediction"] is not None and unknown["miss"] is False
    assert set(batch_names) <= set(unknown["missing_features"])
    assert unknown["group_ages_s"]["batch"] is None

    served.set_stage(Stage.BATCH)  # an answer from the lookup table has its own age and no per-feature view
    looked_up = served.predict(known[:1])["predictions"][0]
    assert looked_up["missing_features"] is None and looked_up["group_ages_s"] is None


def test_shadow_serves_batch(served: Served) -> None:
    known, _ = _known_and_new(served)
    served.set_stage(Stage.SHADOW)
    body = served.predict(known[:5])
    assert body["stage"] == "shadow"
    assert {p["source"] for p in body["predictions"]} == {"batch"}


def test_canary_is_sticky_when_the_percentage_rises(served: Served) -> None:
    known, _ = _known_and_new(served)
    served.set_stage(Stage.CANARY, 30)
    at_30 = {tuple(p["key"].values()) for p in served.predict(known)["predictions"] if p["source"] == "online"}
    served.set_stage(Stage.CANARY, 70)
    at_70 = {tuple(p["key"].values()) for p in served.predict(known)["predictions"] if p["source"] == "online"}
    assert 0 < len(at_30) < len(at_70) < len(known)
    assert at_30 <= at_70


def test_redis_down_falls_back_to_batch_without_errors(served: Served) -> None:
    known, _ = _known_and_new(served)
    served.set_stage(Stage.ONLINE)
    served.redis.stop()
    try:
        statuses = []
        for start in range(0, 20, 5):
            response = served.client.post(
                served.url, json={"entities": [{"store_id": s, "product_id": p} for s, p in known[start : start + 5]]}
            )
            statuses.append(response.status_code)
            assert {p["source"] for p in response.json()["predictions"]} == {"batch_fallback"}
            assert all(p["prediction"] is not None for p in response.json()["predictions"])
        assert statuses == [200] * 4
        assert served.client.get("/readyz").status_code == 503
    finally:
        served.redis.start()  # it kept the features in memory only: put them back for the tests that follow
        with RedisFeatureStore(served.redis.url, read_timeout_s=2.0) as store:
            materialize(served.world.usecase, served.world.settings, store, served.world.cutoff)
        served.set_stage(Stage.BATCH)


def test_admin_api_refuses_without_audit_rows_and_audits_changes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = served.world.usecase.name
    url = f"/v1/admin/flags/{name}"
    before = served.deps.flag_store.get(name)
    rows_before = len(served.deps.flag_store.history(name, 1_000))
    change = {"stage": "shadow", "reason": "try"}
    assert served.client.put(url, json=change).status_code in (401, 403)
    monkeypatch.setattr(served.deps, "admin_token", "s3cret")
    assert served.client.put(url, json=change).status_code == 401
    assert served.client.put(url, json=change, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert served.deps.flag_store.get(name).revision == before.revision
    # Refusals are counted, not audited: anyone who reaches the port could otherwise grow the audit log.
    assert len(served.deps.flag_store.history(name, 1_000)) == rows_before
    assert 'migrate_admin_refused_total{reason="wrong_token"} 1.0' in served.client.get("/metrics").text
    ok = served.client.put(url, json=change, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["stage"] == "shadow"
    assert served.deps.flag_store.history(name, 1)[0].outcome == "applied"
    served.set_stage(Stage.BATCH)


def test_metrics_count_sources(served: Served) -> None:
    text = served.client.get("/metrics").text
    assert "migrate_predictions_total" in text and 'source="batch_fallback"' in text
    assert served.client.get("/openapi.json").status_code == 200


class RecordingLogger:
    """Keeps the shadow records the server hands over (the Kafka side is tested in test_shadow_sink.py)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def log_many(self, records: Sequence[WireRecord]) -> int:
        self.records.extend(record.decode() for record in records)  # as the sink reads them off the topic
        return len(records)


def _wait_for(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_shadow_logs_both_paths_for_every_entity(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    known, new = _known_and_new(served)
    server = served.deps.servers[served.world.usecase.name]
    recorder = RecordingLogger()
    monkeypatch.setattr(
        server, "shadow", InProcessShadow(server.usecase.name, server.paths, recorder, server.background)
    )
    served.set_stage(Stage.SHADOW)
    body = served.predict(known[:5] + new[:1])
    _wait_for(lambda: len(recorder.records) == len(body["predictions"]), "the shadow records")
    for record, answer in zip(recorder.records, body["predictions"], strict=True):
        assert record.request_id == body["request_id"] and record.stage == "shadow" and record.percent == 0
        assert record.served_source == "batch" and record.key == answer["key"]
        assert record.online_prediction is not None and record.online_error is None
        if answer["miss"]:
            assert record.batch_miss and record.batch_prediction is None
        else:
            assert record.batch_prediction == pytest.approx(answer["prediction"])
            # Same features, same model, same code: the live path agrees with the table to the last bit.
            assert record.online_prediction == pytest.approx(record.batch_prediction, abs=1e-12)
            assert record.online_feature_ages_s and record.batch_data_age_s is not None
            assert set(record.online_features) == set(record.online_feature_ages_s)
    # The version that answered rides on every record, the miss included (its read came from the same version) ...
    versions = {record.lookup_version for record in recorder.records}
    assert len(versions) == 1 and None not in versions
    # ... and a request whose every entity missed names the version applications read then.
    served.predict(new[1:2])
    _wait_for(lambda: len(recorder.records) == len(body["predictions"]) + 1, "the all-miss record")
    assert recorder.records[-1].batch_miss and recorder.records[-1].lookup_version in versions
    served.set_stage(Stage.BATCH)


def test_kafka_down_leaves_serving_unaffected_and_counts_drops(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:

    known, _ = _known_and_new(served)
    server = served.deps.servers[served.world.usecase.name]
    # Port 1 on loopback refuses connections: a broker that is down.
    logger = ShadowLogger("127.0.0.1:1", served.world.usecase.name, timeout_s=0.5, registry=CollectorRegistry())
    monkeypatch.setattr(server, "shadow", InProcessShadow(server.usecase.name, server.paths, logger, server.background))
    served.set_stage(Stage.SHADOW)
    try:
        for start in range(0, 20, 5):
            body = served.predict(known[start : start + 5])
            assert {p["source"] for p in body["predictions"]} == {"batch"}
        _wait_for(
            lambda: sum(logger.stats().get(reason, 0) for reason in DROP_REASONS) > 0,
            "dropped shadow records to be counted",
            timeout_s=30,
        )
        # Readiness says the shadow log is down, and why, but predictions stay ready.
        ready = served.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["shadow_log"].startswith(f"degraded: {served.world.usecase.name}: ")
        assert "127.0.0.1:1" in ready.json()["checks"]["shadow_log"]
    finally:
        logger.close(timeout_s=2)
        served.set_stage(Stage.BATCH)


def test_guardrail_breach_rolls_back_to_shadow_and_says_why(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:

    name = served.world.usecase.name
    known, _ = _known_and_new(served)
    server = served.deps.servers[name]
    monkeypatch.setattr(server, "guardrail", Guardrail(max_error_rate=0.1, max_p99_latency_ms=1_000, min_samples=10))
    served.set_stage(Stage.ONLINE)
    served.redis.stop()  # the injected error burst: every online call fails
    try:
        for i in range(12):
            body = served.predict(known[i : i + 1])
            assert body["predictions"][0]["source"] in ("batch_fallback", "batch")  # never an error to the caller
        watcher = server.flags
        _wait_for(lambda: watcher.current(name).stage is Stage.SHADOW, "the automatic rollback")
        entry = served.deps.flag_store.history(name, 1)[0]
        assert (entry.source, entry.from_stage, entry.to_stage) == ("auto_rollback", "online", "shadow")
        assert "guardrail" in entry.reason and "error" in (entry.detail or "")
        assert served.predict(known[:1])["stage"] == "shadow"
    finally:
        served.redis.start()
        with RedisFeatureStore(served.redis.url, read_timeout_s=2.0) as store:
            materialize(served.world.usecase, served.world.settings, store, served.world.cutoff)
        served.set_stage(Stage.BATCH)


def test_redis_slowed_mid_load_falls_back_within_the_budget(served: Served) -> None:

    known, _ = _known_and_new(served)
    served.set_stage(Stage.ONLINE)
    sleeper = redis_client.Redis.from_url(served.redis.url, socket_timeout=10)
    stall = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", "3"), daemon=True)
    stall.start()
    time.sleep(0.2)  # the server is now frozen for ~3 s
    try:
        for i in range(5):
            started = time.monotonic()
            response = served.client.post(
                served.url, json={"entities": [{"store_id": known[i][0], "product_id": known[i][1]}]}
            )
            waited = time.monotonic() - started
            assert response.status_code == 200
            assert response.json()["predictions"][0]["source"] == "batch_fallback"
            # Functional bound, not a benchmark: the request must not wait for the frozen server (3 s).
            assert waited < 1.5, waited
        assert stall.is_alive(), "Redis woke up before the requests ended: the test proved nothing"
    finally:
        stall.join(timeout=10)
        sleeper.close()
        served.set_stage(Stage.BATCH)


def _fallbacks(served: Served) -> float:
    line = f'migrate_predictions_total{{source="batch_fallback",usecase="{served.world.usecase.name}"}} '
    found = [row for row in served.client.get("/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


def _guardrail_errors(served: Served) -> int:
    described = served.deps.servers[served.world.usecase.name].guardrail.describe()  # "N online calls, E errors…"
    return int(described.split(", ")[1].split()[0])


def test_a_stopped_redis_costs_each_request_its_deadline_and_feeds_the_guardrail(served: Served) -> None:
    """SIGSTOP the embedded redis-server: its socket accepts and never answers. Before, every request waited for
    the socket timeout, its retry and the calls queued ahead of it (~225 ms at a 50 ms timeout); now each stops
    waiting at MIGRATE_REDIS_TIMEOUT_S and the error says so: online_only answers it, online falls back."""
    known, _ = _known_and_new(served)
    pid = served.redis.pid
    assert pid is not None
    timeout_s = get_settings().redis_timeout_s
    deadline_error = f"TimeoutError: the online path did not answer within {timeout_s} s (MIGRATE_REDIS_TIMEOUT_S)"

    def post(i: int) -> dict[str, Any]:
        key = known[i % len(known)]
        response = served.client.post(served.url, json={"entities": [{"store_id": key[0], "product_id": key[1]}]})
        assert response.status_code == 200, response.text
        return dict(response.json()["predictions"][0])

    served.set_stage(Stage.ONLINE_ONLY)
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(8) as threads:
            stopped = list(threads.map(post, range(16)))
        assert {(p["source"], p["error"]) for p in stopped} == {("online", deadline_error)}
        served.set_stage(Stage.ONLINE)
        served.deps.servers[served.world.usecase.name].guardrail.reset()  # count this test's calls alone
        fallbacks = _fallbacks(served)
        with ThreadPoolExecutor(8) as threads:
            fell_back = list(threads.map(post, range(16)))
        assert {p["source"] for p in fell_back} == {"batch_fallback"}
        assert all(p["prediction"] is not None for p in fell_back)
        assert _fallbacks(served) == fallbacks + 16
        assert _guardrail_errors(served) == 16
    finally:
        os.kill(pid, signal.SIGCONT)
        served.set_stage(Stage.BATCH)
    served.set_stage(Stage.ONLINE)
    assert served.predict([known[0]])["predictions"][0]["source"] == "online"  # Redis answers again
    served.set_stage(Stage.BATCH)


def test_a_locked_lookup_table_costs_each_request_its_deadline_then_answers_again(served: Served) -> None:
    """A lookup table another session holds under an exclusive lock (a migration, a VACUUM FULL): before, a
    batch-served request waited as long as the lock was held (up to the 600 s statement timeout) and every request
    behind it too. Now each answers the timeout as the batch path's error at MIGRATE_LOOKUP_TIMEOUT_S, and the table
    answers again once the lock goes. PostgreSQL only: SQLite's readers never wait for a writer (WAL)."""
    settings = served.world.settings
    if settings.backend != "postgresql":
        pytest.skip("a SQLite reader never waits for a lock (WAL): the production profile runs this on PostgreSQL")
    known, _ = _known_and_new(served)
    timeout_s = get_settings().lookup_timeout_s
    deadline_error = f"TimeoutError: the lookup table did not answer within {timeout_s} s (MIGRATE_LOOKUP_TIMEOUT_S)"
    spec = TableSpec.for_usecase(served.world.usecase, settings)
    served.set_stage(Stage.BATCH)
    assert served.predict(known[:1])["predictions"][0]["error"] is None
    locker = sa.create_engine(settings.sql_url_value)
    locked_at, done = threading.Event(), threading.Event()
    hold_s = timeout_s + 4.0  # the lock goes after this at the latest: without a deadline the requests wait it out

    def hold_the_lock() -> None:
        with locker.connect() as conn:
            conn.execute(sa.text(f'LOCK TABLE "{spec.name}" IN ACCESS EXCLUSIVE MODE'))
            locked_at.set()
            done.wait(timeout=hold_s)
            conn.rollback()

    def post(i: int) -> tuple[dict[str, Any], float]:
        key = known[i % len(known)]
        started = time.monotonic()
        answer = served.predict([key])["predictions"][0]
        return answer, time.monotonic() - started

    counted = f'migrate_lookup_errors_total{{reason="timeout",usecase="{served.world.usecase.name}"}} '

    def timeouts() -> float:
        found = [row for row in served.client.get("/metrics").text.splitlines() if row.startswith(counted)]
        return float(found[0].removeprefix(counted)) if found else 0.0

    before = timeouts()
    holder = threading.Thread(target=hold_the_lock, name="test-lock-holder")
    holder.start()
    try:
        assert locked_at.wait(timeout=10), "the lock was not taken"
        started = time.monotonic()
        with ThreadPoolExecutor(4) as threads:
            locked = list(threads.map(post, range(8)))
        assert time.monotonic() - started < hold_s, "the requests waited for the lock to go"
        assert {(p["source"], p["error"]) for p, _ in locked} == {("batch", deadline_error)}
        assert all(p["prediction"] is None for p, _ in locked)
        assert timeouts() == before + 8  # each entity answered with the timeout is counted
    finally:
        done.set()
        holder.join(timeout=30)
        locker.dispose()
    deadline = time.monotonic() + 10
    while (answer := served.predict(known[:1])["predictions"][0])["error"] is not None:  # the held read drains
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    assert answer["source"] == "batch" and answer["prediction"] is not None


def _server_timing(header: str) -> dict[str, float]:
    parts = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        parts[name] = float(duration)
    return parts


def test_each_answer_says_where_its_time_went_in_server_timing(served: Served) -> None:
    """The W3C Server-Timing header names the parts that ran: features and model for the online path, lookup for
    the table; each inside the route's total, which is inside what the client waited."""
    known, _ = _known_and_new(served)
    for stage, parts in ((Stage.ONLINE, {"features", "model", "total"}), (Stage.SHADOW, {"lookup", "total"})):
        served.set_stage(stage)
        started = time.perf_counter()
        response = served.client.post(
            served.url, json={"entities": [{"store_id": s, "product_id": p} for s, p in known[:5]]}
        )
        waited_ms = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        timing = _server_timing(response.headers["server-timing"])
        assert set(timing) == parts, (stage, timing)
        assert all(ms >= 0 for ms in timing.values())
        assert sum(ms for name, ms in timing.items() if name != "total") <= timing["total"] <= waited_ms
    served.set_stage(Stage.SHADOW)
