"""Which rows a comparison reads: one use case's shadow log in a time window, each request joined with its label.

The shadow sink writes ``<shadow_dir>/<usecase>/date=YYYY-MM-DD/hour=HH/part-*.parquet`` and the labels beside it
(``<labels_dir>/<usecase>/...``). Only the hour partitions that overlap the window are read; DuckDB reads them
once into an in-memory table ``s`` that every metric queries.

The label join: a request for entity *k* at time *t* is labeled by the **first** label of *k* with event time in
``(t, t + label.available_after]``. Its label window is **closed** once ``t + available_after`` is at or before the
label watermark (the newest label event time seen for the use case). Rows are ``labeled`` (closed, label found),
``unlabeled`` (closed, no label) or ``pending`` (window still open); only ``labeled`` rows score accuracy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from migrate.errors import InvalidWindowError, NoShadowDataError
from migrate.usecase import UseCase, parse_duration

__all__ = ["Rows", "Window", "label_files", "load", "shadow_files"]

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR = re.compile(r"^hour=(\d{2})$")


@dataclass(frozen=True)
class Window:
    """Requests with ``since <= request_time < until``; an open end reads everything on that side."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise InvalidWindowError(
                    f"window {name} {value.isoformat()} has no time zone",
                    fix="give times with a zone, e.g. 2026-11-14T00:00:00+00:00",
                )
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidWindowError(
                f"window ends ({self.until.isoformat()}) at or before it starts ({self.since.isoformat()})",
                fix="pass --since earlier than --until",
            )

    def overlaps_hour(self, start: datetime) -> bool:
        """Whether the hour starting at ``start`` (UTC) holds any instant of the window."""
        end = start + timedelta(hours=1)
        return (self.since is None or end > self.since) and (self.until is None or start < self.until)

    def describe(self) -> str:
        since = "the first request" if self.since is None else self.since.astimezone(UTC).isoformat()
        until = "the last request" if self.until is None else self.until.astimezone(UTC).isoformat()
        return f"{since} → {until}"


def shadow_files(root: Path, window: Window) -> list[str]:
    """The Parquet files of the hour partitions under ``root`` that overlap ``window``, sorted."""
    files: list[str] = []
    if not root.is_dir():
        return files
    for day in sorted(root.iterdir()):
        match = _PARTITION.match(day.name)
        if match is None or not day.is_dir():
            continue
        for hour in sorted(day.iterdir()):
            hour_match = _HOUR.match(hour.name)
            if hour_match is None:
                continue
            start = datetime.fromisoformat(match.group(1)).replace(hour=int(hour_match.group(1)), tzinfo=UTC)
            if window.overlaps_hour(start):
                files.extend(str(p) for p in sorted(hour.glob("*.parquet")))
    return files


def label_files(root: Path) -> list[str]:
    """Every label file of the use case: labels after the window still label requests inside it."""
    return sorted(str(p) for p in root.glob("date=*/hour=*/*.parquet")) if root.is_dir() else []


@dataclass(frozen=True)
class Rows:
    """The comparison's rows, loaded: a DuckDB connection holding table ``s`` and the facts about it."""

    con: duckdb.DuckDBPyConnection
    usecase: UseCase
    window: Window
    rows: int
    files: int
    label_watermark: datetime | None
    keys: tuple[str, ...]
    age_every: int = 1

    @property
    def key_columns(self) -> str:
        """``k_<name>, ...``: the entity key columns of table ``s``."""
        return ", ".join(f"k_{name}" for name in self.keys)


def _literal(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _key_type(kind: str) -> str:
    return "BIGINT" if kind == "int" else "VARCHAR"


def _labels_view(con: duckdb.DuckDBPyConnection, usecase: UseCase, files: list[str]) -> None:
    keys = usecase.entity.keys
    if files:
        casts = ", ".join(f"CAST(key_{k.name} AS {_key_type(k.type)}) AS k_{k.name}" for k in keys)
        source = f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)"
        con.execute(
            f"CREATE TEMP TABLE labels AS SELECT {casts}, CAST(event_time AS TIMESTAMPTZ) AS event_time, "
            f"CAST(label AS DOUBLE) AS label FROM {source} WHERE label IS NOT NULL"
        )
    else:
        typed = ", ".join(f"CAST(NULL AS {_key_type(k.type)}) AS k_{k.name}" for k in keys)
        con.execute(
            f"CREATE TEMP TABLE labels AS SELECT {typed}, CAST(NULL AS TIMESTAMPTZ) AS event_time, "
            "CAST(NULL AS DOUBLE) AS label LIMIT 0"
        )


def _feature_names(usecase: UseCase) -> list[str]:
    names = list(usecase.feature_names)
    if usecase.realtime_features is not None:
        names += [f.name for f in usecase.realtime_features.features]
    return names


SERVED = ("batch", "online", "batch_fallback")
AGE_SAMPLE = 1_000_000  # live data ages are parsed for at most about this many rows


