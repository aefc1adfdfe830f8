"""A second event stream of a use case (shelf checks per store), with its own topic, table and schema.

Its events are keyed by their own id, so one store's checks spread over every partition: each partition's
processor keeps a partial state per store, merged when a request reads it. The served windows, and the training
path's windows at the same instant, must equal the values counted by hand from the raw checks.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from stream_helpers import Stream

from migrate.batch.event_history import realtime_features_at
from migrate.batch.offline_store import open_offline
from migrate.feature_windows import evaluate, groups_of
from migrate.usecase import UseCase
from online.features.redis_store import RedisFeatureStore
from online.stream.processor import StreamProcessor, events_topic
from online.stream.publisher import EventPublisher

pytestmark = pytest.mark.integration

CHECKS = {
    "name": "checks",
    "event_table": "shelf_checks",
    "event_time_column": "checked_at",
    "events": {
        "partitions": 3,
        "id_field": "check_id",
        "fields": {"check_id": "str", "checked_at": "datetime", "store_id": "int", "empty_shelves": "int"},
    },
    "groups": [
        {
            "name": "store_checks",
            "key": ["store_id"],
            "features": [
                {"name": "checks_60m", "aggregation": "count", "window": "60m"},
                {"name": "empty_shelves_60m", "aggregation": "sum", "field": "empty_shelves", "window": "60m"},
                {"name": "minutes_since_check", "aggregation": "minutes_since"},
            ],
        }
    ],
}


def with_checks(usecase: UseCase) -> UseCase:
    raw = usecase.model_dump()
    raw["realtime_features"]["streams"] = [CHECKS]
    return UseCase.model_validate(raw)


def checks_of(stream: Stream, count: int = 400, seed: int = 4) -> list[dict[str, Any]]:
    """Shelf checks of the world's stores over its last day, in time order."""
    rng = random.Random(seed)
    end = max(e["event_time"] for e in stream.events)
    stores = sorted({e["store_id"] for e in stream.events})
    times = sorted(end - timedelta(seconds=rng.uniform(0, 86_400)) for _ in range(count))
    return [
        {
            "check_id": f"chk-{i:05d}",
            "checked_at": when,
            "store_id": rng.choice(stores),
            "empty_shelves": rng.randint(0, 9),
        }
        for i, when in enumerate(times)
    ]


def by_hand(checks: list[dict[str, Any]], store: int, at_s: float) -> list[float]:
    last = math.floor(at_s / 60)
    mine = [c for c in checks if c["store_id"] == store and c["checked_at"].timestamp() < at_s]
    inside = [c for c in mine if last - 60 < math.floor(c["checked_at"].timestamp() / 60) <= last]
    newest = max((c["checked_at"].timestamp() for c in mine), default=None)
    return [
        float(len(inside)),
        float(sum(c["empty_shelves"] for c in inside)),
        math.nan if newest is None else (at_s - newest) / 60.0,
    ]


def same(a: list[float], b: list[float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_a_second_stream_feeds_its_groups_merged_across_partitions_as_training_computes_them(stream: Stream) -> None:
    usecase = with_checks(stream.usecase)
    checks = checks_of(stream)
    publisher = EventPublisher(
        stream.bootstrap,
        events_topic(usecase, stream.settings.events_topic_prefix, "checks"),
        ["check_id"],
        partitions=3,
        timeout_s=10,
    )
    try:
        assert publisher.publish(checks, time_field="checked_at") == len(checks)
    finally:
        publisher.close()
    processor = StreamProcessor(
        stream.settings, usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url, stream="checks"
    )
    assert processor.topic.endswith(".checks") and processor.group_id.endswith(".checks")
    report = processor.run(until_caught_up=True, max_seconds=120)
    assert report.events == len(checks) and report.dead_letters == 0

    [group] = [g for g in groups_of(usecase) if g.name == "store_checks"]
    stores = sorted({c["store_id"] for c in checks})
    end = max(c["checked_at"] for c in checks)
    instants = [end + timedelta(seconds=s) for s in (1, 600, 3_000, 7_200)]
    store = RedisFeatureStore(stream.redis_url, read_timeout_s=5.0, write_timeout_s=30.0)
    try:
        keys = [(s, 0) for s in stores]  # any product: the group is keyed by the store alone
        read = store.read_online(usecase.name, keys, [], {"store_checks": [(s,) for s in stores]}, 3)
    finally:
        store.close()
    partials = read.states["store_checks"]
    assert max(len(p) for p in partials) > 1  # a store's checks arrived on several partitions
    for at in instants:
        for i, store_id in enumerate(stores):
            served = evaluate(group.spec, partials[i], at.timestamp())
            assert same(served, by_hand(checks, store_id, at.timestamp())), (store_id, at, served)

    # Training at the same instants, from the offline copy of the checks: the same values.
    with duckdb.connect(str(stream.settings.offline_store_path)) as writer:
        writer.execute(
            "CREATE OR REPLACE TABLE shelf_checks (check_id VARCHAR, checked_at TIMESTAMP, store_id BIGINT, "
            "empty_shelves BIGINT)"
        )
        writer.executemany(
            "INSERT INTO shelf_checks VALUES (?, ?, ?, ?)",
            [(c["check_id"], c["checked_at"].replace(tzinfo=None), c["store_id"], c["empty_shelves"]) for c in checks],
        )
    with open_offline(stream.settings.offline_store_path) as con:
        spine = pa.table(
            {
                "store_id": [s for _ in instants for s in stores],
                "product_id": [0] * (len(stores) * len(instants)),
                "prediction_time": pa.array([at for at in instants for _ in stores], pa.timestamp("us", tz="UTC")),
            }
        )
        values = realtime_features_at(con, usecase, spine, end + timedelta(days=1))
    names = usecase.realtime_feature_names
    columns = [names.index(n) for n in group.spec.names]
    for row, (at, store_id) in enumerate((at, s) for at in instants for s in stores):
        assert same(list(np.asarray(values[row, columns])), by_hand(checks, store_id, at.timestamp())), (store_id, at)
