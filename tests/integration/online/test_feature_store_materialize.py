"""Materialization: the batch snapshot's features land in the feature store, with their event times, idempotently."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from migrate.batch.offline_store import open_offline, snapshot_features, utc_naive
from migrate.batch.steps import Interval, run_batch
from migrate.devservices.redis_server import EmbeddedRedis, RedisServer, resolve_redis_url, stop_redis
from migrate.errors import CorrectionRejectedError, FeatureStoreUnavailableError
from migrate.examples.item_availability.generator import SimulationConfig, generate
from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase
from online.features.materialize import MaterializeReport, materialize, materialize_active
from online.features.redis_store import RedisFeatureStore
from online.features.store import encode_time, encode_value

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class SmallWorld:
    settings: Settings
    usecase: UseCase
    cutoff: datetime


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    """3 stores × 30 products × 3 days in an offline store of this module's own (no model needed)."""

    settings = get_settings(state_dir=tmp_path_factory.mktemp("materialize-state"))
    summary = generate(settings.offline_store_path, SimulationConfig(stores=3, products=30, days=3, seed=5))
    usecase = Registry(settings.usecases_dir).get("item_availability")
    return SmallWorld(settings, usecase, summary.last_batch_cutoff)


@pytest.fixture
def namespaced(small_world: SmallWorld, fs_namespace: str) -> UseCase:
    """The example use case under this test's own name, so runs on the shared Redis never meet."""
    return small_world.usecase.model_copy(update={"name": fs_namespace})


def _snapshot(world: SmallWorld, as_of: datetime) -> list[dict[str, object]]:
    with open_offline(world.settings.offline_store_path) as con:
        rows: list[dict[str, object]] = snapshot_features(con, world.usecase, as_of).to_pylist()
    return rows


def _assert_matches(store: RedisFeatureStore, usecase: UseCase, rows: list[dict[str, object]]) -> None:
    keys = [(int(str(r["store_id"])), int(str(r["product_id"]))) for r in rows]
    found = store.read(usecase.name, keys, usecase.feature_names)
    for row, values in zip(rows, found, strict=True):
        assert values is not None, row
        for name in usecase.feature_names:
            expected = row[name]
            got = values[name]
            assert got.event_time == row["features_as_of"]
            if expected is None or (isinstance(expected, float) and math.isnan(expected)):
                assert got.value is None or math.isnan(got.value)
            else:
                assert got.value == expected, (row, name)


