"""The offline store (DuckDB): point-in-time reads shared by training and the nightly batch path.

Time convention: every timestamp column is read as a naive ``TIMESTAMP`` holding UTC, and every connection
runs with ``TimeZone = 'UTC'`` so that a ``TIMESTAMPTZ`` column a user brings compares the same way. Tables whose
naive timestamps are local wall-clock times are read through views in the use case's ``offline_time_zone``
(migrate/batch/offline_zone.py), so everything below still sees UTC. Python
callers pass and receive timezone-aware UTC datetimes; a naive datetime is taken to be UTC already.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from migrate.batch.offline_zone import localize
from migrate.batch.own_outcome import OWN_OUTCOME_ID, checks_own_outcome, flag_own_outcome, own_outcome_sql
from migrate.batch.sql_names import quote as _quote
from migrate.errors import ConfigError, OfflineStoreError, UseCaseError
from migrate.usecase import UseCase, parse_duration

__all__ = [
    "check_columns",
    "column_problem",
    "labels_closed",
    "open_offline",
    "snapshot_features",
    "training_frame",
    "utc_aware",
    "utc_naive",
]

# `migrate demo` generates these examples' data; every example has a generator of its own.
_DEMO_EXAMPLES = ("item_availability", "fraud_detection")
_GENERATE_FIX = "run `migrate demo` (it generates the examples' data), or write your use cases' tables into it"


def _generate_fix(usecase_file: str) -> str:
    """How to create a use case's tables: the demo or its example's own generator, else the team's loading."""
    name = Path(usecase_file).stem
    if name in _DEMO_EXAMPLES:
        return f"run `migrate demo`, or the example's generator (migrate.examples.{name}.generator.generate)"
    if importlib.util.find_spec(f"migrate.examples.{name}") is not None:
        return f"run the example's generator (migrate.examples.{name}.generator.generate); the demo does not make it"
    return "write the use case's tables into the offline store (the sample.py that `migrate init` writes shows how)"


def utc_naive(moment: datetime) -> datetime:
    """The naive-UTC form the offline store holds; naive input is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def utc_aware(moment: datetime) -> datetime:
    """The timezone-aware UTC form callers receive."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# DuckDB's memory while it writes a snapshot (MIGRATE_SNAPSHOT_MEMORY). 10M entities × 8 features are ~0.9 GB of
# values: at 512 MB the sort and joins spilled 2.3 GB to disk and read 2.6 GB back (CPU 13.5 s, 2 cores), at 2 GB
# 69 MB (CPU 9.0 s).
SNAPSHOT_MEMORY = "2GB"


