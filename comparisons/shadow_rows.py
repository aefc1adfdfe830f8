"""Which rows a comparison reads: one use case's shadow log in a time window, each request joined with its label.

The shadow sink writes ``<shadow_dir>/<usecase>/date=YYYY-MM-DD/hour=HH/part-*.parquet`` and the labels beside it
(``<labels_dir>/<usecase>/...``, partitioned by the label's event time). Only the hour partitions that overlap the
window are read (of the labels, those that can label its requests: `label_files`); DuckDB reads them once into an
Arrow table registered as ``s`` that every metric queries (and table ``ages``, the live data ages).

The label join: a request for entity *k* at time *t* is labeled by the **first** label of *k* with event time in
``(t, t + label.available_after]``. Its label window is **closed** once ``t + available_after`` is at or before the
label watermark (the newest label event time seen for the use case, or the newest event time the label sink read
of the label stream, when later; held at the progress of a partition the sink had read less far than its end:
migrate/label_progress.py). Rows are ``labeled`` (closed, label found),
``unlabeled`` (closed, no label) or ``pending`` (window still open); only ``labeled`` rows score accuracy. When the
label is an event that may never come (``label.from_event`` with ``otherwise``: no chargeback means no fraud), a
closed window without one is labeled ``otherwise``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from comparisons.background import in_background
from comparisons.data_ages import (
    AGE_SAMPLE,
    TYPED_AGES,
    age_columns,
    age_columns_sql,
    every_for,
    keep_once,
    parse_ages,
    sampled,
)
from migrate.errors import InvalidWindowError, NoShadowDataError, UnreadableLogError
from migrate.label_progress import progress_and_bound
from migrate.usecase import UseCase, parse_duration

__all__ = [
    "AGE_SAMPLE",
    "BACKTEST_STAGE",
    "LoggedRequests",
    "Rows",
    "Window",
    "damaged_file",
    "first_line",
    "is_file_error",
    "label_files",
    "load",
    "logged_requests",
    "newest_label",
    "readable",
    "requests_span",
    "row_id_sql",
    "shadow_files",
    "wrong_columns",
]

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


def _hour_start(day: str, hour: str) -> datetime | None:
    """The start (UTC) of the partition ``date=<day>/hour=<hour>``; None for a folder of another name."""
    day_match, hour_match = _PARTITION.match(day), _HOUR.match(hour)
    if day_match is None or hour_match is None:
        return None
    return datetime.fromisoformat(day_match.group(1)).replace(hour=int(hour_match.group(1)), tzinfo=UTC)


def shadow_files(root: Path, window: Window) -> list[str]:
    """The Parquet files of the hour partitions under ``root`` that overlap ``window``, sorted."""
    files: list[str] = []
    if not root.is_dir():
        return files
    for day in sorted(root.iterdir()):
        if _PARTITION.match(day.name) is None or not day.is_dir():
            continue
        for hour in sorted(day.iterdir()):
            start = _hour_start(day.name, hour.name)
            if start is not None and window.overlaps_hour(start):
                files.extend(str(p) for p in sorted(hour.glob("*.parquet")))
    return files


def label_files(root: Path, window: Window, delay: timedelta) -> list[str]:
    """The label files that can label a request of `window`, sorted: a request at ``t`` (``since <= t < until``) is
    labeled by a label in ``(t, t + delay]``, so only the hour partitions overlapping ``(since, until + delay)`` are
    read. Label files are partitioned by the label's event time (the sink and `migrate backtest` write them so), and
    a use case's labels pile up for as long as it runs: without this every comparison read all of them. An open end
    reads everything on that side."""
    until = None if window.until is None else window.until + delay
    return shadow_files(root, Window(window.since, until))


def requests_span(files: Sequence[str], window: Window) -> Window:
    """The part of `window` that the shadow files' hour partitions (by request time) cover: the requests read lie
    in it, so the labels that can label them do too (`label_files`). A window open at an end reads every label on
    that side otherwise, and a use case's first hour may be months before the window of rows it has now."""
    hours = sorted(
        start for path in files if (start := _hour_start(Path(path).parent.parent.name, Path(path).parent.name))
    )
    if not hours:
        return window
    since, until = hours[0], hours[-1] + timedelta(hours=1)
    return Window(
        since if window.since is None else max(window.since, since),
        until if window.until is None else min(window.until, until),
    )


