"""A chunk of predictions on its way into a version table: checked and cast to the stored column types."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lookup_tables.spec import TableSpec
from migrate.errors import InvalidChunkError

TIMESTAMP = pa.timestamp("us", tz="UTC")
_KEY_TYPES = {"int": pa.int64(), "str": pa.string()}


def normalize(spec: TableSpec, version: int, chunk_id: int, batch: pa.Table) -> pa.Table:
    """``batch`` reduced to the key columns, ``prediction`` (float64) and ``features_as_of`` (UTC, µs).

    Raises ``InvalidChunkError`` for a missing column, a null key or timestamp, or a NaN prediction:
    SQLite would silently store NaN as NULL, so it is refused on every backend alike.
    """
    where = f"chunk {chunk_id} of {spec.name} v{version} (use case {spec.usecase})"
    missing = [name for name in (*spec.key_names, "prediction", "features_as_of") if name not in batch.column_names]
    if missing:
        raise InvalidChunkError(
            f"{where} lacks columns {missing}; it has {batch.column_names}",
            fix="select the entity keys, 'prediction' and 'features_as_of' in the scoring output",
        )
    columns: dict[str, pa.ChunkedArray] = {}
    for key in spec.keys:
        columns[key.name] = _cast(batch.column(key.name), _KEY_TYPES[key.type], where, key.name)
    columns["prediction"] = _cast(batch.column("prediction"), pa.float64(), where, "prediction")
    ts = batch.column("features_as_of")
    if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
        raise InvalidChunkError(
            f"{where}: features_as_of has type {ts.type}, not a timestamp with a time zone",
            fix="cast it to timestamp[us, tz=UTC] (pyarrow: pa.timestamp('us', tz='UTC'))",
        )
    columns["features_as_of"] = _cast(ts, TIMESTAMP, where, "features_as_of")
    table = pa.table(columns)
    for name in (*spec.key_names, "features_as_of"):
        nulls = table.column(name).null_count
        if nulls:
            raise InvalidChunkError(f"{where}: column {name!r} has {nulls} null values", fix="drop or fix those rows")
    nans = pc.sum(pc.is_nan(table.column("prediction"))).as_py() or 0
    if nans:
        raise InvalidChunkError(
            f"{where}: {nans} predictions are NaN",
            fix="find why the model returns NaN (missing features?) and fix it, or leave those rows out",
        )
    return table.combine_chunks()


def _cast(column: pa.ChunkedArray, target: pa.DataType, where: str, name: str) -> pa.ChunkedArray:
    if column.type == target:
        return column
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidChunkError(
            f"{where}: column {name!r} of type {column.type} cannot be stored as {target}: {exc}",
            fix=f"cast {name!r} to {target} before writing",
        ) from exc


def timestamp_text(column: pa.ChunkedArray, *, separator: str = " ", zone: str = "") -> pa.Array:
    """UTC timestamps as ``YYYY-MM-DD<separator>HH:MM:SS.ffffff<zone>`` strings, for bulk loads.

    Each distinct value is formatted once: a chunk's rows mostly share a few snapshot times, and formatting
    is the slowest step of a load.
    """
    encoded = pc.dictionary_encode(column.combine_chunks())
    naive = encoded.dictionary.cast(pa.timestamp("us")).to_numpy()
    text = pa.array(np.datetime_as_string(naive, unit="us"), pa.string())
    if separator != "T":
        text = pc.replace_substring(text, "T", separator, max_replacements=1)
    if zone:
        text = pc.binary_join_element_wise(text, zone, "")
    return pc.take(text, encoded.indices)