def open_offline(path: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Connect to the offline store; a missing file raises `OfflineStoreError` with the fix."""
    if read_only and not path.exists():
        raise OfflineStoreError(f"offline store {path} does not exist", fix=_GENERATE_FIX)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise OfflineStoreError(
            f"cannot open offline store {path}: {exc}",
            fix="close other processes writing to it, or check the file and its permissions",
        ) from exc
    _use_utc(con)
    return con


def _use_utc(con: duckdb.DuckDBPyConnection) -> None:
    # TIMESTAMP ↔ TIMESTAMPTZ comparisons cast through the session zone; pinning it keeps them UTC.
    con.execute("SET TimeZone = 'UTC'")


def column_problem(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], *, usecase_file: str
) -> OfflineStoreError | None:
    """What is wrong with `table` for `columns` (it is missing, or lacks some of them), naming the table, the
    columns, the use-case file and the fix; None when it holds them all."""
    rows = con.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $table",
        params={"table": table},
    ).fetchall()
    if not rows:
        return OfflineStoreError(
            f"offline store has no table {table!r}, which {usecase_file} declares",
            fix=f"{_generate_fix(usecase_file)}, or correct the table name in {usecase_file}",
        )
    present = {str(row[0]) for row in rows}
    missing = [c for c in dict.fromkeys(columns) if c not in present]
    if not missing:
        return None
    listed = ", ".join(repr(c) for c in missing)
    plural = "s" if len(missing) > 1 else ""
    return OfflineStoreError(
        f"offline table {table!r} lacks column{plural} {listed}, which {usecase_file} declares",
        fix=f"add {listed} to {table!r} or correct the names in {usecase_file}; it has: {', '.join(sorted(present))}",
    )


def check_columns(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], *, usecase_file: str) -> None:
    """Raise `OfflineStoreError` naming the table, the missing columns, the use-case file and the fix."""
    problem = column_problem(con, table, columns, usecase_file=usecase_file)
    if problem is not None:
        raise problem


def _file_of(usecase: UseCase, usecase_file: str | None) -> str:
    return usecase_file or f"usecases/{usecase.name}.yaml"


def _as_utc_timestamps(table: pa.Table, column: str) -> pa.Table:
    # DuckDB hands naive TIMESTAMP out as tz-less Arrow; the values are UTC, so only the type changes.
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, table[column].cast(pa.timestamp("us", tz="UTC")))


def _snapshot_query(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, usecase_file: str | None, *, ordered: bool = True
) -> str:
    _use_utc(con)
    file = _file_of(usecase, usecase_file)
    keys = usecase.entity.key_names
    source = usecase.entity.source
    batch = usecase.batch_features
    check_columns(con, source.table, [*keys, source.created_at_column], usecase_file=file)
    own = [f.name for f in batch.features]
    check_columns(con, batch.table, [*keys, batch.timestamp_column, *own], usecase_file=file)
    key_list = ", ".join(_quote(k) for k in keys)
    ts = _quote(batch.timestamp_column)
    features = [f"CAST(f.{_quote(n)} AS DOUBLE) AS {_quote(n)}" for n in own]
    joined, tables = "", ""
    for index, join in enumerate(batch.joins):
        names = [f.name for f in join.features]
        check_columns(con, join.table, [*join.keys, join.timestamp_column, *names], usecase_file=file)
        on = ", ".join(_quote(k) for k in join.keys)
        tables += f""", j{index} AS (
            SELECT * FROM {_quote(join.table)} WHERE {_quote(join.timestamp_column)} <= $as_of
            QUALIFY row_number() OVER (PARTITION BY {on} ORDER BY {_quote(join.timestamp_column)} DESC) = 1
        )"""
        joined += f" LEFT JOIN j{index} USING ({on})"
        features += [f"CAST(j{index}.{_quote(n)} AS DOUBLE) AS {_quote(n)}" for n in names]
    # QUALIFY keeps the newest row per key; DuckDB does this in one hash-partitioned pass. A coarser table without
    # a row for the entity's store (say) leaves its features missing; the entity table's row is required.
    order = f"ORDER BY {', '.join(f'e.{_quote(k)}' for k in keys)}" if ordered else ""
    return f"""
        WITH entities AS (
            SELECT DISTINCT {key_list} FROM {_quote(source.table)}
            WHERE {_quote(source.created_at_column)} <= $as_of
        ), latest AS (
            SELECT * FROM {_quote(batch.table)}
            WHERE {ts} <= $as_of
            QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY {ts} DESC) = 1
        ){tables}
        SELECT {", ".join(f"e.{_quote(k)}" for k in keys)}, {", ".join(features)},
               CAST(CAST(f.{ts} AS TIMESTAMP) AS TIMESTAMPTZ) AS features_as_of
        FROM entities e JOIN latest f USING ({key_list}){joined}
        {order}
    """


def snapshot_features(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, as_of: datetime, *, usecase_file: str | None = None
) -> pa.Table:
    """The latest batch-feature row at or before `as_of` of every entity created by then.

    Columns: the entity keys, each feature as float64 in model order, and ``features_as_of`` (UTC).
    Entities without any feature row yet are left out; rows are sorted by the entity keys.
    """
    localize(con, usecase)
    query = _snapshot_query(con, usecase, usecase_file)
    table = con.sql(query, params={"as_of": utc_naive(as_of)}).to_arrow_table()
    return _as_utc_timestamps(table, "features_as_of")


def latest_feature_time(con: duckdb.DuckDBPyConnection, usecase: UseCase) -> datetime | None:
    """The newest batch-feature snapshot time in the offline store (``None`` when the table is empty)."""
    localize(con, usecase)
    batch = usecase.batch_features
    check_columns(con, batch.table, [batch.timestamp_column], usecase_file=_file_of(usecase, None))
    row = con.execute(f"SELECT max({_quote(batch.timestamp_column)}) FROM {_quote(batch.table)}").fetchone()
    return None if row is None or row[0] is None else utc_aware(row[0])


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    as_of: datetime,
    target: Path,
    *,
    row_group_size: int,
    usecase_file: str | None = None,
    memory_limit: str = SNAPSHOT_MEMORY,
) -> None:
    """`snapshot_features` streamed by DuckDB straight into a Parquet file: memory stays under `memory_limit` (a
    DuckDB size, `Settings.snapshot_memory`) at any size; the rest spills to disk."""
    localize(con, usecase)
    query = _snapshot_query(con, usecase, usecase_file)
    _limit_memory(con, memory_limit, target.parent / ".spill")
    # COPY takes no bound parameters; the instant is rendered from a datetime, never from user text.
    literal = f"TIMESTAMP '{utc_naive(as_of).isoformat(sep=' ')}'"
    # Snappy, not zstd: 10M rows written in 1.5 s of CPU instead of 2.0 and read back by the chunks in 0.13 s
    # instead of 0.4, for a file 10% larger (measured on the bench's snapshot).
    con.execute(
        f"COPY ({query.replace('$as_of', literal)}) TO '{target}' "
        f"(FORMAT parquet, ROW_GROUP_SIZE {int(row_group_size)}, COMPRESSION snappy)"
    )


def _limit_memory(con: duckdb.DuckDBPyConnection, memory_limit: str, spill: Path) -> None:
    """Cap DuckDB's memory so a large snapshot (its sort, its newest-row-per-key pass) spills to disk in `spill`
    instead of growing with the entity count."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory_limit):
        raise ConfigError(
            f"snapshot memory {memory_limit!r} is not a DuckDB size",
            fix="set MIGRATE_SNAPSHOT_MEMORY like 512MB or 2GB",
        )
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill}'")