def newest_label(con: duckdb.DuckDBPyConnection, root: Path, reading: list[str] | None = None) -> datetime | None:
    """The newest label's event time in any label file under `root`: read from the newest hour partition back to
    the first that holds a label (partitions are by event time, so its newest is the newest of all), not from the
    files `label_files` chose for a window, which may end long before it. The files it reads are added to
    `reading` (`readable` reads them again to find a damaged one)."""
    newest_first = reversed(shadow_files(root, Window()))
    for _, grouped in itertools.groupby(newest_first, key=lambda path: Path(path).parent):
        in_hour = list(grouped)
        if reading is not None:
            reading.extend(in_hour)
        _check_columns("label", root, in_hour, _NEWEST_COLUMNS)
        source = f"read_parquet({_literal(in_hour)}, hive_partitioning = true, union_by_name = true)"
        found = con.execute(
            f"SELECT max(CAST(event_time AS TIMESTAMPTZ)) FROM {source} WHERE label IS NOT NULL"
        ).fetchall()[0][0]
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


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
    model_versions: dict[str, str | None] = field(default_factory=dict)  # path → the model that answered most
    source: str = ""  # the SQL reading the window's shadow files (``read_parquet(...)``) and its WHERE clause
    filtered: str = ""
    non_finite: dict[str, int] = field(default_factory=dict)  # side ("batch", "live") → NaN or ±inf scores dropped
    table: pa.Table | None = None  # table ``s`` as registered (Arrow), for `fork`; `load` always sets it
    paths: tuple[str, ...] = ()  # the window's shadow files, in time order
    invalid_labels: int = 0  # label values that cannot be the use case's label, left out (`_labels_table`)
    out_of_range: dict[str, int] = field(default_factory=dict)  # side → a binary use case's scores outside [0, 1]
    pair: Pair = "batch_live"  # the two sides of table ``s`` (`load`'s ``pair``)

    def fork(self) -> Rows:
        """These rows on a connection of their own: a cursor of the same database with table ``s`` registered on
        it (not the temporary tables, which are the first connection's), for queries over ``s`` on another thread
        (a connection runs one query at a time). The caller closes its ``con``."""
        assert self.table is not None, "Rows from `load` keep their table"
        con = self.con.cursor()
        con.execute("SET TimeZone = 'UTC'")
        con.register("s", self.table)
        return replace(self, con=con)

    @property
    def files_sql(self) -> str:
        """The window's shadow files as a SQL list literal."""
        return _literal(list(self.paths))

    def served_latency(self, side: Literal["batch", "live"]) -> str:
        """A SQL condition over table ``s``: the row's latency of `side` (``batch_ms`` or ``online_ms``) was measured
        by the serving worker on the request, as the request waited for it (`ON_REQUEST_PATH`). Otherwise it is the
        shadow comparison's: a background call at idle priority over the entities of several requests, which says
        how long that call took, not how long anyone would wait for an answer."""
        codes = ON_REQUEST_PATH[self.pair][side]
        return f"served IN ({', '.join(str(SERVED.index(code)) for code in codes)})" if codes else "FALSE"

    @property
    def key_columns(self) -> str:
        """``k_<name>, ...``: the entity key columns of table ``s``."""
        return ", ".join(f"k_{name}" for name in self.keys)


def sql_string(text: str) -> str:
    """`text` as a DuckDB string literal (a file path: never user SQL)."""
    return "'" + text.replace("'", "''") + "'"


def _literal(files: list[str]) -> str:
    return "[" + ", ".join(sql_string(f) for f in files) + "]"


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _key_type(kind: str) -> str:
    return "BIGINT" if kind == "int" else "VARCHAR"


def _by_id(usecase: UseCase) -> str | None:
    """The context key of a request's id, when labels name requests by id (``label.from_event.request_field``)."""
    by_reference = usecase.label.from_event
    return None if by_reference is None else by_reference.request_field


def _labels_table(con: duckdb.DuckDBPyConnection, usecase: UseCase, files: list[str]) -> int:
    """Table ``labels(e, event_time, label)``: only what the join needs, the join key as a 64-bit hash (of the
    entity, or of the id the label names). A value that cannot be the use case's label (NaN or ±infinity; for a
    binary label, anything but 0 and 1), or a label without an event time, is left out and counted: returns how
    many. The sink writes none (its events are checked), but a label file another tool wrote may hold them, and they
    would crash the report (NaN) or skew every accuracy metric (a binary label of 2)."""
    if not files:
        con.execute(
            "CREATE TEMP TABLE labels AS SELECT CAST(NULL AS UBIGINT) AS e, CAST(NULL AS TIMESTAMPTZ) AS event_time, "
            "CAST(NULL AS DOUBLE) AS label LIMIT 0"
        )
        return 0
    casts = ", ".join(f"CAST(key_{k.name} AS {_key_type(k.type)})" for k in usecase.entity.keys)
    joined = "hash(ref)" if _by_id(usecase) else f"hash({casts})"
    source = f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)"
    con.execute(
        f"CREATE TEMP TABLE labels AS SELECT {joined} AS e, CAST(event_time AS TIMESTAMPTZ) AS event_time, "
        f"CAST(label AS DOUBLE) AS label FROM {source} WHERE label IS NOT NULL"
    )
    valid = "isfinite(label) AND event_time IS NOT NULL" + (
        " AND label IN (0, 1)" if usecase.label.kind == "binary" else ""
    )
    invalid = int(con.execute(f"SELECT count(*) FROM labels WHERE NOT ({valid})").fetchall()[0][0])
    if invalid:
        con.execute(f"DELETE FROM labels WHERE NOT ({valid})")
    return invalid


def _watermark(con: duckdb.DuckDBPyConnection, labels_root: Path, reading: list[str]) -> datetime | None:
    """How far the labels are known: the newest label in any label file (`newest_label`) or the newest event time
    the label sink recorded having read (migrate/label_progress.py: events that labelled nothing count), whichever
    is later; but never past the progress of a partition the sink had read less far than its end
    (`progress_bound`): that partition may still hold a label for an earlier window. The label files it reads are
    added to `reading`."""
    newest = newest_label(con, labels_root, reading)
    read, bound = progress_and_bound(labels_root)
    known = read if newest is None or (read is not None and read > newest) else newest
    return known if known is None or bound is None else min(known, bound)


