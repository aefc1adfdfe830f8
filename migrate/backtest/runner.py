"""A backtest: what the batch path and the online path would have answered to past requests, before any live
traffic, written in the shadow log's format so `migrate gate` and `migrate report` judge it unchanged.

For each night of the range the batch path runs as the DAG does (`migrate.batch.steps.run_batch`, the pinned
batch model, a lookup store of the backtest's own), and each request is answered from the version that was live
at its instant (the latest night at or before it; no row is a miss). The online path's answer is the online
model's score (`migrate.scoring`) of the features as of the request's instant: the batch features strictly before
it and every window over the events strictly before it (`migrate.feature_windows`, the serving code), with the
context the request carried. Labels come from the event history through the sink's own labeler.

Everything lives in ``<state_dir>/backtests/<usecase>/``: the pinned models, the lookup versions of each night
(also kept as Parquet), ``shadow/`` and ``labels/``. It resumes: a night already scored and a day already written
are not redone.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from croniter import croniter
from pydantic import SecretStr

from comparisons.shadow_rows import BACKTEST_STAGE
from lookup_tables import TableSpec, close_lookup_stores, open_lookup_store
from migrate.artifact import ArtifactStore
from migrate.batch.event_history import (
    RealtimeHistory,
    history_around,
    iter_events,
    refused_events,
    servable_rows,
)
from migrate.batch.offline_store import batch_features_at, open_offline, prediction_requests
from migrate.batch.offline_zone import localize
from migrate.batch.schedule import interval_ending
from migrate.batch.steps import Interval, run_batch
from migrate.errors import BacktestError
from migrate.feature_windows import groups_of
from migrate.label_progress import write_progress
from migrate.realtime_schema import MAIN_STREAM
from migrate.scoring import load_model
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.shadow.parquet import label_table, shadow_table, write_durably
from online.shadow.record import ShadowRecord
from online.stream.event_schema import encode_event
from online.stream.label_topic import LabelRecord
from online.stream.labels_from_events import NoLabel, event_labeler

__all__ = [
    "BacktestResult",
    "backtest_settings",
    "check_span",
    "history_labels",
    "label_stream",
    "pin_models",
    "run_backtest",
]


def check_span(what: str, start: datetime, until: datetime) -> None:
    """Refuse a range that ends before it starts (a backtest's, a rehearsal's)."""
    if until <= start:
        raise BacktestError(
            f"the {what} ends ({until.isoformat()}) before it starts ({start.isoformat()})",
            fix="pass --until after --from",
        )


def backtest_settings(settings: Settings, usecase: UseCase) -> Settings:
    """The settings a backtest runs under: its own state dir (pinned models, lookup store, shadow log, labels)
    beside the project's, reading the project's offline store."""
    state = settings.state_dir / "backtests" / usecase.name
    # The backtest's lookup versions are its own scratch, never the live store's: an explicit SQLite file, not a
    # stand-in (so the production profile allows it).
    return settings.model_copy(
        update={
            "state_dir": state,
            "offline_store": settings.offline_store_path,
            "sql_url": SecretStr(f"sqlite:///{state / 'lookup.db'}"),
        }
    )


@dataclass
class BacktestResult:
    """What one backtest wrote."""

    settings: Settings  # open `migrate gate --backtest` on these
    nights: int = 0  # lookup versions published (or reused on a resume)
    requests: int = 0  # shadow rows written by this run
    skipped_days: int = 0  # days already written by an earlier run
    batch_misses: int = 0  # requests whose entity had no row in the live version (or no version yet)
    labels: int = 0
    # Events of the label stream's history its schema refuses (a key or the label's reference of the wrong type, a
    # null key): no label, as the label sink would dead-letter them, counted instead.
    invalid_label_events: int = 0
    # Events of the streams feeding the real-time features that the stream processor would refuse (a null key, time
    # or id; NaN or infinity; an empty string): left out of the online path's windows, as the stream dead-letters
    # them (`migrate.batch.event_history.refused_events`), counted per stream.
    refused_feature_events: dict[str, int] = field(default_factory=dict)
    # Past requests whose context serving refuses (a value outside its declared bounds, a required one missing): a
    # 422 online, so neither path answers them here (`migrate.batch.event_history.servable_rows`).
    refused_requests: int = 0
    models: dict[str, str] = field(default_factory=dict)  # role → version


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def pin_models(settings: Settings, bt: Settings, usecase: UseCase, start: datetime) -> dict[str, str]:
    """Copy the use case's artifacts into the backtest once (a resume keeps the first run's models) and refuse a
    model trained on data after the backtest starts: it would be judged on what it learned from."""
    source, target = settings.artifacts_dir / usecase.name, bt.artifacts_dir / usecase.name
    if not target.exists():
        if not source.exists():
            raise BacktestError(
                f"use case {usecase.name!r} has no trained model in {source}",
                fix=f"train both models on data before the backtest starts: `migrate train {usecase.name} --as-of "
                f"{start:%Y-%m-%d}`, and again with --online",
            )
        shutil.copytree(source, target)
    store = ArtifactStore(bt.artifacts_dir, bt.project_dir)
    versions = {}
    for role in ("batch", "online"):
        _, _, info = store.resolve(usecase, role)
        if info is None:
            continue
        if info.trained_as_of > start:
            raise BacktestError(
                f"the {role} model {info.version} of {usecase.name!r} was trained on data up to "
                f"{info.trained_as_of.isoformat()}, after the backtest starts ({start.isoformat()}): it would be "
                "scored on data it learned from",
                fix=f"train it with --as-of at or before {start:%Y-%m-%d} (or start the backtest at "
                f"{info.trained_as_of:%Y-%m-%d}); delete {target} to pin newly trained models",
            )
        versions[role] = info.version
    if "online" not in versions:
        raise BacktestError(
            f"use case {usecase.name!r} has no online model to backtest",
            fix=f"`migrate train {usecase.name} --online --as-of {start:%Y-%m-%d}`, then delete {target} and re-run",
        )
    return versions


def _nights(usecase: UseCase, start: datetime, until: datetime) -> list[Interval]:
    """Every batch interval whose version is live at some instant of [start, until): the one live at `start`
    (the latest tick at or before it), then each tick before `until`."""
    first = interval_ending(usecase.batch.schedule, start)
    intervals = [first]
    ticks = croniter(usecase.batch.schedule, first.end)
    while (tick := ticks.get_next(datetime).astimezone(UTC)) < until:
        intervals.append(Interval(intervals[-1].end, tick))
    return intervals


def _run_nights(bt: Settings, usecase: UseCase, nights: list[Interval], progress: Progress | None) -> pa.Table:
    """Run the batch path for each night (reused when done before) and return every version's rows with the
    instant it went live: keys, ``prediction``, ``live_from``, ``version``, ``model_version``."""
    folder = bt.state_dir / "versions"
    folder.mkdir(parents=True, exist_ok=True)
    spec = TableSpec.for_usecase(usecase, bt)
    parts = []
    try:
        for done, interval in enumerate(nights):
            path = folder / f"{interval.key}.parquet"
            if not path.exists():
                result = run_batch(usecase, bt, interval, f"backtest__{interval.key}", workers=1)
                store = open_lookup_store(bt)
                info = next(v for v in store.versions(spec) if v.version == result.version)
                rows = store.export(spec, result.version)
                n = rows.num_rows
                rows = rows.append_column("live_from", pa.array([interval.end] * n, pa.timestamp("us", tz="UTC")))
                rows = rows.append_column("version", pa.array([result.version] * n, pa.int64()))
                rows = rows.append_column("model_version", pa.array([info.model_version] * n, pa.string()))
                tmp = path.with_suffix(".tmp")
                pq.write_table(rows, tmp)
                tmp.replace(path)
            parts.append(pq.read_table(path))
            if progress is not None:
                progress("nightly batch runs", done + 1, len(nights))
    finally:
        close_lookup_stores()
    return pa.concat_tables(parts)


def _batch_answers(usecase: UseCase, requests: pa.Table, versions: pa.Table) -> pa.Table:
    """Per request, in order: the live version's ``prediction`` (null: a miss), ``version``, ``model_version`` and
    ``live_from`` (the version's data cutoff) — the latest night at or before the request, as serving reads it."""
    keys = usecase.entity.key_names
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        probe = pa.table(
            [*(requests.column(k) for k in keys), requests.column("prediction_time"), pa.array(range(len(requests)))],
            names=[*keys, "at", "_row"],
        )
        con.register("probe", probe)
        con.register("versions", versions)
        # Which version was live: the newest night at or before the request (nights are few: an ASOF on time).
        con.execute(
            "CREATE TEMP TABLE live AS SELECT _row, n.version, n.live_from, n.model_version FROM probe ASOF LEFT JOIN "
            "(SELECT DISTINCT version, live_from, model_version FROM versions) n ON probe.at >= n.live_from"
        )
        on = " AND ".join(f"v.{k} = p.{k}" for k in keys)
        answered = con.sql(f"""
            SELECT l._row, v.prediction, l.version, l.live_from, l.model_version
            FROM live l JOIN probe p USING (_row)
            LEFT JOIN versions v ON {on} AND v.version = l.version
            ORDER BY l._row""").to_arrow_table()
    return answered


def _event_ages(con: duckdb.DuckDBPyConnection, usecase: UseCase, requests: pa.Table) -> dict[str, list[float | None]]:
    """Per real-time feature, the age at each request of its group key's newest event strictly before it (None:
    no event yet): the age serving logs for the same feature (`online.serving.predictor`)."""
    declared = usecase.realtime_features
    ages: dict[str, list[float | None]] = {}
    if declared is None:
        return ages
    at = requests.column("prediction_time").cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    for group in groups_of(usecase):
        if not group.spec.features or any(k not in requests.column_names for k in group.key):
            continue
        table, time_column, _ = declared.source(group.stream)
        probe = pa.table(
            [*(requests.column(k) for k in group.key), at, pa.array(range(len(requests)), pa.int64())],
            names=[*group.key, "_at", "_row"],
        )
        on = " AND ".join(f'p."{k}" = e."{k}"' for k in group.key)
        keys = ", ".join(f'"{k}"' for k in group.key)
        con.register("_probe", probe)
        try:
            newest = con.sql(f"""
                SELECT p._row, epoch_us(p._at) - epoch_us(e._t) AS age_us FROM _probe p
                ASOF LEFT JOIN (SELECT {keys}, CAST("{time_column}" AS TIMESTAMP) AS _t FROM "{table}") e
                ON {on} AND p._at > e._t ORDER BY p._row
            """).fetchall()
        finally:
            con.unregister("_probe")
        column = [None if age is None else age / 1e6 for _, age in newest]
        for name in group.spec.names:
            ages[name] = column
    return ages


_Online = tuple[
    np.ndarray[Any, np.dtype[np.float64]],
    np.ndarray[Any, np.dtype[np.float64]],
    pa.Table,
    str,
    dict[str, list[float | None]],
]


def _online_scores(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, bt: Settings, requests: pa.Table, history: RealtimeHistory
) -> _Online:
    """The online model's scores of the requests, its input matrix, the batch-featured requests, its version and
    each real-time feature's age per request; `history` holds the events before the range's end."""
    model = load_model(usecase, ArtifactStore(bt.artifacts_dir, bt.project_dir), "online")
    featured = batch_features_at(con, usecase, requests)
    windows = history.features(requests)
    columns: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for name in usecase.feature_names:
        columns[name] = np.asarray(featured.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    for index, name in enumerate(usecase.realtime_feature_names):
        columns[name] = windows[:, index]
    for name in usecase.context_names:
        values = requests.column(name) if name in requests.column_names else pa.nulls(len(requests))
        columns[name] = np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    matrix = np.column_stack([columns[n] for n in model.feature_names]) if len(requests) else np.empty((0, 0))
    scores = model.score(matrix) if len(requests) else np.empty(0)
    return np.asarray(scores, dtype=np.float64), matrix, featured, model.version, _event_ages(con, usecase, requests)


def _records(
    usecase: UseCase,
    requests: pa.Table,
    batch: pa.Table,
    online: _Online,
) -> list[ShadowRecord]:
    scores, matrix, featured, online_version, event_ages = online
    keys = usecase.entity.key_names
    context = [c.name for c in usecase.context if c.name in requests.column_names and c.name not in keys]
    names = list(usecase.online_feature_names)
    out = []
    columns = {c: requests.column(c).to_pylist() for c in [*keys, "prediction_time", "request_id", *context]}
    as_of = featured.column("features_as_of").to_pylist()
    predicted, live_from, model_version, served_by = (
        batch.column(c).to_pylist() for c in ("prediction", "live_from", "model_version", "version")
    )
    for i in range(len(requests)):
        at: datetime = columns["prediction_time"][i]
        miss = predicted[i] is None
        row = matrix[i]
        features = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, row, strict=True)}
        ages = {} if as_of[i] is None else dict.fromkeys(usecase.feature_names, (at - as_of[i]).total_seconds())
        ages.update({n: column[i] for n, column in event_ages.items() if column[i] is not None})
        out.append(
            ShadowRecord.model_construct(
                schema_version=1,
                request_id=f"{BACKTEST_STAGE}-{columns['request_id'][i]}",
                usecase=usecase.name,
                key={k: columns[k][i] for k in keys},
                request_time=at,
                served_source="batch",
                stage=BACKTEST_STAGE,
                percent=0.0,
                batch_prediction=predicted[i],
                batch_miss=miss,
                batch_data_age_s=None if live_from[i] is None or miss else (at - live_from[i]).total_seconds(),
                batch_model_version=model_version[i],
                lookup_version=served_by[i],
                batch_latency_ms=None,
                batch_error=None,
                online_prediction=float(scores[i]),
                online_feature_ages_s=ages,
                online_features=features,
                online_model_version=online_version,
                online_latency_ms=None,
                online_error=None,
                context={c: columns[c][i] for c in context},
            )
        )
    return out


