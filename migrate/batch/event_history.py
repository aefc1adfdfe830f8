"""The event history in the offline store: the same events as the Kafka topic, for replays and for training.

``realtime_features.event_table`` holds every event with the fields ``realtime_features.events`` declares.
Training computes the real-time features over it with serving's own window code (migrate/feature_windows.py)
at each prediction time, from the events strictly before it: point-in-time correct, no leakage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from migrate.batch.offline_store import _use_utc, _where_sql, check_columns, training_frame, utc_naive
from migrate.batch.offline_zone import localize
from migrate.batch.sql_names import quote as _quote
from migrate.errors import UseCaseError
from migrate.feature_windows import Group, Replay, groups_of, required_event_fields, warm_up
from migrate.realtime_schema import MAIN_STREAM, parse_duration
from migrate.request_rules import context_errors
from migrate.usecase import ContextFeature, EventStream, RealtimeFeatures, UseCase

log = logging.getLogger(__name__)

__all__ = [
    "RealtimeHistory",
    "event_stream",
    "history_around",
    "iter_events",
    "online_training_frame",
    "realtime_features_at",
    "refused_by_stream",
    "refused_events",
    "refused_request_metrics",
    "servable_rows",
    "states_before",
    "warm_up_events",
]


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


def _cast_select(con: duckdb.DuckDBPyConnection, usecase: UseCase, stream: str) -> tuple[str, str, EventStream]:
    """``SELECT`` of every row of one stream's event table (datetimes as TIMESTAMP), its time column, declaration."""
    declared = usecase.realtime_features
    table_name, time_column, events = (None, "", None) if declared is None else declared.source(stream)
    if table_name is None or events is None:
        event_stream(usecase)  # raises the clear error: no event stream declared
        raise AssertionError("unreachable")
    check_columns(con, table_name, list(events.fields), usecase_file=f"usecases/{usecase.name}.yaml")
    columns = ", ".join(
        f"CAST({_quote(n)} AS TIMESTAMP) AS {_quote(n)}" if t == "datetime" else _quote(n)
        for n, t in events.fields.items()
    )
    return f"SELECT {columns} FROM {_quote(table_name)}", time_column, events


# What the stream processor's parse accepts of a value of each declared type (online/stream/event_schema.py), as a
# predicate on the event table's column: a non-empty string, a finite number, a 64-bit integer, a finite time.
_ACCEPTS = {
    "str": "CAST({c} AS VARCHAR) <> ''",
    "float": "isfinite(TRY_CAST({c} AS DOUBLE))",
    "int": "TRY_CAST({c} AS BIGINT) IS NOT NULL",
    "datetime": "isfinite({c})",
}


def _accepted_sql(usecase: UseCase, stream: str, events: EventStream) -> str:
    """A predicate true for the rows the stream would accept (`_cast_select`'s columns): every required field
    (`required_event_fields`) present, and every present value one the stream reads as its declared type. The
    stream dead-letters the others (a null key, time or id; NaN or infinity, which JSON cannot carry; an empty
    string); the event history leaves them out, and `refused_events` counts them."""
    required = required_event_fields(usecase, stream)
    checks = []
    for name, kind in events.fields.items():
        column = _quote(name)
        accepts = _ACCEPTS.get(kind, "TRUE").format(c=column)
        checks.append(f"{column} IS NOT NULL AND {accepts}" if name in required else f"({column} IS NULL OR {accepts})")
    return f"coalesce({' AND '.join(checks) or 'TRUE'}, FALSE)"


def _select(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, stream: str = MAIN_STREAM
) -> tuple[str, list[str], str, EventStream]:
    """``SELECT`` of one stream's events the stream processor would accept (datetimes as TIMESTAMP), its fields, its
    time column and declaration. Every read of the history goes through it: training, backtests and replays see
    the events serving's windows see."""
    select, time_column, events = _cast_select(con, usecase, stream)
    accepted = _accepted_sql(usecase, stream, events)
    return f"SELECT * FROM (SELECT * FROM ({select}) WHERE {accepted})", list(events.fields), time_column, events