_EPOCH_US = "epoch_us(CAST(request_time AS TIMESTAMPTZ))"
# The hour (UTC) a request falls in: its time floored to a multiple of an hour in integer microseconds, what
# date_trunc('hour', ...) gives in UTC without its time-zone calendar (which cost ~0.7 s of CPU per 10M rows).
HOUR_SQL = f"make_timestamptz({_EPOCH_US} - (({_EPOCH_US} % 3600000000) + 3600000000) % 3600000000)"


def row_id_sql(usecase: UseCase) -> str:
    """The SQL of a shadow row's id ``h`` over the Parquet columns: a 64-bit hash of request id and entity key."""
    typed = ", ".join(f"CAST(key_{k.name} AS {_key_type(k.type)})" for k in usecase.entity.keys)
    return f"hash(request_id, {typed})"


SERVED = ("batch", "online", "batch_fallback")
# Which served sources' rows had each side computed by the serving worker, on the request (the rest were computed by
# the shadow comparison). A request's entities routed online were asked of the online path by the worker, answered
# by it (online) or by the lookup table after it failed (batch_fallback, the lookup read on the request too); the
# others were read from the lookup table (batch), and at stage online the lookup row is read by the comparison. The
# candidate is never asked on the request in a paired row (the rows it served as a canary are not paired).
ON_REQUEST_PATH: dict[str, dict[str, tuple[str, ...]]] = {
    "batch_live": {"batch": ("batch", "batch_fallback"), "live": ("online", "batch_fallback")},
    "live_candidate": {"batch": ("online", "batch_fallback"), "live": ()},
}
BACKTEST_STAGE = "backtest"  # the stage of a backtest's records (`migrate backtest`): answers from history
LABEL_STATES = ("labeled", "unlabeled", "pending")
VERSION_SAMPLE = 200_000  # the models that answered most are counted over at most this many rows


Pair = Literal["batch_live", "live_candidate"]
# The columns of table ``s``'s two sides: (b)atch and (o)nline, or the live model and the candidate.
_SIDES: dict[str, str] = {
    "batch_live": """batch_prediction AS bp, coalesce(batch_miss, FALSE) AS miss, batch_data_age_s AS batch_age,
               batch_latency_ms AS batch_ms, batch_error IS NOT NULL AS batch_err,
               online_prediction AS op, online_latency_ms AS online_ms, online_error IS NOT NULL AS online_err,""",
    "live_candidate": """online_prediction AS bp, FALSE AS miss, CAST(NULL AS DOUBLE) AS batch_age,
               online_latency_ms AS batch_ms, online_error IS NOT NULL AS batch_err,
               candidate_prediction AS op, candidate_latency_ms AS online_ms,
               candidate_error IS NOT NULL AS online_err,""",
}
_VERSIONS = {
    "batch_live": ("batch_model_version", "online_model_version"),
    "live_candidate": ("online_model_version", "candidate_model_version"),
}


# The columns a comparison reads of a shadow-log file and the kind of value each holds (as the sink writes them).
_SHADOW_TEXT = (
    "served_source",
    "stage",
    "batch_error",
    "online_error",
    "candidate_error",
    "batch_model_version",
    "online_model_version",
    "candidate_model_version",
    "context",
    "online_feature_ages_s",
    "online_features",
)
_SHADOW_NUMBERS = (
    "batch_prediction",
    "online_prediction",
    "candidate_prediction",
    "batch_data_age_s",
    "batch_latency_ms",
    "online_latency_ms",
    "candidate_latency_ms",
    "sample_percent",
)
_INTEGERS = frozenset(
    ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
)
_NEWEST_COLUMNS = {"event_time": "timestamp", "label": "number"}  # what `newest_label` reads
_KINDS = {
    "integer": "an integer",
    "number": "a number",
    "timestamp": "a timestamp",
    "text": "text",
    "boolean": "a boolean",
}


def _fits(duckdb_type: str, kind: str) -> bool:
    """Whether a Parquet column DuckDB reads as `duckdb_type` holds `kind` values (a column of nulls holds any)."""
    if duckdb_type == '"NULL"':
        return True
    if kind == "integer":
        return duckdb_type in _INTEGERS
    if kind == "number":
        return duckdb_type in _INTEGERS or duckdb_type in ("FLOAT", "DOUBLE") or duckdb_type.startswith("DECIMAL")
    if kind == "timestamp":
        return duckdb_type.startswith("TIMESTAMP")
    return duckdb_type == ("BOOLEAN" if kind == "boolean" else "VARCHAR")


def _key_columns(usecase: UseCase) -> dict[str, str]:
    return {f"key_{k.name}": "integer" if k.type == "int" else "text" for k in usecase.entity.keys}


def _shadow_columns(usecase: UseCase) -> dict[str, str]:
    return {
        "request_id": "text",
        "request_time": "timestamp",
        **_key_columns(usecase),
        **dict.fromkeys(_SHADOW_TEXT, "text"),
        **dict.fromkeys(_SHADOW_NUMBERS, "number"),
        "batch_miss": "boolean",
        "lookup_version": "integer",
    }