def load(
    usecase: UseCase,
    shadow_root: Path,
    labels_root: Path,
    window: Window,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> Rows:
    """Read the window's shadow rows and join each with its label into table ``s`` of a fresh DuckDB connection.

    Table ``s`` keeps what the metrics need, compactly: ``h`` (a 64-bit hash of request id and entity key, which
    identifies a row), ``e`` (a hash of the entity key), the ``k_<key>`` columns, ``served`` (index into
    ``SERVED``), predictions, ages, latencies, error flags, ``hour``, ``label`` and ``label_state``.

    Raises:
        NoShadowDataError: no shadow file, or no row in the window.
    """
    files = shadow_files(shadow_root, window)
    if not files:
        raise NoShadowDataError(
            f"no shadow log for use case {usecase.name!r} in {shadow_root} ({window.describe()})",
            fix=f"serve it at stage shadow (`migrate flags set {usecase.name} --stage shadow --reason …`) and run "
            f"`migrate sink {usecase.name}`; or widen --since/--until",
        )
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    _labels_view(con, usecase, label_files(labels_root))
    watermark: datetime | None = con.execute("SELECT max(event_time) FROM labels").fetchall()[0][0]
    keys = tuple(usecase.entity.key_names)
    delay_us = int(parse_duration(usecase.label.available_after).total_seconds() * 1_000_000)
    where = []
    if window.since is not None:
        where.append(f"request_time >= {_timestamp(window.since)}")
    if window.until is not None:
        where.append(f"request_time < {_timestamp(window.until)}")
    casts = ", ".join(f"CAST(key_{k.name} AS {_key_type(k.type)}) AS k_{k.name}" for k in usecase.entity.keys)
    entity = f"hash({', '.join(f'k_{k}' for k in keys)})"
    struct = "{" + ", ".join(f'"{name}": "DOUBLE"' for name in _feature_names(usecase)) + "}"
    served = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(SERVED))
    due = f"r.request_time + to_microseconds({delay_us})"
    closed = "FALSE" if watermark is None else f"{due} <= {_timestamp(watermark)}"
    source = f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)"
    count = int(con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])  # from the Parquet footers
    every = max(1, -(-count // AGE_SAMPLE))
    # The live path's data age is its oldest feature's. Parsing the JSON ages dominates the load at scale, so
    # beyond AGE_SAMPLE rows it is parsed for a hash-chosen 1-in-`every` subset only (Rows.age_every says which).
    parsed = f"from_json(online_feature_ages_s, '{struct}')"
    greatest = f"greatest({', '.join(f'{parsed}.{name}' for name in _feature_names(usecase))})"
    age = greatest if every == 1 else f"CASE WHEN hash(request_id, entity_key) % {every} = 0 THEN {greatest} END"
    # One pass: read, derive, and join each request with its first later label by an ASOF join on a hash of the
    # entity key (one integer key sorts far faster than the key columns; a 64-bit collision between two entities
    # is negligible at these sizes).
    con.execute(f"""
        CREATE TEMP TABLE s AS
        WITH r AS (
            SELECT hash(request_id, entity_key) AS h, {casts}, CAST(request_time AS TIMESTAMPTZ) AS request_time,
                   CAST(CASE served_source {served} ELSE {len(SERVED)} END AS UTINYINT) AS served,
                   batch_prediction AS bp, coalesce(batch_miss, FALSE) AS miss, batch_data_age_s AS batch_age,
                   batch_latency_ms AS batch_ms, batch_error IS NOT NULL AS batch_err,
                   online_prediction AS op, online_latency_ms AS online_ms, online_error IS NOT NULL AS online_err,
                   {age} AS online_age
            FROM {source}
            {"WHERE " + " AND ".join(where) if where else ""}
        )
        SELECT r.* EXCLUDE (request_time), {entity.replace("k_", "r.k_")} AS e, r.request_time,
               date_trunc('hour', r.request_time) AS hour,
               CASE WHEN l.event_time <= {due} THEN l.label END AS label,
               CASE WHEN NOT ({closed}) THEN 'pending' WHEN l.event_time <= {due} THEN 'labeled'
                    ELSE 'unlabeled' END AS label_state
        FROM r ASOF LEFT JOIN (SELECT {entity} AS e, event_time, label FROM labels) l
        ON {entity.replace("k_", "r.k_")} = l.e AND r.request_time < l.event_time
    """)
    # Producer retries can deliver a record twice (a request id names one request of several entities): keep one.
    if con.execute("SELECT count(*) FROM (SELECT h FROM s GROUP BY h HAVING count(*) > 1)").fetchall()[0][0]:
        con.execute("""
            DELETE FROM s WHERE rowid IN (
                SELECT rowid FROM (SELECT rowid, row_number() OVER (PARTITION BY h ORDER BY rowid) AS n FROM s
                                   WHERE h IN (SELECT h FROM s GROUP BY h HAVING count(*) > 1)) WHERE n > 1)
        """)
    rows = int(con.execute("SELECT count(*) FROM s").fetchall()[0][0])
    if rows == 0:
        con.close()
        raise NoShadowDataError(
            f"the shadow log of use case {usecase.name!r} has no request in {window.describe()}",
            fix="widen --since/--until, or wait for traffic at stage shadow",
        )
    return Rows(con, usecase, window, rows, len(files), watermark, keys, every)
