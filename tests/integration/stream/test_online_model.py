"""The online model: trained on batch + real-time features with the processor's window code, no leakage."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from migrate.artifact import ArtifactStore
from migrate.batch.event_history import online_training_frame
from migrate.batch.offline_store import open_offline
from migrate.batch.training import train
from migrate.scoring import load_model
from online.features.materialize import materialize
from online.features.redis_store import RedisFeatureStore
from online.serving.predictor import OnlinePredictor
from online.stream.processor import StreamProcessor

pytestmark = pytest.mark.integration


def test_online_model_trains_on_batch_and_realtime_features_and_serves_by_role(world: Any) -> None:
    usecase, settings = world.usecase, world.settings
    info = train(usecase, settings, world.cutoff, role="online")
    assert info.role == "online" and list(info.feature_names) == usecase.online_feature_names
    assert 0.5 < info.metrics["auc"] <= 1.0
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    online, batch = load_model(usecase, store, "online"), load_model(usecase, store)
    assert online.feature_names == tuple(usecase.online_feature_names) and online.version == info.version
    assert batch.feature_names == tuple(usecase.feature_names) and batch.version != online.version


def test_realtime_training_features_are_computed_from_strictly_earlier_events(world: Any) -> None:
    """Each training row's windows, counted by hand from the raw events strictly before its prediction time."""
    usecase = world.usecase
    with open_offline(world.settings.offline_store_path) as con:
        frame = online_training_frame(con, usecase, world.cutoff - timedelta(days=3), world.cutoff)
        events = con.sql(
            "SELECT store_id, product_id, epoch(event_time), found FROM scan_events WHERE event_time < $end",
            params={"end": world.cutoff.replace(tzinfo=None)},
        ).fetchall()
    by_entity: dict[tuple[int, int], list[tuple[float, bool]]] = {}
    for store, product, when, found in events:
        by_entity.setdefault((store, product), []).append((float(when), bool(found)))
    rows = frame.select(["store_id", "product_id", "prediction_time", "scans_120m", "found_rate_30m"]).to_pylist()
    assert len(rows) > 500
    for row in rows[:: max(1, len(rows) // 500)]:
        at = row["prediction_time"].timestamp()
        last = math.floor(at / 60)
        seen = [(w, f) for w, f in by_entity[(row["store_id"], row["product_id"])] if w < at]
        in_120 = [f for w, f in seen if last - 120 < math.floor(w / 60) <= last]
        in_30 = [f for w, f in seen if last - 30 < math.floor(w / 60) <= last]
        assert row["scans_120m"] == len(in_120), row
        expected_rate = sum(in_30) / len(in_30) if in_30 else math.nan
        assert np.isclose(row["found_rate_30m"], expected_rate, equal_nan=True), row
    # The labelled event itself is never among its own features: with no earlier event, the windows are empty.
    firsts = [
        r
        for r in rows
        if not any(w < r["prediction_time"].timestamp() for w, _ in by_entity[(r["store_id"], r["product_id"])])
    ]
    assert all(r["scans_120m"] == 0 and math.isnan(r["found_rate_30m"]) for r in firsts)


def test_live_prediction_uses_the_streamed_features_exactly_as_training_computes_them(world: Any, stream: Any) -> None:
    """Batch features materialized + real-time features from the processor → the online model's score equals
    the score of the vector training would build for that instant, to the last bit."""

    usecase = world.usecase
    train(usecase, world.settings, world.cutoff, role="online")
    model = load_model(usecase, ArtifactStore(world.settings.artifacts_dir, world.settings.project_dir), "online")
    store = RedisFeatureStore(stream.redis_url, read_timeout_s=5.0, write_timeout_s=30.0)
    try:
        materialize(stream.usecase, world.settings, store, world.cutoff)
        instant = world.cutoff + timedelta(hours=9, seconds=1)
        before = [e for e in stream.events if e["event_time"] < instant]
        stream.publish(before)
        StreamProcessor(stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url).run(
            until_caught_up=True, max_seconds=120
        )
        realtime = stream.expected(before, instant)
        with open_offline(world.settings.offline_store_path) as con:
            batch = {
                (r[0], r[1]): list(r[2:])
                for r in con.sql(
                    f"SELECT store_id, product_id, {', '.join(usecase.feature_names)} FROM item_features_daily "
                    "WHERE as_of <= $cutoff QUALIFY row_number() OVER (PARTITION BY store_id, product_id "
                    "ORDER BY as_of DESC) = 1",
                    params={"cutoff": world.cutoff.replace(tzinfo=None)},
                ).fetchall()
            }
        keys = sorted(k for k in realtime if k in batch)[:200]
        assert len(keys) > 50
        live = OnlinePredictor(stream.usecase, model, store).predict(keys, instant)
        matrix = np.array([[np.nan if v is None else v for v in batch[k]] + realtime[k] for k in keys], dtype=float)
        assert [r.prediction for r in live] == [float(p) for p in model.score(matrix)]
        assert all(r.model_version == model.version for r in live)
        # What the predict answer tells the client, against this test's own vectors and events: the inputs that
        # are NaN here are the ones it lists as missing, and the entity group's age is the instant minus the
        # entity's newest event.
        names = [*usecase.feature_names, *usecase.realtime_feature_names]  # the columns of `matrix`
        newest: dict[tuple[int, int], float] = {}
        for event in before:
            key = (event["store_id"], event["product_id"])
            newest[key] = max(newest.get(key, -math.inf), event["event_time"].timestamp())
        for key, result, row in zip(keys, live, matrix, strict=True):
            assert result.missing == [name for name, value in zip(names, row, strict=True) if math.isnan(value)]
            assert result.group_ages_s["entity"] == pytest.approx(instant.timestamp() - newest[key], abs=1e-6)
            assert next(iter(result.group_ages_s)) == "batch" and result.group_ages_s["batch"] is not None
    finally:
        store.close()
