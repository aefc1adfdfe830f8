"""Feature skew: the values the live path used against the offline point-in-time values of the same entities at
the same instants, per feature — the training/serving skew check Chronon and Feast users run.

For a fixed hash-chosen sample of the live answers (at most ``SAMPLE``), the offline values come from the code
that builds the online model's training rows: the batch features of the newest row strictly before the request
(`migrate.batch.offline_store.batch_features_at`), every window over the events strictly before it
(`migrate.batch.event_history.realtime_features_at`, the serving window code) and the context values the request
carried. Only the features the answering model logged are compared. Per feature: how often both sides have a
value and they differ (beyond 1e-9 + 1e-6 relative), and how often one side is missing while the other is not.
Without an offline store (or its tables) the check says why.

A real-time value that differs at the request's instant but equals a value its windows held within the grace
before it (``cutover_policy.feature_skew_grace``: at its start, just after any event of the row's keys in it, or
at a bucket boundary in it) is counted apart, as ``behind``: the events of the last moment before the request had
not reached the stream yet. That is the stream's freshness, which the freshness metrics judge, not a different
feature. Found on the flight trial's rehearsal: departures stamped at the request's own minute, published a few
milliseconds before it, made 19.6 % of one window "skewed". A value its windows never held in that span still
counts as skew.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from pydantic import Field

from comparisons.shadow_rows import Rows, sql_string
from comparisons.stats import Result, share
from migrate.batch.event_history import realtime_features_at, states_before
from migrate.batch.offline_store import batch_features_at, open_offline
from migrate.errors import MigrateError
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["SAMPLE", "FeatureSkew", "Skew", "evidence", "measure"]

log = logging.getLogger(__name__)
SAMPLE = 2_000
CLUSTER_ABOVE = 200_000  # rows in the window beyond which the sample comes from `GROUPS` row groups
GROUPS = 24
_TYPES = {"int": pa.int64(), "str": pa.string(), "float": pa.float64(), "bool": pa.bool_()}


class FeatureSkew(Result):
    """One feature: online vs offline point-in-time on the sampled answers."""

    feature: str
    kind: str  # "batch", "real-time" or "context"
    compared: int
    mismatches: int
    mismatch_rate: float | None
    missing_online: int  # offline has a value, online did not
    missing_offline: int  # online had a value, offline has none
    missing_rate: float | None
    behind: int = 0  # off at the request, but a value its windows held within the grace before it: freshness

    @property
    def off(self) -> int:
        """The sampled answers whose value differs or is missing on one side only (those `behind` left out)."""
        return self.mismatches + self.missing_online + self.missing_offline


class Skew(Result):
    """Every feature the online model uses, the most skewed first."""

    available: bool
    reason: str = ""
    sampled: int = 0
    grace_s: float = 0.0  # the freshness grace the real-time values were allowed (`behind`)
    features: list[FeatureSkew] = Field(default_factory=list)


def _differs(online: float, offline: float) -> bool:
    return abs(online - offline) > 1e-9 + 1e-6 * abs(offline)


def _sample(rows: Rows, usecase: UseCase) -> list[dict[str, Any]]:
    """The sampled live answers: keys, request time, context and the features logged with them, the `SAMPLE` with
    the smallest ``_ORDER`` hash (the same rows on every run, in any file order).

    A window of more than `CLUSTER_ABOVE` rows is sampled from at most `GROUPS` of its files' row groups, spread
    evenly over them in time order (a cluster sample): the logged features are one JSON text per row, and reading
    any row of a row group decodes the whole group's column (~3 s of CPU for every row of 10M, against ~0.2 s for
    24 groups). Within the chosen groups the rows are still hash-chosen."""
    keys = ", ".join(f"key_{k}" for k in usecase.entity.key_names)
    columns = f"{keys}, CAST(request_time AS TIMESTAMPTZ) AS request_time, context, online_features AS logged"
    groups = _row_groups(rows)
    if sum(count for _, _, count in groups) <= CLUSTER_ABOVE:
        source = f"SELECT {columns}, {_ORDER} AS x FROM {rows.source} {_answered(rows)}"
    else:
        chosen = [groups[round(i * (len(groups) - 1) / (GROUPS - 1))] for i in range(GROUPS)]
        source = " UNION ALL ".join(
            f"SELECT {columns}, {_ORDER} AS x FROM read_parquet({sql_string(path)}, file_row_number = true) "
            f"{_answered(rows)} AND file_row_number >= {first} AND file_row_number < {first + count}"
            for path, first, count in dict.fromkeys(chosen)
        )
    found = rows.con.execute(f"SELECT * FROM ({source}) ORDER BY x LIMIT {SAMPLE}")
    names = [d[0] for d in found.description]
    return [dict(zip(names, row, strict=True)) for row in found.fetchall()]


def _row_groups(rows: Rows) -> list[tuple[str, int, int]]:
    """Each row group of the window's files, in file order: (file, its first row's number, its rows). Only the
    files' footers are read."""
    found = rows.con.execute(f"""
        SELECT file_name, row_group_id, any_value(row_group_num_rows)
        FROM parquet_metadata({rows.files_sql}) GROUP BY ALL ORDER BY file_name, row_group_id
    """).fetchall()
    out: list[tuple[str, int, int]] = []
    first, previous = 0, None
    for path, _, count in found:
        first = 0 if path != previous else first
        out.append((str(path), first, int(count)))
        first, previous = first + int(count), path
    return out


