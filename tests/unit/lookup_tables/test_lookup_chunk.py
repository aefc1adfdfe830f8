"""Chunks are checked and cast before they reach a database; timestamps are formatted for bulk loads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from lookup_tables import KeyColumn, TableSpec
from lookup_tables.chunk import TIMESTAMP, normalize, timestamp_text
from migrate.errors import InvalidChunkError

pytestmark = pytest.mark.unit

SPEC = TableSpec("items", "lt_items", (KeyColumn("item_id", "int"), KeyColumn("store", "str")), keep_versions=1)


def batch(**overrides: pa.Array) -> pa.Table:
    columns = {
        "item_id": pa.array([1, 2], pa.int32()),
        "store": pa.array(["a", ""], pa.large_string()),
        "prediction": pa.array([0.5, None], pa.float32()),
        "features_as_of": pa.array(
            [datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))] * 2, pa.timestamp("ns", tz="Europe/Paris")
        ),
        "extra": pa.array([1, 2]),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_columns_are_cast_to_the_stored_types_and_extras_dropped() -> None:
    table = normalize(SPEC, 1, 0, batch())
    assert table.schema == pa.schema(
        [("item_id", pa.int64()), ("store", pa.string()), ("prediction", pa.float64()), ("features_as_of", TIMESTAMP)]
    )
    assert table.column("features_as_of")[0].as_py() == datetime(2024, 1, 1, tzinfo=UTC)
    assert table.column("prediction").null_count == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prediction": pa.array([float("nan"), 1.0])}, "1 predictions are NaN"),
        ({"store": pa.array(["a", None])}, "'store' has 1 null"),
        ({"item_id": pa.array([1.5, 2.0])}, "cannot be stored as int64"),
        ({"features_as_of": pa.array([datetime(2024, 1, 1)] * 2)}, "not a timestamp with a time zone"),
    ],
)
def test_bad_chunks_name_the_chunk_and_the_problem(overrides: dict[str, pa.Array], message: str) -> None:
    with pytest.raises(InvalidChunkError, match=message) as caught:
        normalize(SPEC, 3, 7, batch(**overrides))
    assert "chunk 7 of lt_items v3 (use case items)" in str(caught.value)


def test_timestamps_are_formatted_once_per_distinct_value_in_utc() -> None:
    values = [datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)] * 3
    column = pa.chunked_array([pa.array(values[:4], TIMESTAMP), pa.array(values[4:], TIMESTAMP)])
    assert timestamp_text(column).to_pylist() == ["2024-01-02 03:04:05.000006", "1999-12-31 23:59:59.000000"] * 3
    assert timestamp_text(column, separator="T", zone="+00")[1].as_py() == "1999-12-31T23:59:59.000000+00"


def test_many_distinct_timestamps_keep_their_order() -> None:
    micros = np.random.default_rng(1).integers(0, 10**15, 1_000)
    column = pa.chunked_array([pa.array(micros, pa.int64()).cast(TIMESTAMP)])
    expected = [value.strftime("%Y-%m-%d %H:%M:%S.%f") for value in column.to_pylist()]
    assert timestamp_text(column).to_pylist() == expected
