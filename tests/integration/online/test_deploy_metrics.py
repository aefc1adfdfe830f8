"""The dashboard and alert rules in deploy/ read only metrics the service and the stream processor export; the
new series count what the answers say."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promql_names import alert_expressions, dashboard_expressions, exposed_names, metric_names

from migrate.batch import steps as batch
from migrate.batch.offline_store import open_offline, utc_naive
from migrate.batch.schedule import interval_ending
from migrate.cutover.flags import Stage
from migrate.devservices.broker import start_broker
from migrate.devservices.redis_server import RedisServer
from migrate.settings import get_settings
from online.features.materialize import materialize
from online.features.redis_store import RedisFeatureStore
from online.serving.app import ServingDeps, create_app
from online.serving.runtime import build_deps
from online.stream.metrics import StreamMetrics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, ServingDeps, Any]]:
    """The service over the world, its shadow log in process to an embedded broker (so its series exist too)."""
    settings = world.settings
    batch.run_batch(world.usecase, settings, interval_ending(world.usecase.batch.schedule, world.cutoff), "deploy")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    broker = start_broker(settings)
    os.environ["MIGRATE_REDIS_URL"] = server.url
    os.environ["MIGRATE_KAFKA_BOOTSTRAP"] = broker.bootstrap
    try:
        with RedisFeatureStore(server.url, read_timeout_s=2.0) as store:
            materialize(world.usecase, settings, store, world.cutoff)
        deps = build_deps(get_settings(), shadow_process=False)
        with TestClient(create_app(deps), raise_server_exceptions=False) as client:
            yield client, deps, world
    finally:
        os.environ.pop("MIGRATE_REDIS_URL", None)
        os.environ.pop("MIGRATE_KAFKA_BOOTSTRAP", None)
        broker.stop()
        server.stop()


def _keys(world: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Entities the lookup table has (listed before the cutoff) and some it cannot have (listed after)."""
    with open_offline(world.settings.offline_store_path) as con:
        query = "SELECT store_id, product_id FROM store_products WHERE listed_at {} ? ORDER BY 1, 2 LIMIT {}"
        known = con.execute(query.format("<=", 8), [utc_naive(world.cutoff)]).fetchall()
        new = con.execute(query.format(">", 2), [utc_naive(world.cutoff)]).fetchall()
    return [tuple(k) for k in known], [tuple(k) for k in new]


def _at(deps: ServingDeps, name: str, stage: Stage, percent: int | None = None) -> None:
    flag = deps.flag_store.set(name, stage, percent, actor="test", reason="deploy metrics", source="cli", force=True)
    watcher = deps.servers[name].flags
    while watcher.current(name).revision != flag.revision:  # read the store now rather than wait for the poller
        watcher.poll()


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_the_series_count_what_the_answers_say(app: tuple[TestClient, ServingDeps, Any]) -> None:
    client, deps, world = app
    name = world.usecase.name
    url = f"/v1/models/{name}/predict"
    known, new = _keys(world)
    before = client.get("/metrics").text

    _at(deps, name, Stage.BATCH)
    answers = []
    for chunk in (known[:4] + new, known[4:]):
        response = client.post(url, json={"entities": [{"store_id": s, "product_id": p} for s, p in chunk]})
        assert response.status_code == 200, response.text
        answers += response.json()["predictions"]
    assert client.post(url, json={"entities": [{"store_id": "x"}]}).status_code == 422
    assert client.post("/v1/models/nope/predict", json={"entities": []}).status_code == 404
    _at(deps, name, Stage.ONLINE)
    online = client.post(url, json={"entities": [{"store_id": s, "product_id": p} for s, p in known[:3]]}).json()
    text = client.get("/metrics").text

    def grew(metric: str, **labels: str) -> float:
        return _value(text, metric, **labels) - _value(before, metric, **labels)

    misses = sum(a["miss"] for a in answers)
    assert misses == len(new) > 0
    assert grew("migrate_lookup_misses_total", usecase=name) == misses
    aged = [a["data_age_s"] for a in answers if a["data_age_s"] is not None]
    assert grew("migrate_feature_age_seconds_count", usecase=name, group="lookup") == len(aged)
    assert grew("migrate_feature_age_seconds_sum", usecase=name, group="lookup") == pytest.approx(sum(aged))
    assert grew("migrate_predict_requests_total", usecase=name, status="422") == 1
    assert grew("migrate_predict_requests_total", usecase="unknown", status="404") == 1
    assert grew("migrate_http_requests_total", route="/v1/models/{usecase}/predict", status="404") == 1
    assert _value(text, "migrate_usecase_stage", usecase=name, stage="online") == 1
    assert _value(text, "migrate_usecase_stage", usecase=name, stage="batch") == 0
    assert {p["source"] for p in online["predictions"]} == {"online"}
    version = online["predictions"][0]["model_version"]
    assert _value(text, "migrate_model_info", usecase=name, model_version=version) == 1
    assert _value(text, "migrate_guardrail_window_calls", usecase=name) >= 1
    _at(deps, name, Stage.BATCH)


def test_every_dashboard_and_alert_expression_names_an_exported_metric(
    app: tuple[TestClient, ServingDeps, Any],
) -> None:
    client, _, world = app
    stream = CollectorRegistry()
    metrics = StreamMetrics.of(stream, world.usecase.name)
    metrics.committed(2, [0.1, 0.2])
    metrics.dead_letter("invalid")
    metrics.lag(0, 3)
    exported = exposed_names(client.get("/metrics").text) | exposed_names(generate_latest(stream).decode())
    for where, exprs in (("deploy/grafana/migrate.json", dashboard_expressions()), ("alerts.yml", alert_expressions())):
        for expr in exprs:
            unknown = metric_names(expr) - exported
            assert not unknown, f"{where}: {expr!r} reads {sorted(unknown)}, which nothing exports"
