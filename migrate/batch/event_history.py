"""The event history in the offline store: the same events as the Kafka topic, for replays and for training.

``realtime_features.event_table`` holds every event with the fields ``realtime_features.events`` declares.
Training computes the real-time features over it with the stream processor's own window code
(migrate/feature_windows.py), each event seeing only the events before it: point-in-time correct, no leakage.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from migrate.batch.offline_store import _quote, _use_utc, check_columns, training_frame, utc_naive
from migrate.errors import UseCaseError
from migrate.feature_windows import WindowSpec, training_features
from migrate.usecase import EventStream, RealtimeFeatures, UseCase

__all__ = ["event_stream", "iter_events", "online_training_frame", "realtime_feature_table"]


def event_stream(usecase: UseCase) -> tuple[RealtimeFeatures, EventStream]:
    """The use case's real-time declarations, or a clear error when it has no event stream."""
    declared = usecase.realtime_features
    if declared is None or declared.events is None:
        raise UseCaseError(
            f"usecases/{usecase.name}.yaml",
            "realtime_features.events",
            "is not declared, so there is no event stream",
            fix="declare the event topic's fields (see usecases/item_availability.yaml)",
        )
    return declared, declared.events


def _select(con: duckdb.DuckDBPyConnection, usecase: UseCase) -> tuple[str, list[str]]:
    declared, stream = event_stream(usecase)
    fields = list(stream.fields)
    check_columns(con, declared.event_table, fields, usecase_file=f"usecases/{usecase.name}.yaml")
    columns = ", ".join(
        f"CAST({_quote(n)} AS TIMESTAMP) AS {_quote(n)}" if t == "datetime" else _quote(n)
        for n, t in stream.fields.items()
    )
    return f"SELECT {columns} FROM {_quote(declared.event_table)}", fields


def iter_events(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, end: datetime, *, chunk_rows: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Events with ``start <= event time < end`` in event-time order (then id), datetimes aware UTC."""
    _use_utc(con)
    declared, stream = event_stream(usecase)
    select, _ = _select(con, usecase)
    time_col, id_col = _quote(declared.event_time_column), _quote(stream.id_field)
    reader = con.sql(
        f"{select} WHERE {time_col} >= $start AND {time_col} < $end ORDER BY {time_col}, {id_col}",
        params={"start": utc_naive(start), "end": utc_naive(end)},
    ).to_arrow_reader(chunk_rows)
    dates = [n for n, t in stream.fields.items() if t == "datetime"]
    for batch in reader:
        for event in batch.to_pylist():
            for name in dates:
                event[name] = event[name].replace(tzinfo=UTC)
            yield event


def realtime_feature_table(con: duckdb.DuckDBPyConnection, usecase: UseCase, end: datetime) -> pa.Table:
    """Per event before `end`: its id and the real-time features the store held just before it.

    Columns: the event id field, then one float64 column per real-time feature (minutes_since in minutes at the
    event's time). Computed over the whole history before `end`, so windows and "minutes since" start right.
    """
    _use_utc(con)
    declared, stream = event_stream(usecase)
    select, fields = _select(con, usecase)
    keys = usecase.entity.key_names
    time_col, id_col = _quote(declared.event_time_column), _quote(stream.id_field)
    order = ", ".join([*(_quote(k) for k in keys), time_col, id_col])
    table = con.sql(
        f"{select} WHERE {time_col} < $end ORDER BY {order}", params={"end": utc_naive(end)}
    ).to_arrow_table()
    spec = WindowSpec(declared)
    times = table.column(declared.event_time_column).cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    times_s = np.asarray(times, dtype=np.float64) / 1e6
    events = table.select([n for n in fields if n != declared.event_time_column]).to_pylist()
    key_tuples = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True)) if len(table) else []
    values = training_features(spec, key_tuples, times_s, events)
    columns: dict[str, Any] = {stream.id_field: table.column(stream.id_field)}
    for index, name in enumerate(spec.names):
        columns[name] = pa.array(values[:, index], pa.float64())
    return pa.table(columns)


def online_training_frame(con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, end: datetime) -> pa.Table:
    """`training_frame` (batch features as of each labelled event) plus the real-time features before it."""
    _, stream = event_stream(usecase)
    frame = training_frame(con, usecase, start, end, id_column=stream.id_field)
    realtime = realtime_feature_table(con, usecase, end)
    names = ", ".join(f"rt.{_quote(n)}" for n in usecase.realtime_feature_names)
    con.register("_frame", frame)
    con.register("_realtime", realtime)
    try:
        joined = con.sql(
            f"SELECT fr.*, {names} FROM _frame fr JOIN _realtime rt USING ({_quote(stream.id_field)}) "
            f"ORDER BY fr.event_time, {', '.join(f'fr.{_quote(k)}' for k in usecase.entity.key_names)}, "
            f"fr.{_quote(stream.id_field)}"
        ).to_arrow_table()
    finally:
        con.unregister("_frame")
        con.unregister("_realtime")
    return joined
