"""``LookupStore.export``: a whole version as Arrow, the same on every backend (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from lookup_support import AS_OF, Table

from lookup_tables import VersionInfo
from migrate.errors import LookupStoreError

pytestmark = pytest.mark.integration

# Keys that a careless CSV or text round trip would mangle: an empty string, a comma, quotes, a newline, unicode.
STORES = ["", "s,1", 'say "hi"', "two\nlines", "Zürich", "NULL"]


def batch(predictions: list[float | None]) -> pa.Table:
    n = len(predictions)
    return pa.table(
        {
            "item_id": pa.array([10**12 + i for i in range(n)], pa.int64()),
            "store": pa.array([STORES[i % len(STORES)] for i in range(n)]),
            "prediction": pa.array(predictions, pa.float64()),
            "features_as_of": pa.array([AS_OF] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def rows(table: pa.Table) -> list[tuple[int, str, float | None]]:
    return sorted(zip(*(table.column(c).to_pylist() for c in ("item_id", "store", "prediction")), strict=True))


def test_export_returns_every_row_of_the_version_asked_with_typed_columns(table: Table) -> None:
    predictions: list[float | None] = [0.1 * i + 1 / 3 for i in range(11)] + [None, 1e-300, 0.0]
    info = table.store.begin_version(
        table.spec,
        run_id="export-1",
        model_version="m1",
        data_interval_start=AS_OF.replace(day=1, hour=0),
        data_interval_end=AS_OF.replace(day=1, hour=1),
    )
    table.store.write_chunk(table.spec, info.version, 0, batch(predictions[:7]))
    table.store.write_chunk(table.spec, info.version, 1, batch(predictions)[7:])
    exported = table.store.export(table.spec, info.version)  # a loading version can be read too
    assert exported.schema == pa.schema([("item_id", pa.int64()), ("store", pa.string()), ("prediction", pa.float64())])
    assert rows(exported) == rows(batch(predictions))  # exact floats, NULL kept apart from the key text 'NULL'
    table.publish(info)
    second = table.release(2.5, day=2, n=300)
    assert table.store.export(table.spec, info.version).num_rows == len(predictions)
    other = table.store.export(table.spec, second.version)
    assert other.num_rows == 300 and set(other.column("prediction").to_pylist()) == {2.5}
    assert sorted(other.column("item_id").to_pylist()) == list(range(300))


def _begin(table: Table, run_id: str) -> VersionInfo:
    """A new loading version of the table, for an hour of AS_OF's day."""
    return table.store.begin_version(
        table.spec,
        run_id=run_id,
        model_version="m1",
        data_interval_start=AS_OF.replace(hour=0),
        data_interval_end=AS_OF.replace(hour=1),
    )


def test_export_of_an_empty_version_has_the_columns_and_no_rows(table: Table) -> None:
    info = _begin(table, "export-empty")
    exported = table.store.export(table.spec, info.version)
    assert exported.num_rows == 0 and exported.column_names == ["item_id", "store", "prediction"]
    assert exported.schema.field("item_id").type == pa.int64()


def test_export_refuses_an_unknown_or_retired_version_saying_which(table: Table) -> None:
    with pytest.raises(LookupStoreError, match="has no version 9"):
        table.store.export(table.spec, 9)
    first = table.load(1.0, n=10)
    table.store.abandon(table.spec, first.version)
    with pytest.raises(LookupStoreError, match=f"version {first.version} .* is retired"):
        table.store.export(table.spec, first.version)


def test_export_reads_values_that_follow_thousands_of_null_predictions(table: Table) -> None:
    """SQLite's Arrow reader infers a column's type from a batch of rows: a version whose first rows have no
    prediction (the model gave NaN, stored as NULL) once made the next batch's numbers a type mismatch."""
    predictions: list[float | None] = [None] * 2500 + [0.25 + i / 1000 for i in range(500)]
    info = _begin(table, "export-nulls-first")
    table.store.write_chunk(table.spec, info.version, 0, batch(predictions))
    exported = table.store.export(table.spec, info.version)
    assert exported.schema.field("prediction").type == pa.float64()
    assert rows(exported) == rows(batch(predictions))
    assert exported.column("prediction").null_count == 2500
