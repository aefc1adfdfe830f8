"""Point-in-time reads of the offline store, on hand-written tables and on the simulated example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from migrate.batch.offline_store import (
    batch_features_at,
    check_columns,
    open_offline,
    snapshot_features,
    snapshot_reader,
    training_frame,
    utc_naive,
    write_snapshot,
)
from migrate.errors import ConfigError, OfflineStoreError, UseCaseError
from migrate.examples.item_availability.generator import GenerationSummary
from migrate.usecase import UseCase

T0 = datetime(2026, 11, 1)
AS_OF = datetime(2026, 11, 3, tzinfo=UTC)


def _variant(usecase: UseCase, **changes: Any) -> UseCase:
    """The example use case with some fields replaced (it is frozen)."""
    raw = usecase.model_dump()
    for dotted, value in changes.items():
        *path, leaf = dotted.split("__")
        target = raw
        for part in path:
            target = target[part]
        target[leaf] = value
    return UseCase.model_validate(raw)


def _with_store_daily(usecase: UseCase) -> UseCase:
    """`usecase` with a store-grain feature, `store_rate`, joined from the `store_daily` table."""
    return _variant(
        usecase,
        batch_features__joins=[
            {
                "table": "store_daily",
                "keys": ["store_id"],
                "timestamp_column": "as_of",
                "features": [{"name": "store_rate"}],
            }
        ],
    )


@pytest.fixture
def tiny(usecase: UseCase) -> duckdb.DuckDBPyConnection:
    """Four entities: (1,1) old with two feature rows, (1,2) created after AS_OF, (1,3) without features,
    (2,1) old whose only feature row is after AS_OF."""
    con = duckdb.connect()
    con.execute("CREATE TABLE store_products (store_id BIGINT, product_id BIGINT, listed_at TIMESTAMP)")
    con.execute(
        "INSERT INTO store_products VALUES (1, 1, $t0), (1, 2, $late), (1, 3, $t0), (2, 1, $t0)",
        {"t0": T0, "late": datetime(2026, 11, 3, 1)},
    )
    names = usecase.feature_names
    con.execute(
        f"CREATE TABLE item_features_daily (store_id BIGINT, product_id BIGINT, as_of TIMESTAMP, "
        f"{', '.join(f'{n} DOUBLE' for n in names)})"
    )
    rows = [
        (1, 1, datetime(2026, 11, 2), 0.1),
        (1, 1, datetime(2026, 11, 3), 0.2),
        (1, 1, datetime(2026, 11, 4), 0.9),
        (1, 2, datetime(2026, 11, 3), 0.5),
        (2, 1, datetime(2026, 11, 4), 0.7),
    ]
    for store, product, as_of, value in rows:
        con.execute(
            f"INSERT INTO item_features_daily VALUES ({store}, {product}, $a, "
            f"{', '.join(str(value + i) for i in range(len(names)))})",
            {"a": as_of},
        )
    con.execute(
        "CREATE TABLE scan_events (event_id VARCHAR, event_time TIMESTAMP, store_id BIGINT, "
        "product_id BIGINT, found BOOLEAN)"
    )
    con.execute("""INSERT INTO scan_events VALUES
        ('a', '2026-11-01 12:00', 1, 1, true),   -- before any feature row: left out
        ('b', '2026-11-02 00:00', 1, 1, false),  -- exactly at a feature row: not yet published then, left out
        ('c', '2026-11-02 23:59', 1, 1, true),
        ('d', '2026-11-03 08:00', 1, 1, true),
        ('e', '2026-11-03 09:00', 1, 3, true),   -- entity without features: left out
        ('f', '2026-11-04 08:00', 1, 1, false)   -- after the window end""")
    return con


def test_snapshot_takes_the_latest_row_at_or_before_as_of(tiny: duckdb.DuckDBPyConnection, usecase: UseCase) -> None:
    snapshot = snapshot_features(tiny, usecase, AS_OF)
    assert snapshot.column_names == ["store_id", "product_id", *usecase.feature_names, "features_as_of"]
    assert snapshot.schema.field("features_as_of").type == pa.timestamp("us", tz="UTC")
    assert all(snapshot.schema.field(n).type == pa.float64() for n in usecase.feature_names)
    # (1,2) was created after AS_OF, (1,3) has no features, (2,1) has only a future row.
    assert snapshot.to_pylist() == [
        {
            "store_id": 1,
            "product_id": 1,
            "features_as_of": datetime(2026, 11, 3, tzinfo=UTC),
            **{n: pytest.approx(0.2 + i) for i, n in enumerate(usecase.feature_names)},
        }
    ]


def test_snapshot_accepts_timestamptz_columns(tiny: duckdb.DuckDBPyConnection, usecase: UseCase) -> None:
    tiny.execute("ALTER TABLE item_features_daily ALTER as_of TYPE TIMESTAMPTZ USING as_of AT TIME ZONE 'UTC'")
    tiny.execute("ALTER TABLE store_products ALTER listed_at TYPE TIMESTAMPTZ USING listed_at AT TIME ZONE 'UTC'")
    snapshot = snapshot_features(tiny, usecase, AS_OF)
    assert snapshot["features_as_of"].to_pylist() == [datetime(2026, 11, 3, tzinfo=UTC)]


def test_training_frame_joins_each_event_to_its_past_features(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase
) -> None:
    frame = training_frame(tiny, usecase, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    rows = frame.to_pylist()
    assert [(r["event_time"].hour, r["features_as_of"].day, r["found"]) for r in rows] == [(23, 2, 1), (8, 3, 1)]
    assert [r["found_rate_1d"] for r in rows] == pytest.approx([0.1, 0.2])
    assert frame.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert [r["prediction_time"] for r in rows] == [r["event_time"] for r in rows]  # predict_before: 0s


def test_training_rows_are_predictions_made_predict_before_ahead(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase
) -> None:
    early = _variant(usecase, training={"predict_before": "9h"})
    rows = training_frame(tiny, early, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)).to_pylist()
    # c (11-02 23:59) is predicted at 14:59 from the 11-02 row; d (11-03 08:00) at 11-02 23:00, before the 11-03 row.
    assert [(r["event_time"].day, r["prediction_time"].hour, r["features_as_of"].day) for r in rows] == [
        (2, 14, 2),
        (3, 23, 2),
    ]


@pytest.mark.parametrize("reader", ["snapshot", "training"])
def test_missing_feature_column_names_table_column_and_file(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase, reader: str
) -> None:
    features = [*usecase.batch_features.model_dump()["features"], {"name": "shelf_gap_3d", "type": "float"}]
    broken = _variant(usecase, batch_features__features=features)

    def read() -> object:
        if reader == "snapshot":
            return snapshot_features(tiny, broken, AS_OF)
        return training_frame(tiny, broken, T0, AS_OF)

    with pytest.raises(OfflineStoreError) as caught:
        read()
    message = str(caught.value)
    assert "'item_features_daily'" in message
    assert "'shelf_gap_3d'" in message
    assert "usecases/item_availability.yaml" in message
    assert caught.value.fix is not None


def test_missing_table_and_missing_file_say_how_to_create_them(tiny: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(OfflineStoreError, match=r"no table 'shelf_counts'.*usecases/x\.yaml"):
        check_columns(tiny, "shelf_counts", ["store_id"], usecase_file="usecases/x.yaml")
    with pytest.raises(OfflineStoreError, match="does not exist") as caught:
        open_offline(tmp_path / "absent.duckdb")
    assert "migrate demo" in str(caught.value.fix)


def test_training_frame_needs_an_event_table(tiny: duckdb.DuckDBPyConnection, usecase: UseCase) -> None:
    with pytest.raises(UseCaseError, match="realtime_features"):
        training_frame(tiny, _variant(usecase, realtime_features=None), T0, AS_OF)


def test_snapshot_of_the_example_leaves_out_products_listed_after_as_of(
    small_store: GenerationSummary, usecase: UseCase
) -> None:
    as_of = small_store.last_batch_cutoff.replace(hour=0)  # the day end the last nightly run scores
    con = open_offline(small_store.path)
    try:
        snapshot = snapshot_features(con, usecase, as_of)
        listed = con.sql("SELECT store_id, product_id, listed_at FROM store_products").fetchall()
    finally:
        con.close()
    keys = list(zip(snapshot["store_id"].to_pylist(), snapshot["product_id"].to_pylist(), strict=True))
    created = {(s, p) for s, p, t in listed if t <= utc_naive(as_of)}
    assert keys == sorted(keys)
    assert set(keys) == created  # every entity listed by then had a feature row at the previous day end
    assert len(listed) - len(keys) >= small_store.new_products >= 1
    assert set(snapshot["features_as_of"].to_pylist()) <= {as_of, as_of - timedelta(days=1)}


def test_batch_features_of_a_coarser_grain_join_on_their_keys_as_of_the_same_instant(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase
) -> None:
    """A per-store table joins every product of the store, latest row at or before the snapshot (strictly before
    a prediction in training); a store without a row leaves the feature missing, not the entity out."""
    tiny.execute("CREATE TABLE store_daily (store_id BIGINT, as_of TIMESTAMP, store_rate DOUBLE)")
    tiny.execute(
        "INSERT INTO store_daily VALUES (1, '2026-11-01', 0.11), (1, '2026-11-02 12:00', 0.12), "
        "(1, '2026-11-03 00:00', 0.13), (1, '2026-11-03 06:00', 0.99)"
    )
    joined = _with_store_daily(usecase)
    assert joined.feature_names == [*usecase.feature_names, "store_rate"]
    snapshot = snapshot_features(tiny, joined, AS_OF).to_pylist()
    assert [(r["store_id"], r["product_id"], r["store_rate"]) for r in snapshot] == [(1, 1, 0.13)]
    rows = training_frame(
        tiny, joined, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)
    ).to_pylist()
    # c at 11-02 23:59 sees the 11-02 12:00 store row; d at 11-03 08:00 the 06:00 one (strictly before each).
    assert [(r["event_time"].day, r["store_rate"]) for r in rows] == [(2, 0.12), (3, 0.99)]
    tiny.execute("DELETE FROM store_daily")
    assert [r["store_rate"] for r in snapshot_features(tiny, joined, AS_OF).to_pylist()] == [None]


def test_batch_features_of_a_few_requests_read_only_their_keys_with_the_same_answers(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase
) -> None:
    """``few=True`` (the comparator's samples) reads only the requested entities' feature rows into the ASOF join:
    every answer, the coarser-grain join's included, is the one the full join gives."""
    tiny.execute("CREATE TABLE store_daily (store_id BIGINT, as_of TIMESTAMP, store_rate DOUBLE)")
    tiny.execute(
        "INSERT INTO store_daily VALUES (1, '2026-11-01', 0.11), (1, '2026-11-02 12:00', 0.12), "
        "(2, '2026-11-03 00:00', 0.23)"
    )
    joined = _with_store_daily(usecase)
    requests = pa.table(
        {
            "store_id": [1, 2, 1, 1, 3],
            "product_id": [1, 1, 3, 1, 1],
            "prediction_time": pa.array(
                [datetime(2026, 11, d, h, tzinfo=UTC) for d, h in ((2, 6), (4, 1), (3, 9), (4, 0), (4, 0))],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    full = batch_features_at(tiny, joined, requests)
    few = batch_features_at(tiny, joined, requests, few=True)
    assert few.equals(full)
    found = full.to_pylist()
    assert [r["found_rate_1d"] for r in found] == [0.1, 0.7, None, 0.2, None]
    assert [r["store_rate"] for r in found] == [0.11, 0.23, 0.12, 0.12, None]


@pytest.mark.parametrize("memory", ["64MB", "2GB"])
def test_the_snapshot_file_is_the_query_at_any_memory_limit(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase, tmp_path: Path, memory: str
) -> None:
    target = tmp_path / "snapshot.parquet"
    write_snapshot(tiny, usecase, AS_OF, target, row_group_size=2, memory_limit=memory)
    assert pq.read_table(target).to_pylist() == snapshot_features(tiny, usecase, AS_OF).to_pylist()
    assert (
        tiny.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        == duckdb.connect()
        .execute(f"SET memory_limit = '{memory}'; SELECT current_setting('memory_limit')")
        .fetchone()[0]
    )


@pytest.mark.parametrize("memory", ["64MB", "2GB"])
def test_the_streamed_snapshot_holds_the_query_s_rows_in_batches(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase, tmp_path: Path, memory: str
) -> None:
    # Materialization's read: no sort, batches of at most batch_rows; the same rows as the sorted query.
    reader = snapshot_reader(tiny, usecase, AS_OF, tmp_path, batch_rows=2, memory_limit=memory)
    batches = list(reader)
    expected = snapshot_features(tiny, usecase, AS_OF)
    assert len(batches) >= expected.num_rows // 2 and all(0 < b.num_rows <= 2 for b in batches)
    keys = usecase.entity.key_names
    streamed = pa.Table.from_batches(batches).sort_by([(k, "ascending") for k in keys])
    assert streamed.to_pylist() == expected.to_pylist()
    with pytest.raises(ConfigError, match="not a DuckDB size"):
        snapshot_reader(tiny, usecase, AS_OF, tmp_path, batch_rows=2, memory_limit="lots")


def test_a_memory_limit_that_is_not_a_size_is_refused_before_it_reaches_sql(
    tiny: duckdb.DuckDBPyConnection, usecase: UseCase, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not a DuckDB size") as refused:
        write_snapshot(tiny, usecase, AS_OF, tmp_path / "s.parquet", row_group_size=2, memory_limit="1GB'; DROP")
    assert refused.value.fix is not None and "MIGRATE_SNAPSHOT_MEMORY" in refused.value.fix
