"""A table keyed by integers only (PostgreSQL loads it by binary COPY): hostile values come back exactly."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from lookup_support import T0

from lookup_tables import KeyColumn, LookupStore, TableSpec

pytestmark = pytest.mark.integration

SPEC = TableSpec(
    usecase="int_keys",
    name="lt_int_keys",
    keys=(KeyColumn("store_id", "int"), KeyColumn("product_id", "int")),
    keep_versions=2,
)
INT64 = (-(2**63), 2**63 - 1)
FLOATS = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 1 / 3, 0.1, 1e-300]
TIMES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 14, 2, 0, 0, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def batch(start: int, n: int, predictions: list[float | None]) -> pa.Table:
    """Rows ``start`` to ``start + n``: store ids cycle through int64's extremes, product ids are unique."""
    rows = range(start, start + n)
    stores = [(*INT64, 0, -1, 2**53 + 1)[i % 5] for i in rows]
    products = [INT64[i] if i < 2 else i for i in rows]
    return pa.table(
        {
            "store_id": pa.array(stores, pa.int64()),
            "product_id": pa.array(products, pa.int64()),
            "prediction": pa.array(predictions, pa.float64()),
            "features_as_of": pa.array([TIMES[i % len(TIMES)] for i in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack(">d", value)


def test_integer_keys_and_hostile_values_round_trip_exactly(store: LookupStore, store_url: str) -> None:
    exact = [*FLOATS, *(FLOATS[::-1])]  # chunk 0: every value exact (binary COPY on PostgreSQL)
    with_null: list[float | None] = [0.25, None, -0.0, 5e-324]  # chunk 1: a NULL prediction (CSV on PostgreSQL)
    chunks = [batch(0, len(exact), list(exact)), batch(len(exact), len(with_null), with_null)]
    info = store.begin_version(SPEC, run_id="hostile", model_version="m1", data_interval_start=T0, data_interval_end=T0)
    for chunk_id, chunk in enumerate(chunks):
        assert store.write_chunk(SPEC, info.version, chunk_id, chunk) == chunk.num_rows
    stats = store.stats(SPEC, info.version)
    assert (stats.row_count, stats.null_predictions) == (len(exact) + len(with_null), 1)
    assert store.publish(SPEC, info.version, checksum="c", scored_at=T0).activated

    written = pa.concat_tables(chunks)
    expected = {
        (s, p): (pred, at)
        for s, p, pred, at in zip(*(written.column(c).to_pylist() for c in written.column_names), strict=True)
    }
    rows = store.get_many(SPEC, list(expected))
    assert set(rows) == set(expected)
    for key, (prediction, features_as_of) in expected.items():
        row = rows[key]
        assert row.features_as_of == features_as_of, key
        if store_url.startswith("sqlite"):  # SQLite keeps a REAL's value; its sign of zero is not promised
            assert row.prediction == prediction or (row.prediction is None and prediction is None), key
        else:
            assert bits(row.prediction) == bits(prediction), key
    exported = store.export(SPEC, info.version)
    assert sorted(
        zip(exported.column("store_id").to_pylist(), exported.column("product_id").to_pylist(), strict=True)
    ) == sorted(expected)
    exported_bits = sorted(map(bits, exported.column("prediction").to_pylist()), key=repr)
    if not store_url.startswith("sqlite"):
        assert exported_bits == sorted(map(bits, written.column("prediction").to_pylist()), key=repr)