def snapshot_reader(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    as_of: datetime,
    spill: Path,
    *,
    batch_rows: int,
    memory_limit: str = SNAPSHOT_MEMORY,
) -> pa.RecordBatchReader:
    """`snapshot_features` in no order, as Arrow batches of `batch_rows` rows that DuckDB computes as they are
    read: memory stays under `memory_limit` at any size (the rest spills into `spill`), and a reader works on the
    first batches while DuckDB computes the next (materialization in `make bench`: 1M entities in 4.14 s, against
    5.81 s written through a sorted Parquet file first). `con` stays in use until the reader is exhausted."""
    localize(con, usecase)
    query = _snapshot_query(con, usecase, None, ordered=False)
    _limit_memory(con, memory_limit, spill / ".spill")
    return con.sql(query, params={"as_of": utc_naive(as_of)}).to_arrow_reader(batch_rows)


def _where_sql(where: dict[str, bool | int | str], params: dict[str, Any], prefix: str) -> str:
    """``field = $param AND ...`` for an event filter, the values bound as parameters."""
    parts = []
    for index, (field, value) in enumerate(sorted(where.items())):
        params[f"{prefix}{index}"] = value
        parts.append(f"{_quote(field)} = ${prefix}{index}")
    return " AND ".join(parts) or "TRUE"