def _label_columns(usecase: UseCase) -> dict[str, str]:
    return {**_NEWEST_COLUMNS, **({"ref": "text"} if _by_id(usecase) else _key_columns(usecase))}


def _top_level(schema: list[tuple[str, int | None, str]]) -> dict[str, str]:
    """A file's top-level columns and their DuckDB types from its `parquet_schema` rows (name, children, type),
    in order after the root: a nested column's children follow it, depth first, and are skipped."""
    columns: dict[str, str] = {}
    left: list[int] = []  # children still to come at each open nesting level
    for name, children, kind in schema:
        if not left:
            columns[name] = kind
        else:
            left[-1] -= 1
        if children:
            left.append(children)
        while left and left[-1] == 0:
            left.pop()
    return columns


def wrong_columns(files: Sequence[str], expected: dict[str, str], required: Collection[str]) -> tuple[str, str] | None:
    """The first of `files` whose footer lacks a `required` column or holds one of `expected`'s columns with
    values of another kind (text where a number is read, say), and what is wrong; None when every file fits. Only
    the footers are read. Another writer's file of the wrong shape would otherwise stop DuckDB mid-query with an
    error naming no file ("Could not convert string 'x' to INT64")."""
    if not files:
        return None
    with duckdb.connect() as con:
        schema = con.execute(
            f"SELECT file_name, name, num_children, duckdb_type FROM parquet_schema({_literal(list(files))}) "
            "ORDER BY file_name, column_id"
        ).fetchall()
    for path, rows in itertools.groupby(schema, key=lambda row: str(row[0])):
        columns = _top_level([(name, children, kind) for _, name, children, kind in list(rows)[1:]])
        missing = sorted(set(required) - columns.keys())
        if missing:
            return path, f"it has no column {missing[0]}"
        for name, kind in expected.items():
            found = columns.get(name)
            if found is not None and not _fits(found, kind):
                return path, f"its column {name} holds {found}, not {_KINDS[kind]}"
    return None


_SHADOW_OPTIONAL = frozenset((*_SHADOW_TEXT, *_SHADOW_NUMBERS, "batch_miss", "lookup_version"))  # not in every log


def _check_columns(
    kind: str, root: Path, files: Sequence[str], expected: dict[str, str], optional: Collection[str] = ()
) -> None:
    """`wrong_columns` of `files` (every expected column but the `optional` ones required) as an
    `UnreadableLogError`."""
    wrong = wrong_columns(files, expected, [name for name in expected if name not in optional])
    if wrong is not None:
        raise UnreadableLogError(
            f"a {kind} file under {root} cannot be read: {wrong[0]}: {wrong[1]}",
            fix="move that file out of the folder and run again (its rows are then left out); the sink writes these "
            "columns with these types, so it was written by another tool",
        )


def _checked_files(
    usecase: UseCase, shadow_root: Path, labels_root: Path, files: list[str], window: Window, *, reading: list[str]
) -> list[str]:
    """The label files the window's shadow `files` need (their requests' span and the label delay after it), added
    with `files` to `reading` (`readable`'s list), and both sets' columns checked (`wrong_columns`)."""
    labels = label_files(labels_root, requests_span(files, window), parse_duration(usecase.label.available_after))
    reading.extend([*files, *labels])
    _check_columns("shadow-log", shadow_root, files, _shadow_columns(usecase), _SHADOW_OPTIONAL)
    _check_columns("label", labels_root, labels, _label_columns(usecase))
    return labels


_DAMAGE_FIX = (
    "move that file out of the folder and run again (its rows are then left out); the sink writes each file whole, "
    "so a damaged one was cut short or changed on disk, or written by another tool"
)


def is_file_error(exc: duckdb.Error) -> bool:
    """Whether DuckDB's `exc` can come from a file it reads: a read error, or the bare ``duckdb.Error`` of an
    exception DuckDB did not classify (a damaged page: Thrift's "don't know what type", "Payload value bigger than
    allowed", a dictionary "offset out of range"), whose message names no file."""
    return isinstance(exc, (duckdb.InvalidInputException, duckdb.IOException)) or type(exc) is duckdb.Error


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB's run on with context), or its type's name when empty; a
    character that would not print (a damaged file's byte, in "don't know what type: \\x0f") as its escape."""
    text = str(exc)
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)


def damaged_file(files: Sequence[str]) -> tuple[str, str] | None:
    """The first of `files` that DuckDB cannot read whole (every column of every row, each file alone on a
    connection of its own), with the first line of its error; None when each reads."""
    with duckdb.connect() as con:
        for path in dict.fromkeys(files):
            try:
                con.execute(f"SELECT max(hash(COLUMNS(*))) FROM read_parquet({sql_string(path)})").fetchall()
            except duckdb.Error as exc:
                return path, first_line(exc)
    return None