_ORDER = "hash(request_id, entity_key)"  # the sample's order: the same rows on every run, in any file order


def _answered(rows: Rows) -> str:
    answered = "online_prediction IS NOT NULL"
    return f"{rows.filtered} AND {answered}" if rows.filtered else f"WHERE {answered}"


def _requests(usecase: UseCase, sample: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for key in usecase.entity.keys:
        columns[key.name] = pa.array([row[f"key_{key.name}"] for row in sample], _TYPES[key.type])
    columns["prediction_time"] = pa.array([row["request_time"] for row in sample], pa.timestamp("us", tz="UTC"))
    contexts = [orjson.loads(row["context"] or "{}") for row in sample]
    for context in usecase.context:
        columns[context.name] = pa.array([c.get(context.name) for c in contexts], _TYPES[context.type])
    return pa.table(columns)


Values = dict[str, list[float | None]]
Earlier = dict[str, list[list[float | None]]]


def _offline(
    settings: Settings, usecase: UseCase, requests: pa.Table, grace: timedelta, used: set[str]
) -> tuple[Values, Earlier]:
    """Feature → the offline point-in-time value per request (None: missing); and real-time feature → per request,
    every value its windows held in the `grace` before it (`states_before`; empty without a grace). Only the kinds
    of features in `used` are computed: a batch model serving live needs no event history (nor its table)."""
    values: Values = {}
    earlier: Earlier = {}
    with open_offline(settings.offline_store_path) as con:
        if used & set(usecase.feature_names):
            featured = batch_features_at(con, usecase, requests, few=True)
            for name in usecase.feature_names:
                values[name] = [None if v is None or math.isnan(v) else float(v) for v in featured[name].to_pylist()]
        if used & set(usecase.realtime_feature_names):
            end = max(requests["prediction_time"].to_pylist())
            spine, rows = requests, []
            if grace > timedelta(0):
                found, instants = states_before(con, usecase, requests, grace)
                rows = found.tolist()
                at = requests.take(pa.array(found))
                at = at.set_column(at.column_names.index("prediction_time"), "prediction_time", instants)
                spine = pa.concat_tables([requests, at])
            # One read of the history for both: the requests' instants, then those within the grace before them.
            for name, column in _windows(con, usecase, spine, end).items():
                values[name] = column[: requests.num_rows]
                if rows:
                    earlier[name] = [[] for _ in range(requests.num_rows)]
                    for row, value in zip(rows, column[requests.num_rows :], strict=True):
                        earlier[name][row].append(value)
    for context in usecase.context:
        if context.is_input:
            values[context.name] = [None if v is None else float(v) for v in requests[context.name].to_pylist()]
    return values, earlier


def _windows(con: duckdb.DuckDBPyConnection, usecase: UseCase, requests: pa.Table, end: datetime) -> Values:
    """Real-time feature → its offline value at each request's ``prediction_time`` (None: missing)."""
    windows = realtime_features_at(con, usecase, requests, end)
    return {
        name: [None if math.isnan(v) else float(v) for v in windows[:, index]]
        for index, name in enumerate(usecase.realtime_feature_names)
    }


def _same(used: Any, expected: float | None) -> bool:
    """Whether a logged value and an offline one agree: both missing, or both present and equal."""
    if used is None or expected is None:
        return used is None and expected is None
    return not _differs(float(used), expected)


def measure(rows: Rows, usecase: UseCase, settings: Settings, grace: timedelta | None = None) -> Skew:
    """Online vs offline point-in-time values of every online-model feature on a sample of live answers; `grace`:
    how far behind a request a real-time value may be (default ``cutover_policy.feature_skew_grace``)."""
    grace = usecase.cutover_policy.skew_grace if grace is None else grace
    sample = _sample(rows, usecase)
    if not sample:
        return Skew(available=False, reason="no live answer in the window")
    if not settings.offline_store_path.exists():
        return Skew(available=False, reason=f"no offline store at {settings.offline_store_path}", sampled=len(sample))
    logged = [orjson.loads(row["logged"] or "{}") for row in sample]
    taken = {name for features in logged for name in features}  # what the models that answered take
    try:
        offline, earlier = _offline(settings, usecase, _requests(usecase, sample), grace, taken)
    except (MigrateError, duckdb.Error, pa.ArrowException) as exc:
        log.warning("feature skew of %s unavailable: %s", usecase.name, exc)
        what = exc.what if isinstance(exc, MigrateError) else str(exc).splitlines()[0]
        return Skew(available=False, reason=f"offline values unavailable: {what}", sampled=len(sample))
    kinds = {
        **dict.fromkeys(usecase.feature_names, "batch"),
        **dict.fromkeys(usecase.realtime_feature_names, "real-time"),
        **{c.name: "context" for c in usecase.context if c.is_input},
    }
    features = []
    for name, kind in kinds.items():
        if name not in taken:
            continue  # the model that answered does not take it (a batch model serving live, say)
        compared = mismatches = missing_online = missing_offline = behind = 0
        held = earlier.get(name) or [[] for _ in sample]
        for used, expected, before in zip((f.get(name) for f in logged), offline[name], held, strict=True):
            if used is None and expected is None:
                continue
            if not _same(used, expected) and any(_same(used, value) for value in before):
                behind += 1
            elif used is None:
                missing_online += 1
            elif expected is None:
                missing_offline += 1
            else:
                compared += 1
                mismatches += _differs(float(used), expected)
        features.append(
            FeatureSkew(
                feature=name,
                kind=kind,
                compared=compared,
                mismatches=mismatches,
                mismatch_rate=share(mismatches, compared),
                missing_online=missing_online,
                missing_offline=missing_offline,
                missing_rate=share(missing_online + missing_offline, len(sample)),
                behind=behind,
            )
        )
    features.sort(key=lambda f: -((f.mismatch_rate or 0.0) + (f.missing_rate or 0.0)))
    return Skew(available=True, sampled=len(sample), features=features, grace_s=grace.total_seconds())


def evidence(skew: Skew) -> dict[str, Any]:
    """What the verdict reads of the check (`Evidence.feature_skew_*`): the feature off on the largest share of the
    sampled answers; nothing when the check could not run."""
    if not skew.available or not skew.sampled or not skew.features:
        return {}
    worst = max(skew.features, key=lambda f: f.off)
    return {
        "feature_skew_share": worst.off / skew.sampled,
        "feature_skew_feature": worst.feature if worst.off else None,  # none is off: no feature to name
        "feature_skew_sampled": skew.sampled,
    }