def _named_label_sql(usecase: UseCase, named_id: str, at: str, delay: str, params: dict[str, Any]) -> str:
    """``label.from_event``'s label of a prediction whose id is `named_id` made at `at`: its ``value`` when an
    event of its filter names that id within (`at`, `at` + `delay`], else ``otherwise``."""
    events, by_reference = usecase.realtime_features, usecase.label.from_event
    assert events is not None and by_reference is not None
    otherwise = "NULL" if by_reference.otherwise is None else repr(float(by_reference.otherwise))
    label_table, label_time_column, _ = events.source(by_reference.stream)
    when = f"CAST(l.{_quote(label_time_column)} AS TIMESTAMP)"
    return f"""CASE WHEN EXISTS (
            SELECT 1 FROM {_quote(label_table)} l
            WHERE l.{_quote(by_reference.ref_field)} = {named_id}
              AND {_where_sql(by_reference.where, params, "label")} AND {when} > {at} AND {when} <= {at} + {delay}
        ) THEN {float(by_reference.value)!r} ELSE {otherwise} END"""


def labels_closed(usecase: UseCase, end: datetime) -> datetime:
    """The instant before which `training_frame` read up to `end` holds every prediction: ``end − available_after``
    when a row waits for its label window to close (``label.from_event``, or a table of past requests), else `end`
    (an event's own label field is known at the event). A trainer's holdout ends here, not at `end`."""
    spine = usecase.training.spine
    if usecase.label.from_event is None and (spine is None or spine.table is None):
        return end
    return end - parse_duration(usecase.label.available_after)


def _predictions_sql(usecase: UseCase, extra: Sequence[str], params: dict[str, Any]) -> str:
    """One row per prediction request in [start, end): its keys, label time, prediction time, label, `extra`.

    Requests are the labelled events (``label.event_field`` or the label column), or the events of
    ``training.spine.where`` labelled by a later event naming them (``label.from_event``), kept only once their
    label window has closed before `end` (a fraud still undisputed may be disputed tomorrow).
    """
    assert usecase.realtime_features is not None
    events = usecase.realtime_features
    keys = ", ".join(_quote(k) for k in usecase.entity.key_names)
    event_time = _quote(events.event_time_column)
    lead_us = int(usecase.training.lead.total_seconds() * 1_000_000)
    label_type = "INTEGER" if usecase.label.kind == "binary" else "DOUBLE"
    columns = "".join(f", {_quote(c)}" for c in extra)
    spine = usecase.training.spine
    spine_where = _where_sql(spine.where, params, "spine") if spine is not None else "TRUE"
    times = f"""CAST({event_time} AS TIMESTAMP) AS event_time,
                CAST({event_time} AS TIMESTAMP) - to_microseconds({lead_us}) AS prediction_time"""
    source = _quote(events.event_table)
    by_reference = usecase.label.from_event
    if spine is not None and spine.table is not None:
        return _requests_sql(usecase, extra, params)
    if by_reference is None:
        label = _quote(usecase.label.name)
        return f"""SELECT {keys}, {times}, CAST({label} AS {label_type}) AS label_value{columns} FROM {source}
            WHERE {event_time} >= $start AND {event_time} < $end AND {label} IS NOT NULL AND {spine_where}"""
    assert events.events is not None
    delay = f"to_microseconds({int(parse_duration(usecase.label.available_after).total_seconds() * 1_000_000)})"
    sp_at = f"CAST(sp.{event_time} AS TIMESTAMP)"
    named_id = f"sp.{_quote(events.events.id_field)}"
    label = _named_label_sql(usecase, named_id, sp_at, delay, params)
    sp_prediction = f"{sp_at} - to_microseconds({lead_us})"
    own = f", {own_outcome_sql(usecase, named_id, sp_prediction)} AS {OWN_OUTCOME_ID}"
    return f"""SELECT * FROM (
        SELECT {keys}, {times}{columns}, CAST({label} AS {label_type}) AS label_value{own}
        FROM {source} sp
        WHERE {event_time} >= $start AND {event_time} < $end AND {spine_where}
          AND CAST({event_time} AS TIMESTAMP) + {delay} <= CAST($end AS TIMESTAMP)
    ) WHERE label_value IS NOT NULL"""