@contextmanager
def readable(shadow_root: Path, labels_root: Path) -> Iterator[list[str]]:
    """DuckDB's error on a Parquet file of the shadow log or of its labels that cannot be read, as an
    `UnreadableLogError` that names the file; any other error as it was.

    The block adds the files it reads to the list it is given: when DuckDB's error names no file (a damaged page
    inside a file reads as a bare ``duckdb.Error``), each of them is read again alone (`damaged_file`) to find it.
    That second read happens only on such an error."""
    reading: list[str] = []
    try:
        yield reading
    except duckdb.Error as exc:
        if not is_file_error(exc):
            raise
        roots = (("label", labels_root), ("shadow-log", shadow_root))
        for kind, root in roots:
            if str(root) in str(exc):
                raise UnreadableLogError(
                    f"a {kind} file under {root} cannot be read: {first_line(exc)}", fix=_DAMAGE_FIX
                ) from exc
        found = damaged_file(reading)
        if found is None:
            raise
        path, error = found
        kind, root = next(((kind, root) for kind, root in roots if Path(path).is_relative_to(root)), roots[1])
        raise UnreadableLogError(
            f"a {kind} file under {root} cannot be read: {path}: {error} (found by reading each file again: "
            f"DuckDB's error named none: {first_line(exc)})",
            fix=_DAMAGE_FIX,
        ) from exc


def load(
    usecase: UseCase,
    shadow_root: Path,
    labels_root: Path,
    window: Window,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    published: Sequence[tuple[int, datetime]] = (),
    pair: Pair = "batch_live",
) -> Rows:
    """Read the window's shadow rows, de-duplicated and each joined with its label, as table ``s`` of a fresh
    DuckDB connection; the live data ages of (a sample of) them as table ``ages``.

    Table ``s`` keeps what the metrics need, compactly: ``h`` (a 64-bit hash of request id and entity key, which
    identifies a row), the ``k_<key>`` columns, ``served`` (index into ``SERVED``), predictions, batch data age,
    latencies, error flags, ``hour``, ``lv`` (the lookup version that served: the record's ``lookup_version``, or
    for a record without one the newest of `published` (version, published at) at or before its request time; null
    before any), ``sp`` (the share of entities the log sampled, percent), ``label`` and ``label_state``. Table
    ``ages`` holds ``h``, ``hour``, ``answered`` (the live path gave a prediction) and ``online_age`` for the rows
    ``Rows.age_every`` chooses.

    ``pair="live_candidate"`` reads the live model's answers as the ``b`` side and the candidate's (logged beside
    them since `migrate models candidate`) as the ``o`` side, so the same measures compare the two models.

    Raises:
        NoShadowDataError: no shadow file, or no row in the window (with a candidate, for that pair).
        UnreadableLogError: a file of the log or of its labels cannot be read (named by DuckDB, or found by
            reading each file again: `readable`).
    """
    with readable(shadow_root, labels_root) as reading:
        files = shadow_files(shadow_root, window)
        if not files:
            raise NoShadowDataError(
                f"no shadow log for use case {usecase.name!r} in {shadow_root} ({window.describe()})",
                fix=f"serve it at stage shadow (`migrate flags set {usecase.name} --stage shadow --reason …`) and run "
                f"`migrate sink {usecase.name}`; or widen --since/--until",
            )
        labels = _checked_files(usecase, shadow_root, labels_root, files, window, reading=reading)
        con = duckdb.connect(config={"threads": threads} if threads else {})
        con.execute("SET TimeZone = 'UTC'")
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        invalid_labels = _labels_table(con, usecase, labels)
        watermark = _watermark(con, labels_root, reading)
        keys = tuple(usecase.entity.key_names)
        filtered = _window_filter(window)
        typed = [f"CAST(key_{k.name} AS {_key_type(k.type)})" for k in usecase.entity.keys]
        row_id = row_id_sql(usecase)
        served = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(SERVED))
        source = f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)"
        join = _join_key_sql(usecase)
        logged = con.sql(f"SELECT * FROM {source} LIMIT 0").columns
        typed_ages = _typed_ages(con, files, source)
        # Older logs lack the lookup version: the one published last before each request stands in.
        logged_version = "CAST(lookup_version AS BIGINT)" if "lookup_version" in logged else "CAST(NULL AS BIGINT)"
        sides = _SIDES[pair]
        # The share of entities the log sampled (shadow.sample_percent); logs written before it existed hold all.
        sample = "coalesce(sample_percent, 100)" if "sample_percent" in logged else "100"
        if pair == "live_candidate":
            # Entities the candidate served as a canary have no live answer to pair (both columns are the candidate's).
            paired = (
                "candidate_model_version IS NOT NULL AND online_model_version IS DISTINCT FROM candidate_model_version"
            )
            filtered = f"{filtered} {'AND' if filtered else 'WHERE'} {paired}"
            if (
                "candidate_prediction" not in logged
                or not con.execute(f"SELECT count(*) FROM {source} {filtered}").fetchall()[0][0]
            ):
                con.close()
                raise NoShadowDataError(
                    f"the shadow log of use case {usecase.name!r} holds no candidate model's answers "
                    f"({window.describe()})",
                    fix=f"name a candidate (`migrate models candidate {usecase.name} VERSION`) and keep the use case "
                    "at stage shadow, canary or online while it is scored",
                )
        # How many rows the window holds before de-duplication (the files' metadata, without a window): the live ages
        # are sampled for 1 in every_for(rows) of them in the same scan.
        guess = every_for(int(con.execute(f"SELECT count(*) FROM {source} {filtered}").fetchall()[0][0]))
        # Only the columns the metrics use are read (never SELECT *: the JSON columns dominate the files' bytes), and
        # the rows are fetched once as Arrow: the label join then runs on a narrow projection and its result is
        # attached as two more columns, instead of carrying every column through the join's sort.
        table = con.sql(f"""
            SELECT {row_id} AS h, {", ".join(f"{c} AS k_{k}" for c, k in zip(typed, keys, strict=True))}, {join} AS j,
                   CAST(request_time AS TIMESTAMPTZ) AS request_time,
                   CAST(CASE served_source {served} ELSE {len(SERVED)} END AS UTINYINT) AS served,
                   {sides}
                   {_served_version_sql(logged_version, published)} AS lv,
                   {HOUR_SQL} AS hour, CAST({sample} AS FLOAT) AS sp,
                   coalesce(stage = '{BACKTEST_STAGE}', FALSE) AS backtest, {_segment_sql(usecase)} AS seg,
                   {age_columns_sql(usecase, row_id, guess, typed=typed_ages)}
            FROM {source} {filtered}
        """).to_arrow_table()
        read = table.num_rows
        # The sampled rows' ages go to table ages now, so their columns are freed before the de-duplication and the
        # label join.
        con.register("age_rows", table)
        parse_ages(con, usecase, sampled("age_rows", guess))
        con.unregister("age_rows")
        table = table.drop_columns(["answered", *age_columns(usecase)])
        try:
            table = _labeled_once(con, usecase, table, watermark, window)
        except NoShadowDataError:
            con.close()
            raise
        table, non_finite, out_of_range = _valid_scores(table, usecase)
        every = every_for(table.num_rows)
        if every != guess:  # duplicates crossed a multiple of the cap: the rows 1 in `every` picks are read again
            parse_ages(con, usecase, _age_rows(usecase, source, filtered, every, typed=typed_ages))
        elif table.num_rows < read:
            keep_once(con, usecase)
        con.register("s", table)
        # The model versions that answered most, from the first rows read (a window rarely changes models midway,
        # and a full scan of two text columns would cost seconds at ten million rows).
        b_column, o_column = _VERSIONS[pair]
        batch_version, online_version = con.execute(
            f"SELECT mode({b_column}), mode({o_column}) "
            f"FROM (SELECT {b_column}, {o_column} FROM {source} {filtered} LIMIT {VERSION_SAMPLE})"
        ).fetchall()[0]
        versions = {"batch": batch_version, "live": online_version}
        return Rows(
            con,
            usecase,
            window,
            table.num_rows,
            len(files),
            watermark,
            keys,
            every,
            versions,
            source,
            filtered,
            non_finite,
            table,
            tuple(files),
            invalid_labels,
            out_of_range,
            pair,
        )