def refused_events(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    end: datetime,
    *,
    start: datetime | None = None,
    stream: str = MAIN_STREAM,
) -> int:
    """How many rows of `stream`'s event table timed in ``[start, end)`` (from the first without `start`), or with
    no time at all (null, or ±infinity: in no range), the stream processor would refuse and every read of the
    history leaves out (`_select`)."""
    localize(con, usecase)
    _use_utc(con)
    select, time_column, events = _cast_select(con, usecase, stream)
    time_col = _quote(time_column)
    accepted = _accepted_sql(usecase, stream, events)
    since = "" if start is None else f" AND {time_col} >= $start"
    params: dict[str, Any] = {"end": utc_naive(end)} | ({} if start is None else {"start": utc_naive(start)})
    (count,) = con.execute(
        f"SELECT count(*) FROM ({select}) WHERE NOT {accepted} "
        f"AND ({time_col} IS NULL OR NOT isfinite({time_col}) OR ({time_col} < $end{since}))",
        params,
    ).fetchall()[0]
    return int(count)


def iter_events(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    start: datetime,
    end: datetime,
    *,
    chunk_rows: int = 10_000,
    stream: str = MAIN_STREAM,
) -> Iterator[dict[str, Any]]:
    """Events of `stream` with ``start <= event time < end`` in event-time order (then id), datetimes aware UTC."""
    localize(con, usecase)
    _use_utc(con)
    select, _, time_column, declared = _select(con, usecase, stream)
    time_col, id_col = _quote(time_column), _quote(declared.id_field)
    query = f"{select} WHERE {time_col} >= $start AND {time_col} < $end ORDER BY {time_col}, {id_col}"
    yield from _rows(con, query, {"start": utc_naive(start), "end": utc_naive(end)}, declared, chunk_rows)


def history_around(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, moment: datetime, *, stream: str = MAIN_STREAM
) -> tuple[datetime | None, bool]:
    """The newest event of `stream` before `moment` (aware UTC; None: none), and whether the history goes on at or
    after `moment`. When it does, every event before `moment` is in the store, so a reader that has read up to that
    newest one has read the stream up to `moment` itself (a label watermark may stand there: migrate/label_progress.py).
    """
    localize(con, usecase)
    _use_utc(con)
    select, _, time_column, _ = _select(con, usecase, stream)
    time_col = _quote(time_column)
    newest, later = con.execute(
        f"SELECT max({time_col}) FILTER (WHERE {time_col} < $at), count(*) FILTER (WHERE {time_col} >= $at) > 0 "
        f"FROM ({select})",
        {"at": utc_naive(moment)},
    ).fetchall()[0]
    return (None if newest is None else newest.replace(tzinfo=UTC)), bool(later)


BOUNDARIES = 64  # bucket boundaries `states_before` lists per row at most: a grace of many buckets checks the newest


def states_before(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, spine: pa.Table, span: timedelta
) -> tuple[npt.NDArray[np.int64], pa.Array]:
    """Every instant in ``[t - span, t)`` at which a spine row's real-time features could last have changed: ``t -
    span`` itself, just after each event of one of its feature groups' keys in ``(t - span, t)`` (1 µs after it, so
    the state includes it and every event timed with it), and each bucket boundary in ``(t - span, t]`` (a window
    drops its oldest bucket there, before any event timed on it arrives; the newest `BOUNDARIES` of them). Evaluated
    there (`realtime_features_at`), they are every value the row's windows held in that span, which a stream `span`
    behind may have served.

    `spine` holds ``prediction_time`` (UTC) and the columns keying the feature groups. Returns the spine row of each
    instant and the instants (aware UTC), in row order.
    """
    localize(con, usecase)
    _use_utc(con)
    rows = pa.table(
        {
            **{name: spine.column(name) for name in spine.column_names if name != "prediction_time"},
            "_t": spine.column("prediction_time").cast(pa.timestamp("us", "UTC")).cast(pa.timestamp("us")),
            "_row": pa.array(range(spine.num_rows), pa.int64()),
        }
    )
    parts = ["SELECT _row, _t - $span AS _at FROM _spine"]
    declared = usecase.realtime_features
    if declared is not None:
        step = int(parse_duration(declared.resolution).total_seconds() * 1_000_000)
        first = f"(epoch_us(_t - $span) // {step}) + 1"
        last = f"epoch_us(_t) // {step}"
        parts.append(
            f"SELECT _row, make_timestamp(k * {step}) AS _at FROM _spine, "
            f"generate_series(greatest({first}, {last} - {BOUNDARIES - 1}), {last}) AS g(k)"
        )
    for group in groups_of(usecase):
        if not group.spec.features:
            continue
        select, _, time_column, _ = _select(con, usecase, group.stream)
        at = f"e.{_quote(time_column)}"
        on = " AND ".join(f"e.{_quote(k)} = s.{_quote(k)}" for k in group.key)
        parts.append(
            f"SELECT s._row, {at} + INTERVAL 1 MICROSECOND AS _at FROM _spine s JOIN ({select}) e "
            f"ON {on} AND {at} > s._t - $span AND {at} < s._t"
        )
    con.register("_spine", rows)
    try:
        found = con.sql(
            f"SELECT DISTINCT _row, _at FROM ({' UNION ALL '.join(parts)}) ORDER BY _row, _at", params={"span": span}
        ).to_arrow_table()
    finally:
        con.unregister("_spine")
    instants = found.column("_at").cast(pa.timestamp("us", "UTC"))
    return found.column("_row").to_numpy(), instants.combine_chunks()