def _write_by_hour(root: Path, rows: list[Any], moment: Callable[[Any], datetime], kind: str) -> None:
    """Rows in the sink's layout (``date=…/hour=…``), one file per hour named for the backtest: a re-run of the same
    hour replaces its file."""
    build = shadow_table if kind == "shadow" else label_table
    hours: dict[datetime, list[Any]] = {}
    for row in rows:
        hours.setdefault(moment(row).astimezone(UTC).replace(minute=0, second=0, microsecond=0), []).append(row)
    for hour, part in hours.items():
        path = root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / f"part-{BACKTEST_STAGE}-{hour:%Y%m%dT%H}.parquet"
        write_durably(build(part, [-1] * len(part), [*range(len(part))]), path)


def label_stream(usecase: UseCase) -> str:
    """The event stream the use case's labels come from."""
    return usecase.label.from_event.stream if usecase.label.from_event is not None else MAIN_STREAM


def history_labels(
    con: duckdb.DuckDBPyConnection, usecase: UseCase, start: datetime, end: datetime
) -> tuple[list[LabelRecord], datetime | None, int]:
    """The labels the sink would have logged from the event history in [start, end), through its own labeler; the
    newest event time it read (labels or not: the progress the sink records, migrate/label_progress.py); and how
    many events were refused as invalid (the sink dead-letters those): the history's rows the stream's parse refuses
    (`refused_events`, left out of `iter_events`) and those its labeler refuses."""
    labeler = event_labeler(usecase)
    stream = label_stream(usecase)
    labels: list[LabelRecord] = []
    newest: datetime | None = None
    invalid = refused_events(con, usecase, end, start=start, stream=stream)  # left out of `iter_events`: counted
    for event in iter_events(con, usecase, start, end, stream=stream):
        label = labeler(encode_event(event))
        if isinstance(label, LabelRecord):
            labels.append(label)
            moment = label.event_time
        elif isinstance(label, NoLabel):
            moment = label.event_time
        else:
            invalid += 1
            continue
        newest = moment if newest is None or moment > newest else newest
    return labels, newest, invalid