def _valid_scores(table: pa.Table, usecase: UseCase) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """``table`` with each prediction that cannot be its model's answer made null and its path's call an error, as
    the serving path fails a model that answers one (`ModelOutputError`): NaN or ±inf (a writer other than the sink,
    or a model older serving code did not check), and for a binary use case a score outside [0, 1] (another
    writer's, or a model that is not a classifier's probability: in the metrics it gave a Brier score above any a
    probability can have). How many of each per side. Checked on the loaded rows, not in the Parquet scan: DuckDB
    prunes a filter such as ``isnan(x)`` with Parquet statistics, which leave NaN out. `data_ages.score_sql` is the
    same rule in SQL."""
    non_finite: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    binary = usecase.label.kind == "binary"
    for side, column, error in (("batch", "bp", "batch_err"), ("live", "op", "online_err")):
        values = table.column(column)
        bad = pc.fill_null(pc.invert(pc.is_finite(values)), False)  # a null is no answer already, not a bad one
        non_finite[side] = int(pc.sum(bad).as_py() or 0)
        out_of_range[side] = 0
        lowest, highest = pc.min_max(values).values()  # NaN and null left out: one pass in the common case
        if binary and ((lowest.as_py() or 0.0) < 0 or (highest.as_py() or 0.0) > 1):
            outside = pc.fill_null(pc.and_(pc.invert(bad), pc.or_(pc.less(values, 0), pc.greater(values, 1))), False)
            out_of_range[side] = int(pc.sum(outside).as_py() or 0)
            bad = pc.or_(bad, outside)
        if non_finite[side] or out_of_range[side]:
            nulls = pa.nulls(len(values), values.type)
            table = table.set_column(table.schema.get_field_index(column), column, pc.if_else(bad, nulls, values))
            flagged = pc.or_(table.column(error), bad)
            table = table.set_column(table.schema.get_field_index(error), error, flagged)
    return table, non_finite, out_of_range


def _typed_ages(con: duckdb.DuckDBPyConnection, files: list[str], source: str) -> tuple[str, ...] | None:
    """The fields of the typed ages struct (`TYPED_AGES`, written by the sink since it was added) when every file
    has it: the comparison then reads them instead of parsing the JSON column. A window that holds an older file
    reads the JSON of every file (the one column every shadow log has), so old and new logs give the same numbers.
    Only the files' footers are read."""
    having = con.execute(
        f"SELECT count(DISTINCT file_name) FROM parquet_schema({_literal(files)}) WHERE name = '{TYPED_AGES}'"
    ).fetchall()[0][0]
    if int(having) != len(set(files)):
        return None
    kind = con.sql(f"SELECT {TYPED_AGES} FROM {source} LIMIT 0").types[0]
    return tuple(name for name, _ in kind.children) if kind.id == "struct" else None