def warm_up_events(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, *, chunk_rows: int = 10_000
) -> Iterator[dict[str, Any]]:
    """The main stream's events a stream processor must consume before `start` for its windows at `start` to equal
    the point-in-time computation's (`realtime_features_at`, which reads the whole history): every event of
    [start - `warm_up`, start), and before them, for each ``minutes_since`` filter, the newest matching event of each
    key of its group (a last match may be older than any window). In event-time order (then id), as `iter_events`.
    """
    localize(con, usecase)
    _use_utc(con)
    select, _, time_column, declared = _select(con, usecase, MAIN_STREAM)
    time_col, id_col = _quote(time_column), _quote(declared.id_field)
    params: dict[str, Any] = {"cut": utc_naive(start - warm_up(usecase)), "start": utc_naive(start)}
    parts = [f"SELECT * FROM ({select}) WHERE {time_col} >= $cut AND {time_col} < $start"]
    for group in groups_of(usecase):
        if group.stream != MAIN_STREAM:
            continue
        by_key = ", ".join(_quote(k) for k in group.key)
        for index, matching in enumerate(group.spec.since):
            where = _where_sql(dict(matching.where), params, f"{group.name}_{index}_")
            parts.append(
                f"""SELECT * FROM ({select}) WHERE {time_col} < $cut AND {where}
                QUALIFY row_number() OVER (PARTITION BY {by_key} ORDER BY {time_col} DESC, {id_col} DESC) = 1"""
            )
    query = f"SELECT * FROM ({' UNION '.join(f'({part})' for part in parts)}) ORDER BY {time_col}, {id_col}"
    yield from _rows(con, query, params, declared, chunk_rows)


def _rows(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], declared: EventStream, chunk_rows: int
) -> Iterator[dict[str, Any]]:
    """The events `query` selects, one dict each, datetimes aware UTC."""
    reader = con.sql(query, params=params).to_arrow_reader(chunk_rows)
    dates = [n for n, t in declared.fields.items() if t == "datetime"]
    for batch in reader:
        for event in batch.to_pylist():
            for name in dates:
                event[name] = event[name].replace(tzinfo=UTC)
            yield event


def _stream_events(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, stream: str, end: datetime
) -> tuple[pa.Table, npt.NDArray[np.float64], list[dict[str, Any]]]:
    """One stream's events before `end` in event-time order (then id): the table, times (epoch s), field dicts."""
    select, fields, time_column, events = _select(con, usecase, stream)
    time_col, id_col = _quote(time_column), _quote(events.id_field)
    table = con.sql(
        f"{select} WHERE {time_col} < $end ORDER BY {time_col}, {id_col}",
        params={"end": utc_naive(end)},
    ).to_arrow_table()
    times = table.column(time_column).cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    rows = table.select([n for n in fields if n != time_column]).to_pylist()
    return table, np.asarray(times, dtype=np.float64) / 1e6, rows


def refused_by_stream(con: duckdb.DuckDBPyConnection, usecase: UseCase, end: datetime) -> dict[str, int]:
    """`refused_events` before `end` of each stream that feeds a real-time feature: what training's and a
    backtest's windows leave out, as serving's stream dead-letters it."""
    streams = dict.fromkeys(g.stream for g in groups_of(usecase) if g.spec.features)
    return {stream: refused_events(con, usecase, end, stream=stream) for stream in streams}