def _requests_sql(usecase: UseCase, extra: Sequence[str], params: dict[str, Any]) -> str:
    """`_predictions_sql` over a table of past requests: each labelled by the first label of its entity within
    ``available_after`` after it (``label.event_field`` or the label column of the events), or by the event naming
    its id (``label.from_event``), or by the table's own ``label_column``; kept once that window has closed before
    `end`, so a label that arrived after `end` is never used."""
    events, spine = usecase.realtime_features, usecase.training.spine
    assert events is not None and events.events is not None and spine is not None and spine.table is not None
    assert spine.time_column is not None
    keys = usecase.entity.key_names
    at = f"CAST(r.{_quote(spine.time_column)} AS TIMESTAMP)"
    label_type = "INTEGER" if usecase.label.kind == "binary" else "DOUBLE"
    delay = f"to_microseconds({int(parse_duration(usecase.label.available_after).total_seconds() * 1_000_000)})"
    when = f"CAST(l.{_quote(events.event_time_column)} AS TIMESTAMP)"
    by_reference = usecase.label.from_event
    if spine.label_column is not None:  # labelled already (the shadow log's label join, exported by `migrate spine`)
        label = f"r.{_quote(spine.label_column)}"
    elif by_reference is not None:
        assert spine.id_column is not None
        label = _named_label_sql(usecase, f"r.{_quote(spine.id_column)}", at, delay, params)
    else:
        column = _quote(usecase.label.event_field or usecase.label.name)
        same = " AND ".join(f"l.{_quote(k)} = r.{_quote(k)}" for k in keys)
        label = f"""(SELECT l.{column} FROM {_quote(events.event_table)} l
            WHERE {same} AND l.{column} IS NOT NULL AND {when} > {at} AND {when} <= {at} + {delay}
            ORDER BY {when}, l.{_quote(events.events.id_field)} LIMIT 1)"""
    columns = "".join(f", r.{_quote(c)}" for c in extra)
    if checks_own_outcome(usecase):
        assert spine.id_column is not None
        columns += f", {own_outcome_sql(usecase, f'r.{_quote(spine.id_column)}', at)} AS {OWN_OUTCOME_ID}"
    return f"""SELECT * FROM (
        SELECT {", ".join(f"r.{_quote(k)}" for k in keys)}, {at} AS event_time, {at} AS prediction_time{columns},
               CAST({label} AS {label_type}) AS label_value
        FROM {_quote(spine.table)} r
        WHERE r.{_quote(spine.time_column)} >= $start AND r.{_quote(spine.time_column)} < $end
          AND {at} + {delay} <= CAST($end AS TIMESTAMP)
    ) WHERE label_value IS NOT NULL"""