def _segment_sql(usecase: UseCase) -> str:
    """The row's value of ``cutover_policy.segment`` when it is a context value (text), else NULL: a key segment is
    read from its ``k_<key>`` column."""
    segment = usecase.cutover_policy.segment
    if segment is None or segment in usecase.entity.key_names:
        return "CAST(NULL AS VARCHAR)"
    return f"json_extract_string(context, '$.{segment}')"


def _window_filter(window: Window) -> str:
    where = []
    if window.since is not None:
        where.append(f"request_time >= {_timestamp(window.since)}")
    if window.until is not None:
        where.append(f"request_time < {_timestamp(window.until)}")
    return f"WHERE {' AND '.join(where)}" if where else ""


def _join_key_sql(usecase: UseCase) -> str:
    """The label join key of a shadow row: a hash of the entity, or of the id the request carried in its context
    (labels that name requests, ``label.from_event.request_field``)."""
    request_field = _by_id(usecase)
    if request_field:
        return f"hash(json_extract_string(context, '$.{request_field}'))"
    return f"hash({', '.join(f'CAST(key_{k.name} AS {_key_type(k.type)})' for k in usecase.entity.keys)})"


_CONTEXT_TYPES = {"float": "DOUBLE", "int": "BIGINT", "bool": "BOOLEAN", "str": "VARCHAR"}


@dataclass(frozen=True)
class LoggedRequests:
    """The logged requests of a window, one row per entity of a request, each with its label (``migrate spine``)."""

    table: pa.Table  # the entity keys, request_time (UTC), request_id, each declared context value, the label
    labeled: int
    unlabeled: int  # the label window closed without a label (and no ``otherwise`` stands in)
    pending: int  # the label window is still open at the label watermark
    duplicates: int  # records delivered twice (a producer retry), kept once
    label_watermark: datetime | None
    invalid_labels: int  # label values that cannot be the use case's label (NaN, a binary label of 2), left out


def logged_requests(usecase: UseCase, shadow_root: Path, labels_root: Path, window: Window) -> LoggedRequests:
    """The requests the service logged in `window`, each joined with its label exactly as the comparison joins it
    (same label files, same windows, same ``otherwise``), with the context values they were sent with, typed as
    the use case declares them. Only labeled rows are in the table; the others are counted.

    Raises:
        NoShadowDataError: no shadow file, or no row in the window.
        UnreadableLogError: a file of the log or of its labels cannot be read (named by DuckDB, or found by
            reading each file again: `readable`).
    """
    files = shadow_files(shadow_root, window)
    if not files:
        raise NoShadowDataError(
            f"no shadow log for use case {usecase.name!r} in {shadow_root} ({window.describe()})",
            fix=f"serve it at stage shadow and run `migrate sink {usecase.name}`; or widen --since/--until",
        )
    source = f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)"
    typed = [f"CAST(key_{k.name} AS {_key_type(k.type)}) AS {k.name}" for k in usecase.entity.keys]
    context = [
        f"CAST(json_extract_string(context, '$.{c.name}') AS {_CONTEXT_TYPES[c.type]}) AS {c.name}"
        for c in usecase.context
    ]
    with readable(shadow_root, labels_root) as reading, duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        labels = _checked_files(usecase, shadow_root, labels_root, files, window, reading=reading)
        invalid_labels = _labels_table(con, usecase, labels)
        watermark = _watermark(con, labels_root, reading)
        table = con.sql(f"""
            SELECT {row_id_sql(usecase)} AS h, {_join_key_sql(usecase)} AS j, {", ".join(typed)},
                   CAST(request_time AS TIMESTAMPTZ) AS request_time, request_id{"".join(", " + c for c in context)}
            FROM {source} {_window_filter(window)}
            ORDER BY request_time, request_id
        """).to_arrow_table()
        read = table.num_rows
        table = _labeled_once(con, usecase, table, watermark, window)
    states = table.column("label_state").combine_chunks().indices.to_numpy(zero_copy_only=False)
    counts = np.bincount(states, minlength=len(LABEL_STATES))
    kept = table.filter(pa.array(states == 0)).drop_columns(["h", "j", "label_state"])
    kept = kept.rename_columns([usecase.label.name if c == "label" else c for c in kept.column_names])
    return LoggedRequests(
        kept, int(counts[0]), int(counts[1]), int(counts[2]), read - int(counts.sum()), watermark, invalid_labels
    )


def _served_version_sql(logged: str, published: Sequence[tuple[int, datetime]]) -> str:
    """The SQL of column ``lv``: the `logged` version, or when it is null the version published last at or before
    the request (a record written before the shadow log carried versions, or a request whose every entity missed
    with no row read); null before any. Evaluated in the scan: the newest version first, so most rows stop at the
    first branch."""
    if not published:
        return logged
    timeline = sorted((when, version) for version, when in published)
    branches = " ".join(
        f"WHEN {_EPOCH_US} >= {int(when.timestamp() * 1_000_000)} THEN CAST({int(version)} AS BIGINT)"
        for when, version in reversed(timeline)
    )
    return f"coalesce({logged}, CASE {branches} END)"