class RealtimeHistory:
    """Every real-time feature group's events before `end`, read once, evaluated at any spine's instants before
    `end`: a backtest loads its range's history once and asks day after day (each key's state carries over,
    see `migrate.feature_windows.Replay`), instead of reading and replaying the whole history per day."""

    def __init__(self, con: duckdb.DuckDBPyConnection, usecase: UseCase, end: datetime) -> None:
        _use_utc(con)
        localize(con, usecase)
        self.usecase = usecase
        self.end = end
        self._groups: list[tuple[Group, Replay]] = []
        self.refused = refused_by_stream(con, usecase, end)
        """Per stream read, its events before `end` (or with no time) the stream processor would refuse, left out."""
        loaded: dict[str, tuple[pa.Table, npt.NDArray[np.float64], list[dict[str, Any]]]] = {}
        for group in groups_of(usecase):
            if not group.spec.features:
                continue
            if group.stream not in loaded:
                loaded[group.stream] = _stream_events(con, usecase, group.stream, end)
            table, event_times_s, events = loaded[group.stream]
            keys = list(zip(*(table.column(c).to_pylist() for c in group.key), strict=True)) if len(table) else []
            self._groups.append((group, Replay(group.spec, keys, event_times_s, events)))

    def features(self, spine: pa.Table) -> npt.NDArray[np.float64]:
        """Per spine row, every real-time feature at its ``prediction_time`` (see `realtime_features_at`); only
        events before the history's `end` count.

        Raises:
            UseCaseError: a group is keyed by a column the spine does not carry.
        """
        for group, _ in self._groups:
            missing = [c for c in group.key if c not in spine.column_names]
            if missing:
                raise UseCaseError(
                    f"usecases/{self.usecase.name}.yaml",
                    f"realtime_features.groups.{group.name}.key",
                    f"names {missing}, which the training rows do not carry",
                    fix="key a group by entity keys or context features (the spine carries both)",
                )
        asked = spine.column("prediction_time").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        at_times_s = np.asarray(asked, dtype=np.float64) / 1e6
        if not self._groups:
            return np.empty((len(spine), 0), dtype=np.float64)
        blocks = []
        for group, replay in self._groups:
            at_keys = list(zip(*(spine.column(c).to_pylist() for c in group.key), strict=True)) if len(spine) else []
            blocks.append(replay.values(at_keys, at_times_s))
        return np.hstack(blocks)


def realtime_features_at(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, spine: pa.Table, end: datetime
) -> npt.NDArray[np.float64]:
    """Per spine row, every real-time feature at its ``prediction_time`` from the events strictly before it.

    `spine` holds ``prediction_time`` (UTC) and every column keying a feature group (entity keys, context
    values). Columns of the answer: `usecase.realtime_feature_names`. The windows are evaluated with the serving
    code (`migrate.feature_windows`), over each stream's whole history before `end` so they start full.
    """
    localize(con, usecase)
    return RealtimeHistory(con, usecase, end).features(spine)


def _frame_from_events(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, end: datetime, stream: EventStream
) -> pa.Table:
    """`training_frame` over the main stream's events, with the context values their fields carry."""
    context = usecase.context_names
    from_events = [c.name for c in usecase.context if c.name in stream.fields]
    ahead = {c.name for c in usecase.context if c.known_ahead}
    inputs_from_events = [c for c in context if c in stream.fields and c not in ahead]
    not_fields = [c.name for c in usecase.context if c.name not in stream.fields]
    if not_fields:
        raise UseCaseError(
            f"usecases/{usecase.name}.yaml",
            "context",
            f"declares {not_fields}, which the labelled events do not carry, so training rows cannot have them",
            fix="add them to realtime_features.events.fields (and the event table), or train from a table of past "
            "requests (training.spine.table)",
        )
    if inputs_from_events and usecase.training.lead.total_seconds() > 0:
        raise UseCaseError(
            f"usecases/{usecase.name}.yaml",
            "training.predict_before",
            f"is {usecase.training.predict_before}, but the context inputs {inputs_from_events} are read from the "
            "labelled event, which a prediction made before it cannot know",
            fix="predict at the event (predict_before: 0s), drop those context features, or mark a value fixed "
            "before the event (a scheduled hour) `known_ahead: true`",
        )
    return training_frame(con, usecase, start, end, id_column=stream.id_field, extra_columns=from_events)