def _batch_join_sql(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, file: str, *, outer: bool, keys_from: str | None = None
) -> tuple[str, str, str]:
    """The batch features of each row of a relation ``ev`` (entity keys, ``prediction_time``) as of that time:
    (the CTE ``f``, the SELECT list of the features, the joins after ``FROM ev``). Reads only rows before ``$end``;
    with `keys_from` (a relation holding the same key columns as ``ev``, for a few rows), only the feature rows of
    its keys: an ASOF join sorts its whole right side, and the other keys' rows cannot change any answer.

    ASOF JOIN picks, per prediction, the feature row with the greatest timestamp strictly before the prediction
    time: what the lookup table could have held then, never the snapshot of that very instant (no leakage). With
    `outer` a row without any feature row yet is kept with missing features (what serving reads for an entity it
    does not know); without it, such a row is left out (the batch model could not have scored it).
    """
    keys = usecase.entity.key_names
    batch = usecase.batch_features
    own = [f.name for f in batch.features]
    check_columns(con, batch.table, [*keys, batch.timestamp_column, *own], usecase_file=file)
    on_keys = " AND ".join(f"ev.{_quote(k)} = f.{_quote(k)}" for k in keys)
    ts = _quote(batch.timestamp_column)
    selected = [f"CAST(f.{_quote(n)} AS DOUBLE) AS {_quote(n)}" for n in own]
    joins = f"ASOF {'LEFT ' if outer else ''}JOIN f ON {on_keys} AND ev.prediction_time > f.features_as_of"

    def source(table: str, on_keys: Sequence[str]) -> str:
        if keys_from is None:
            return _quote(table)
        matched = " AND ".join(f"x.{_quote(k)} = r.{_quote(k)}" for k in on_keys)
        return f"(SELECT x.* FROM {_quote(table)} x SEMI JOIN {keys_from} r ON {matched})"

    for index, join in enumerate(batch.joins):
        names = [f.name for f in join.features]
        check_columns(con, join.table, [*join.keys, join.timestamp_column, *names], usecase_file=file)
        on = " AND ".join(f"ev.{_quote(k)} = j{index}.{_quote(k)}" for k in join.keys)
        # Each coarser table as of the same instant, strictly before the prediction; missing rows stay missing.
        joins += f"""
        ASOF LEFT JOIN (SELECT *, CAST({_quote(join.timestamp_column)} AS TIMESTAMP) AS _as_of
                        FROM {source(join.table, join.keys)} WHERE {_quote(join.timestamp_column)} < $end) j{index}
            ON {on} AND ev.prediction_time > j{index}._as_of"""
        selected += [f"CAST(j{index}.{_quote(n)} AS DOUBLE) AS {_quote(n)}" for n in names]
    f_cte = f"""f AS (
            SELECT {", ".join(_quote(k) for k in keys)}, {", ".join(_quote(n) for n in own)},
                   CAST({ts} AS TIMESTAMP) AS features_as_of
            FROM {source(batch.table, keys)}
            WHERE {ts} < $end
        )"""
    return f_cte, ", ".join(selected), joins


def training_frame(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    start: datetime,
    end: datetime,
    *,
    usecase_file: str | None = None,
    id_column: str | None = None,
    extra_columns: Sequence[str] = (),
) -> pa.Table:
    """Prediction requests in [start, end) (see `_predictions_sql`), each made ``training.predict_before`` ahead of
    its event and joined to the latest batch-feature row strictly before that prediction time.

    Columns: the entity keys, ``event_time`` (the event's time, UTC), ``prediction_time`` (UTC), each feature as
    float64, ``features_as_of`` (UTC), the label (0/1 for binary labels), then `id_column` and `extra_columns`
    (event fields, as stored), then, when `checks_own_outcome`, ``own_outcome_known``. Events whose entity had no
    feature row yet are left out, as the batch model could not have scored them; rows are sorted by event time, keys
    and label.

    Raises:
        OwnOutcomeKnownError: with ``label.from_event``, rows are predicted at or after another event naming them
            (their outcome may be in their windows), and ``from_event.allow_own_outcome_known`` is not set.
    """
    localize(con, usecase)
    _use_utc(con)
    file = _file_of(usecase, usecase_file)
    if usecase.realtime_features is None:
        raise UseCaseError(
            file,
            "realtime_features",
            "is not declared, so there is no table of labelled events",
            fix="declare realtime_features.event_table and event_time_column",
        )
    keys = usecase.entity.key_names
    events = usecase.realtime_features
    label = usecase.label.name
    extra = ([] if id_column is None else [id_column]) + [c for c in extra_columns if c != id_column]
    spine = usecase.training.spine
    if spine is not None and spine.table is not None and spine.time_column is not None:
        own_label = [] if spine.label_column is None else [spine.label_column]
        check_columns(con, spine.table, [*keys, spine.time_column, *own_label, *extra], usecase_file=file)
        needed = [*keys, events.event_time_column]
    else:
        needed = [*keys, events.event_time_column, *extra]
    labelled_by_events = usecase.label.from_event is None and (spine is None or spine.label_column is None)
    needed += [usecase.label.event_field or label] if labelled_by_events else []
    check_columns(con, events.event_table, needed, usecase_file=file)
    out_extra = "".join(f", ev.{_quote(c)}" for c in extra)
    ev_keys = ", ".join(f"ev.{_quote(k)}" for k in keys)
    params: dict[str, Any] = {"start": utc_naive(start), "end": utc_naive(end)}
    f_cte, features, joins = _batch_join_sql(con, usecase, file, outer=False)
    own = checks_own_outcome(usecase)
    query = f"""
        WITH ev AS ({_predictions_sql(usecase, extra, params)}), {f_cte}
        SELECT {ev_keys}, ev.event_time, ev.prediction_time, {features}, f.features_as_of,
               ev.label_value AS {_quote(label)}{out_extra}{f", ev.{OWN_OUTCOME_ID}" if own else ""}
        FROM ev {joins}
        ORDER BY ev.event_time, {ev_keys}, ev.label_value{out_extra}
    """
    table = con.sql(query, params=params).to_arrow_table()
    for column in ("event_time", "prediction_time", "features_as_of"):
        table = _as_utc_timestamps(table, column)
    return flag_own_outcome(usecase, table, utc_aware(start), utc_aware(end)) if own else table