def test_materialize_writes_the_snapshot_and_rerunning_is_a_no_op(
    small_world: SmallWorld, namespaced: UseCase, feature_store: RedisFeatureStore
) -> None:
    rows = _snapshot(small_world, small_world.cutoff)
    features = len(namespaced.feature_names)
    report = materialize(namespaced, small_world.settings, feature_store, small_world.cutoff, batch_rows=1_000)
    assert isinstance(report, MaterializeReport)
    assert (report.entities, report.written, report.unchanged, report.rejected) == (
        len(rows),
        len(rows) * features,
        0,
        0,
    )
    assert report.as_of == small_world.cutoff.isoformat() and report.seconds > 0
    _assert_matches(feature_store, namespaced, rows[:: max(1, len(rows) // 7)])  # a spread of entities
    assert not (small_world.settings.state_dir / "materialize" / namespaced.name).exists() or not any(
        (small_world.settings.state_dir / "materialize" / namespaced.name).iterdir()
    )  # the temporary snapshot is gone

    again = materialize(namespaced, small_world.settings, feature_store, small_world.cutoff, batch_rows=1_000)
    assert (again.written, again.unchanged, again.stale, again.corrected) == (0, len(rows) * features, 0, 0)

    # An older window cannot overwrite the newer values: every entity whose features moved on is stale.
    earlier = materialize(
        namespaced, small_world.settings, feature_store, small_world.cutoff - timedelta(days=1), batch_rows=1_000
    )
    assert earlier.stale > 0 and earlier.rejected == 0 and earlier.corrected == 0
    _assert_matches(feature_store, namespaced, rows)


def test_redis_holds_exactly_the_snapshot_encoded_by_hand(
    small_world: SmallWorld, namespaced: UseCase, feature_store: RedisFeatureStore
) -> None:
    # Batches of 5 rows: 14 batches written from the materialization's writer threads, the last one short.
    report = materialize(namespaced, small_world.settings, feature_store, small_world.cutoff, batch_rows=5)
    rows = _snapshot(small_world, small_world.cutoff)
    expected = {}
    for row in rows:
        # The record as docs/online_features.md writes it: one event time for every feature of a snapshot row.
        moment = encode_time(row["features_as_of"])  # type: ignore[arg-type]
        values = ",".join(encode_value(row[name]) for name in namespaced.feature_names)  # type: ignore[arg-type]
        record = f"{moment},{moment}\n{','.join(namespaced.feature_names)}\n{values}"
        expected[f"mig:{namespaced.name}#b:{row['store_id']}:{row['product_id']}".encode()] = record.encode()
    client = feature_store.client
    stored = {key: client.get(key) for key in client.scan_iter(f"mig:{namespaced.name}#b:*", count=1_000)}
    assert len(rows) > 5 * 12 and stored == expected
    assert (report.entities, report.written) == (len(rows), len(rows) * len(namespaced.feature_names))


def test_a_store_that_goes_away_fails_the_materialization_with_the_fix(small_world: SmallWorld, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    store = RedisFeatureStore(server.url, write_timeout_s=2.0, connect_timeout_s=0.5, retries=0)
    server.stop()
    with pytest.raises(FeatureStoreUnavailableError) as caught:
        materialize(small_world.usecase, small_world.settings, store, small_world.cutoff, batch_rows=5)
    assert server.url in str(caught.value) and "MIGRATE_REDIS_URL" in str(caught.value.fix)
    folder = small_world.settings.state_dir / "materialize" / small_world.usecase.name
    assert not folder.exists() or not any(folder.iterdir())  # the snapshot is removed on failure too
    store.close()


def test_a_changed_history_is_rejected_then_applied_on_request(
    small_world: SmallWorld, namespaced: UseCase, feature_store: RedisFeatureStore
) -> None:
    settings, cutoff = small_world.settings, small_world.cutoff
    materialize(namespaced, settings, feature_store, cutoff)
    target = _snapshot(small_world, cutoff)[3]
    key = (target["store_id"], target["product_id"])
    as_of = target["features_as_of"]
    assert isinstance(as_of, datetime)
    with open_offline(settings.offline_store_path, read_only=False) as con:
        con.execute(
            "UPDATE item_features_daily SET scans_7d = scans_7d + 1000 WHERE store_id = ? AND product_id = ? "
            "AND as_of = ?",
            [key[0], key[1], utc_naive(as_of)],
        )
    with pytest.raises(CorrectionRejectedError) as caught:
        materialize(namespaced, settings, feature_store, cutoff)
    assert caught.value.count == 1 and caught.value.examples == [f"{key}/scans_7d"]
    report = caught.value.report
    assert isinstance(report, MaterializeReport) and report.rejected == 1
    stored = feature_store.read(namespaced.name, [key], ["scans_7d"])[0]  # type: ignore[list-item]
    assert stored is not None and stored["scans_7d"].value == target["scans_7d"]  # left as it was

    applied = materialize(namespaced, settings, feature_store, cutoff, on_correction="apply")
    assert (applied.corrected, applied.rejected, applied.written) == (1, 0, 0)
    stored = feature_store.read(namespaced.name, [key], ["scans_7d"])[0]  # type: ignore[list-item]
    assert stored is not None and stored["scans_7d"].value == float(target["scans_7d"]) + 1000  # type: ignore[arg-type]


@pytest.fixture
def batch_ran(world: object) -> Iterator[object]:
    """The shared trained world of tests/integration/conftest.py, with its batch run published."""

    cutoff = world.cutoff  # type: ignore[attr-defined]
    run_batch(world.usecase, world.settings, Interval(cutoff - timedelta(days=1), cutoff), f"fs-{uuid.uuid4().hex}")  # type: ignore[attr-defined]
    yield world


def test_materialize_active_uses_the_published_interval_and_the_redis_it_is_given(
    batch_ran: object, fs_embedded_redis: RedisServer
) -> None:
    world = batch_ran
    settings: Settings = world.settings  # type: ignore[attr-defined]
    usecase: UseCase = world.usecase  # type: ignore[attr-defined]
    cutoff: datetime = world.cutoff  # type: ignore[attr-defined]

    configured = settings.model_copy(update={"redis_url": SecretStr(fs_embedded_redis.url)})
    report = materialize_active(usecase, configured, fs_embedded_redis.url)
    assert report.as_of == cutoff.isoformat() and report.entities == world.entities_at_cutoff  # type: ignore[attr-defined]
    assert report.store == fs_embedded_redis.url

    # Without MIGRATE_REDIS_URL the CLI and the DAG resolve the state dir's embedded Redis, left running for the
    # server (the production test profile sets MIGRATE_REDIS_URL: unset it here).
    settings = settings.model_copy(update={"redis_url": None})
    try:
        url, _started = resolve_redis_url(settings)
        embedded = materialize_active(usecase, settings, url)
        assert embedded.written == report.written and embedded.store == url
        server = EmbeddedRedis(settings).start()
        assert not server.owned  # already running, started by resolve_redis_url
        with RedisFeatureStore(server.url) as store:
            assert Path(server.url.removeprefix("unix://")).is_relative_to(settings.state_dir)
            assert store.read(usecase.name, [(0, 0)], usecase.feature_names) is not None
    finally:
        assert stop_redis(settings)


def test_a_store_of_the_previous_layout_is_moved_then_materialized_as_before(
    small_world: SmallWorld, namespaced: UseCase, feature_store: RedisFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What 0.x left in a store: each entity's batch features as fields of its hash, in reverse order here (the
    # hash keeps no order a record could rely on). Materializing the same snapshot moves them into records and
    # finds every value unchanged; a second run is decided by the write script alone.
    rows = _snapshot(small_world, small_world.cutoff)
    client = feature_store.client
    for row in rows:
        fields = {"_": "1"}
        for name in reversed(namespaced.feature_names):
            fields[f"v:{name}"] = encode_value(row[name])  # type: ignore[arg-type]
            fields[f"t:{name}"] = encode_time(row["features_as_of"])  # type: ignore[arg-type]
        client.hset(f"mig:{namespaced.name}:{row['store_id']}:{row['product_id']}", mapping=fields)
    features = len(namespaced.feature_names)
    first = materialize(namespaced, small_world.settings, feature_store, small_world.cutoff, batch_rows=1_000)
    assert (first.written, first.unchanged, first.stale, first.rejected) == (0, len(rows) * features, 0, 0)
    assert not list(client.scan_iter(f"mig:{namespaced.name}:*", count=1_000))  # only markers were left: gone
    _assert_matches(feature_store, namespaced, rows)

    decided_here: list[int] = []
    original = RedisFeatureStore._decide

    def counting(self: RedisFeatureStore, *args: Any, **kwargs: Any) -> Any:
        decided_here.append(len(args[3]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RedisFeatureStore, "_decide", counting)
    again = materialize(namespaced, small_world.settings, feature_store, small_world.cutoff, batch_rows=1_000)
    assert (again.written, again.unchanged) == (0, len(rows) * features) and decided_here == []