def _labeled_window(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, table: pa.Table, watermark: datetime | None, window: Window
) -> pa.Table:
    """The window's rows with ``label`` and ``label_state``: the use case's label join (of each row alone).

    Raises:
        NoShadowDataError: no row in the window.
    """
    if table.num_rows == 0:
        raise NoShadowDataError(
            f"the shadow log of use case {usecase.name!r} has no request in {window.describe()}",
            fix="widen --since/--until, or wait for traffic at stage shadow",
        )
    delay_us = int(parse_duration(usecase.label.available_after).total_seconds() * 1_000_000)
    by_reference = usecase.label.from_event
    otherwise = None if by_reference is None else by_reference.otherwise
    return _labeled(con, table, delay_us, watermark, otherwise=otherwise)


def _first_positions(h: pa.ChunkedArray) -> npt.NDArray[np.int64] | None:
    """The position of each row id's first row, in order; None when no id repeats (the usual case: one sort)."""
    ids = h.to_numpy()
    ordered = np.sort(ids)
    if not bool((ordered[1:] == ordered[:-1]).any()):
        return None
    _, first = np.unique(ids, return_index=True)
    return np.sort(first)


def _labeled_once(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, table: pa.Table, watermark: datetime | None, window: Window
) -> pa.Table:
    """`_labeled_window` of ``table`` with each row id ``h`` kept once, at its first position (a producer retry
    delivers a record twice; a request id names one request of several entities, hence the entity key in ``h``).

    The de-duplication's sort (numpy, one core) runs on a thread while DuckDB joins the labels to every row, and
    the repeats are dropped from the result: a row's label depends on that row alone, so labeling first and
    dropping after gives the same rows as the other way round, and the two overlap.

    Raises:
        NoShadowDataError: no row in the window.
    """
    first = in_background("comparisons-dedup", _first_positions, table.column("h"))
    labeled = _labeled_window(con, usecase, table, watermark, window)
    positions = first.result()
    return labeled if positions is None else labeled.take(pa.array(positions))


def _labeled(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    delay_us: int,
    watermark: datetime | None,
    *,
    otherwise: float | None = None,
) -> pa.Table:
    """``table`` with ``label`` and ``label_state`` (see the module docstring) appended.

    The ASOF join runs on (position, entity hash, request time) of the closed rows only: one integer equality
    key sorts far faster than the key columns (a 64-bit collision between two entities is negligible at these
    sizes), and the narrow input keeps the join's sort small. Its result lands back by position. The label
    window's end is compared in integer microseconds (``epoch_us``): ``request_time + INTERVAL`` on a TIMESTAMPTZ
    goes through DuckDB's time-zone calendar, which cost ~1.5-2 s of CPU per 10M rows (in the filter and at the
    window's end).
    """
    n = table.num_rows
    times = table.column("request_time").combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
    due = None if watermark is None else (watermark - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    closed = np.zeros(n, dtype=bool) if due is None else times + delay_us <= due
    label = np.zeros(n, dtype=np.float64)
    found = np.zeros(n, dtype=bool)
    if closed.any():
        # Every row goes in (Arrow columns, no copy) and the filter runs in DuckDB, before the join's sort.
        columns = ["request_time", "j"]
        probe = pa.table([pa.array(np.arange(n)), *(table.column(c) for c in columns)], names=["i", *columns])
        con.register("label_probe", probe)
        assert due is not None
        ends = f"epoch_us(request_time) + {delay_us}"
        matched = con.execute(f"""
            SELECT i, label FROM (
                SELECT r.i, {ends} AS due, epoch_us(l.event_time) AS event_us, l.label
                FROM (SELECT * FROM label_probe WHERE {ends} <= {due}) r
                ASOF JOIN labels l ON r.j = l.e AND r.request_time < l.event_time
            ) WHERE event_us <= due
        """).fetchnumpy()
        con.unregister("label_probe")
        index = np.asarray(matched["i"], dtype=np.int64)
        label[index] = np.asarray(matched["label"], dtype=np.float64)
        found[index] = True
    if otherwise is not None:  # a closed window without the label event: the label it stands for
        label[closed & ~found] = otherwise
        found |= closed
    # int8 scalars keep every intermediate int8: Python ints made two int64 arrays first (~0.4 s of CPU per 10M rows).
    states = np.where(found, np.int8(0), np.where(closed, np.int8(1), np.int8(2)))
    state = pa.DictionaryArray.from_arrays(pa.array(states), pa.array(LABEL_STATES))
    return table.append_column("label", pa.array(label, mask=~found)).append_column("label_state", state)


def _age_rows(usecase: UseCase, source: str, filtered: str, every: int, *, typed: tuple[str, ...] | None) -> str:
    """The rows `parse_ages` reads, read again from the files: those whose ``h`` is 0 modulo `every`, each once."""
    row_id = row_id_sql(usecase)
    sample = f"{row_id} % {every} = 0"
    condition = f"{filtered} AND {sample}" if filtered else f"WHERE {sample}"
    columns = "".join(f", any_value({name}) AS {name}" for name in ["answered", *age_columns(usecase)])
    return f"""(
        SELECT h, any_value(hour) AS hour{columns}
        FROM (
            SELECT {row_id} AS h, {HOUR_SQL} AS hour, {age_columns_sql(usecase, row_id, 1, typed=typed)}
            FROM {source} {condition}
        ) GROUP BY h
    )"""