def prediction_requests(
    con: duckdb.DuckDBPyConnection,
    usecase: UseCase,
    start: datetime,
    end: datetime,
    *,
    table: str | None = None,
    time_column: str = "request_time",
) -> pa.Table:
    """The predictions the use case would have been asked for in [start, end), labels aside (a backtest's requests).

    From `table` (a table of past requests: the entity keys, `time_column`, any context values), else from
    ``training.spine`` as training forms its rows: a spine table, or the main stream's events of ``spine.where``
    (default: those with a label), each a prediction ``training.predict_before`` ahead of its event. Columns: the
    entity keys, ``prediction_time`` (UTC), ``request_id`` (the row's id, or its position), then each declared
    context value the source carries (as stored), sorted by prediction time then keys.

    Raises:
        OfflineStoreError: the source lacks a column of the keys, of the time or of a required context value.
    """
    localize(con, usecase, also=() if table is None else (table,))
    _use_utc(con)
    file = _file_of(usecase, None)
    keys = usecase.entity.key_names
    spine = usecase.training.spine
    params: dict[str, Any] = {"start": utc_naive(start), "end": utc_naive(end)}
    if table is None and spine is not None and spine.table is not None and spine.time_column is not None:
        table, time_column = spine.table, spine.time_column
    if table is not None:
        id_column = spine.id_column if spine is not None and spine.table == table else None
        check_columns(con, table, [*keys, time_column], usecase_file=file)
        at = f"CAST({_quote(time_column)} AS TIMESTAMP)"
        where = f"{_quote(time_column)} >= $start AND {_quote(time_column)} < $end"
    else:
        declared = usecase.realtime_features
        if declared is None or declared.events is None:
            raise UseCaseError(
                file,
                "realtime_features.events",
                "is not declared, so there are no past requests to replay",
                fix="pass a table of past requests (--requests), or declare the event stream",
            )
        table, id_column = declared.event_table, declared.events.id_field
        lead_us = int(usecase.training.lead.total_seconds() * 1_000_000)
        at = f"CAST({_quote(declared.event_time_column)} AS TIMESTAMP) - to_microseconds({lead_us})"
        filters = _where_sql(spine.where, params, "spine") if spine is not None else "TRUE"
        if usecase.label.from_event is None and (spine is None or not spine.where):
            filters += f" AND {_quote(usecase.label.event_field or usecase.label.name)} IS NOT NULL"
        where = f"{at} >= $start AND {at} < $end AND {filters}"
    present = {row[0] for row in con.sql(f"DESCRIBE {_quote(table)}").fetchall()}
    # Serving refuses a request without a required context value (a 422, no prediction from either path): a source
    # that lacks the column would replay requests serving never answers, each scored with that input missing.
    lacking = [c.name for c in usecase.context if c.required and c.name not in present and c.name not in keys]
    if lacking:
        listed = ", ".join(repr(name) for name in lacking)
        raise OfflineStoreError(
            f"the past requests in {table!r} lack the required context value{'s' if len(lacking) > 1 else ''} "
            f"{listed} that {file} declares: serving refuses every request without it (a 422)",
            fix=f"add {listed} to {table!r} as the requests carried it, or declare it `required: false` in {file} "
            "(a request without it is then scored with the value missing)",
        )
    context = [c.name for c in usecase.context if c.name in present and c.name not in keys]
    request_id = f"CAST({_quote(id_column)} AS VARCHAR)" if id_column else "CAST(row_number() OVER () AS VARCHAR)"
    columns = "".join(f", {_quote(c)}" for c in context)
    ordered = ", ".join(_quote(k) for k in keys)
    query = f"""SELECT {ordered}, {at} AS prediction_time, {request_id} AS request_id{columns}
        FROM {_quote(table)} WHERE {where} ORDER BY prediction_time, {ordered}, request_id"""
    return _as_utc_timestamps(con.sql(query, params=params).to_arrow_table(), "prediction_time")