def run_backtest(
    usecase: UseCase,
    settings: Settings,
    start: datetime,
    until: datetime,
    *,
    requests_table: str | None = None,
    time_column: str = "request_time",
    progress: Progress | None = None,
) -> BacktestResult:
    """Answer every past request of [start, until) by both paths and write the backtest's shadow log and labels
    (see the module docstring). Resumes where an earlier run of the same range stopped."""
    check_span("backtest", start, until)
    bt = backtest_settings(settings, usecase)
    bt.ensure_state_dir()
    result = BacktestResult(settings=bt, models=pin_models(settings, bt, usecase, start))
    versions = _run_nights(bt, usecase, _nights(usecase, start, until), progress)
    result.nights = len(versions.column("version").unique())
    done_dir = bt.state_dir / "done"
    done_dir.mkdir(exist_ok=True)
    days = []
    day = start
    while day < until:
        days.append((day, min(until, (day + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0))))
        day = days[-1][1]
    with open_offline(settings.offline_store_path) as con:
        localize(con, usecase)  # its tables' naive times in the use case's offline_time_zone, for every read below
        # The event history up to the range's end, read once: each day is answered from the events strictly before
        # each request, so the later events it holds change nothing (was: the whole history re-read per day).
        history: RealtimeHistory | None = None
        for number, (first, last) in enumerate(days):
            marker = done_dir / f"{first:%Y%m%dT%H%M%S}-{last:%Y%m%dT%H%M%S}"
            if marker.exists():
                result.skipped_days += 1
                continue
            requests = prediction_requests(con, usecase, first, last, table=requests_table, time_column=time_column)
            requests, refused = servable_rows(usecase, requests)
            result.refused_requests += refused
            if len(requests):
                answers = _batch_answers(usecase, requests, versions)
                if history is None:
                    history = RealtimeHistory(con, usecase, until)
                    result.refused_feature_events = history.refused
                online = _online_scores(con, usecase, bt, requests, history)
                records = _records(usecase, requests, answers, online)
                _write_by_hour(bt.shadow_dir / usecase.name, records, lambda r: r.request_time, "shadow")
                result.requests += len(records)
                result.batch_misses += sum(1 for r in records if r.batch_miss)
            marker.touch()
            if progress is not None:
                progress("days answered by both paths", number + 1, len(days))
        horizon = until + parse_duration(usecase.label.available_after)
        labels, read_up_to, invalid_label_events = history_labels(con, usecase, start, horizon)
        if history_around(con, usecase, horizon, stream=label_stream(usecase))[1]:
            # Every event before the horizon was read, and the history goes on after it: the label stream is known
            # up to the horizon, however long before it the last event was (a quiet night before a rare label).
            read_up_to = horizon
    _write_by_hour(bt.labels_dir / usecase.name, labels, lambda r: r.event_time, "labels")
    if read_up_to is not None:
        write_progress(bt.labels_dir / usecase.name, "backtest", read_up_to)
    result.labels = len(labels)
    result.invalid_label_events = invalid_label_events
    if result.requests == 0 and result.skipped_days == 0:
        raise BacktestError(
            f"no past request of {usecase.name!r} in {start.isoformat()} → {until.isoformat()}",
            fix="widen --from/--until to a range the offline store holds, or pass --requests TABLE",
        )
    return result