REFUSED_REQUESTS = b"migrate.refused_requests"
"""Schema metadata of `online_training_frame`'s table: how many rows it left out (`servable_rows`)."""


def _as_requested(item: ContextFeature, column: pa.ChunkedArray) -> list[Any]:
    """A context column's values as a request carries them: a fractional number column read as floats for a numeric
    item (DECIMAL too, which JSON has no type for), an integer column as Python integers (a JSON integer, checked
    exactly: as floats, 2**53 + 1 read as 2**53 and passed a ``max`` of 2**53 that serving holds it to), an integer
    column as strings for a string item (an id stored as a number); any other column as stored, which
    `context_errors` refuses when its type is not the item's."""
    kind = column.type
    if item.type in ("float", "int") and (pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        column = column.cast(pa.float64())
    elif item.type == "str" and pa.types.is_integer(kind):
        column = column.cast(pa.string())
    values: list[Any] = column.to_pylist()
    return values


def servable_rows(usecase: UseCase, frame: pa.Table) -> tuple[pa.Table, int]:
    """`frame` without the rows whose context values serving refuses (`migrate.request_rules.context_errors`: a
    required value missing, a number that is NaN, infinite, outside its ``min``/``max`` or not an integer where one is
    declared), and how many: such a request gets a 422 and no prediction online, so a model trained on it learns from
    requests it is never asked. The count is in the table's metadata (`refused_request_metrics`)."""
    items = [item for item in usecase.context if item.name in frame.column_names]
    kept = frame
    if items and frame.num_rows:
        names = [item.name for item in items]
        columns = [_as_requested(item, frame.column(item.name)) for item in items]
        keep = [not context_errors(usecase, dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]
        kept = frame if all(keep) else frame.filter(pa.array(keep, pa.bool_()))
    refused = frame.num_rows - kept.num_rows
    metadata = {**(frame.schema.metadata or {}), REFUSED_REQUESTS: str(refused).encode()}
    return kept.replace_schema_metadata(metadata), refused


def refused_request_metrics(frame: pa.Table) -> dict[str, float]:
    """``{"refused_requests": n}``: the training rows `online_training_frame` left out because serving refuses their
    context (`servable_rows`), for a trainer's metrics (0 on a frame that went through no such check)."""
    metadata = frame.schema.metadata or {}
    return {"refused_requests": float(metadata.get(REFUSED_REQUESTS, b"0"))}


def online_training_frame(con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, end: datetime) -> pa.Table:
    """`training_frame` (one row per labelled event, a prediction ``training.predict_before`` ahead of it, with
    the batch features strictly before the prediction time) plus the real-time features and the context inputs
    at the prediction time.

    The rows are the spine's: the main stream's events (labelled ones, or those of ``training.spine.where``),
    whose fields of the same name give the context values the request carried (with ``predict_before`` > 0 the
    prediction precedes the event, so numeric context inputs read from it are refused; string keys such as an
    origin are known before), or the rows of a table of past requests (``training.spine.table``) with their own
    context columns.
    """
    localize(con, usecase)
    _, stream = event_stream(usecase)
    context = usecase.context_names
    spine = usecase.training.spine
    if spine is not None and spine.table is not None:
        # A table of past requests carries each request's context as it was sent: no event can leak into it.
        carried = [c.name for c in usecase.context]
        frame = training_frame(con, usecase, start, end, id_column=spine.id_column, extra_columns=carried)
    else:
        frame = _frame_from_events(con, usecase, start, end, stream)
    frame, refused = servable_rows(usecase, frame)
    if refused:
        log.warning(
            "%s: %d training rows left out: their context is one serving refuses (migrate/request_rules.py)",
            usecase.name,
            refused,
        )
    values = realtime_features_at(con, usecase, frame, end)
    for index, name in enumerate(usecase.realtime_feature_names):
        frame = frame.append_column(name, pa.array(values[:, index], pa.float64()))
    for name in context:
        frame = frame.set_column(frame.column_names.index(name), name, frame.column(name).cast(pa.float64()))
    return frame