def batch_features_at(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, requests: pa.Table, *, few: bool = False
) -> pa.Table:
    """`requests` (entity keys, ``prediction_time``) with each batch feature as of its prediction time and
    ``features_as_of``, in the same order; a request without any feature row yet keeps missing features, as the
    online path reads an entity it does not know. The same join as `training_frame`. With `few` (a sample of
    requests, not a day of them), only their entities' feature rows are read into the join: the same answers."""
    localize(con, usecase)
    _use_utc(con)
    keys = usecase.entity.key_names
    positions = pa.array(range(requests.num_rows), pa.int64())
    probe = pa.table(
        [*(requests.column(k) for k in keys), requests.column("prediction_time"), positions],
        names=[*keys, "prediction_time", "_row"],
    )
    probe = probe.set_column(
        len(keys), "prediction_time", probe.column("prediction_time").cast(pa.timestamp("us", tz="UTC"))
    )
    probe = probe.set_column(len(keys), "prediction_time", probe.column("prediction_time").cast(pa.timestamp("us")))
    f_cte, features, joins = _batch_join_sql(
        con, usecase, _file_of(usecase, None), outer=True, keys_from="_requests" if few else None
    )
    con.register("_requests", probe)
    try:
        found = con.sql(
            f"WITH ev AS (SELECT * FROM _requests), {f_cte} "
            f"SELECT ev._row, {features}, f.features_as_of FROM ev {joins} ORDER BY ev._row",
            params={"end": datetime(9999, 1, 1)},
        ).to_arrow_table()
    finally:
        con.unregister("_requests")
    found = _as_utc_timestamps(found, "features_as_of")
    for name in found.column_names[1:]:
        requests = requests.append_column(name, found.column(name))
    return requests


def replace_requests(
    path: Path, table_name: str, requests: pa.Table, *, time_column: str, since: datetime | None, until: datetime | None
) -> int:
    """Write `requests` into table `table_name` of the offline store, replacing its rows of [since, until) (open
    ends: everything on that side), so exporting the same window twice leaves one copy and consecutive windows
    accumulate. Timestamps are stored as naive UTC, as every table of the store. Returns the table's row count."""
    for column in requests.column_names:
        if pa.types.is_timestamp(requests.schema.field(column).type):
            index = requests.column_names.index(column)
            requests = requests.set_column(index, column, requests.column(column).cast(pa.timestamp("us", tz="UTC")))
            requests = requests.set_column(index, column, requests.column(column).cast(pa.timestamp("us")))
    name, at = _quote(table_name), _quote(time_column)
    with open_offline(path, read_only=False) as con:
        con.register("incoming", requests)
        con.execute("BEGIN")
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM incoming LIMIT 0")
        bounds = [f"{at} >= $since" if since is not None else "TRUE", f"{at} < $until" if until is not None else "TRUE"]
        params = {k: utc_naive(v) for k, v in (("since", since), ("until", until)) if v is not None}
        con.execute(f"DELETE FROM {name} WHERE {' AND '.join(bounds)}", params)
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming")
        con.execute("COMMIT")
        count: int = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
    return count
