"""Why batch and live disagree: stale data, feature skew, or model/code skew, entity by entity.

A request *disagrees* when |live − batch| exceeds the disagreement threshold (the noise floor's p95 |Δ|, or the
policy's ``disagreement_threshold``). The entities with the most disagreeing requests (at most ``limit``) are
examined on their latest disagreeing request, with the live model (the artifact named by the shadow row's
``online_model_version``) and a tolerance of half the threshold:

1. **model/code skew** when the live model on the features the live path logged (``online_features``) does not
   give the live score (the serving code computed something else), or when the live model on the batch
   snapshot's features does not give the batch score and that model gap is the larger part of the disagreement
   (the models differ more than their inputs do);
2. otherwise the inputs explain it: **feature skew** when the logged online features differ from the offline
   store's features for the same entity as of the request time (point in time), naming the features;
3. otherwise **stale data**: the live path saw newer, correct values the nightly snapshot did not have.

The snapshot is the newest one (``<snapshots_dir>/<usecase>/<interval end>/snapshot.parquet``) at or before the
request. Features the live model takes and the snapshot lacks (real-time ones) are NaN in the re-score. Without
the artifact or the snapshot, attribution is unavailable and says why; without the offline store, steps 2 and 3
cannot be told apart and the entity is counted as ``undetermined``.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from pydantic import Field
from threadpoolctl import threadpool_limits

from comparisons.shadow_rows import Rows, Window, first_line, is_file_error, row_id_sql, shadow_files
from comparisons.stats import Result
from migrate.artifact import ArtifactStore
from migrate.batch.offline_store import batch_features_at, open_offline
from migrate.errors import MigrateError, OfflineStoreError
from migrate.scoring import Model, model_from_artifact
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["Attribution", "Case", "Explanation", "measure"]

log = logging.getLogger(__name__)
Kind = Literal["stale_data", "feature_skew", "model_skew", "undetermined"]
KINDS: tuple[Kind, ...] = ("stale_data", "feature_skew", "model_skew", "undetermined")
TOP = 10


class Case(Result):
    """One examined entity: its key, how often it disagreed, by how much, and what was found."""

    key: dict[str, int | str]
    requests: int
    mean_abs_delta: float
    detail: str


class Attribution(Result):
    """Entities (and their disagreeing requests) attributed to one cause, the top ones listed."""

    kind: Kind
    entities: int
    requests: int
    top: list[Case]


class Explanation(Result):
    """The attribution of disagreements beyond the threshold, or why it is unavailable."""

    available: bool
    reason: str = ""
    threshold: float
    disagreeing_requests: int = 0
    disagreeing_entities: int = 0
    examined_entities: int = 0
    model_version: str | None = None
    snapshots: list[str] = Field(default_factory=list)
    kinds: list[Attribution] = Field(default_factory=list)


def _snapshots(settings: Settings, usecase: str) -> list[tuple[datetime, Path]]:
    root = settings.snapshots_dir / usecase
    found = []
    for folder in sorted(root.glob("*Z")) if root.is_dir() else []:
        file = folder / "snapshot.parquet"
        try:
            moment = datetime.strptime(folder.name, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        if file.exists():
            found.append((moment, file))
    return found


def _model(settings: Settings, usecase: UseCase, version: str) -> Any:
    """The artifact of ``version`` (online or batch role), verified and loaded; None when no manifest names it."""

    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    for role in ("online", "batch"):
        info = next((entry for entry in store.list(usecase.name, role) if entry.version == version), None)
        if info is not None:
            path = settings.artifacts_dir / usecase.name / info.file
            # Its compiled forest when it has one: scored without importing scikit-learn and skops.
            return model_from_artifact(
                usecase,
                store,
                path=path,
                sha256=info.sha256,
                info=info,
                feature_names=tuple(info.feature_names),
                version=info.version,
            )
    return None


def _differs(online: float | None, offline: float | None) -> bool:
    if online is None or offline is None or (isinstance(offline, float) and math.isnan(offline)):
        return (online is None) != (offline is None or math.isnan(offline))
    return abs(online - offline) > 1e-9 + 1e-6 * abs(offline)


def _offline_as_of(settings: Settings, usecase: UseCase, cases: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The batch features of each case's entity as of its request time, by training's own join
    (`batch_features_at`); None when there is no offline store to read."""
    path = settings.offline_store_path
    if not path.exists():
        return None
    keys = usecase.entity.key_names
    requests = pa.table(
        {
            **{k: [c["key"][k] for c in cases] for k in keys},
            "prediction_time": pa.array([c["request_time"] for c in cases], pa.timestamp("us", "UTC")),
        }
    )
    try:
        with open_offline(path) as con:
            found: list[dict[str, Any]] = (
                batch_features_at(con, usecase, requests, few=True).select(usecase.feature_names).to_pylist()
            )
    except (duckdb.Error, OfflineStoreError) as exc:
        log.warning("offline store unavailable for the explanation of %s: %s", usecase.name, exc)
        return None
    return found


def _cases(rows: Rows, threshold: float, limit: int) -> tuple[int, int, list[dict[str, Any]]]:
    keys = rows.key_columns
    disagrees = f"abs(op - bp) > {threshold}"
    # One pass over the rows: the disagreeing entities grouped once give both the totals and the top cases. Only
    # the count and the mean there: each entity's latest request (four arg_max over millions of groups, ~1.5 s of
    # CPU per 10M rows) is looked up for the top cases alone, in a second pass that joins them.
    rows.con.execute(f"""
        CREATE OR REPLACE TEMP TABLE disagreeing AS
        SELECT {keys}, count(*) AS n, avg(abs(op - bp)) AS d FROM s WHERE {disagrees} GROUP BY ALL
    """)
    totals = rows.con.execute("SELECT coalesce(sum(n), 0), count(*) FROM disagreeing").fetchall()[0]
    rows.con.execute(f"""
        CREATE OR REPLACE TEMP TABLE top_disagreeing AS
        SELECT {keys}, n, d FROM disagreeing ORDER BY n DESC, d DESC, {keys} LIMIT {int(limit)}
    """)

    def same(other: str) -> str:
        return " AND ".join(f"{other}.k_{k} IS NOT DISTINCT FROM c.k_{k}" for k in rows.keys)

    found = rows.con.execute(f"""
        SELECT {", ".join(f"c.k_{k}" for k in rows.keys)}, c.n, c.d, x.h, x.t, x.b, x.o
        FROM top_disagreeing c JOIN (
            SELECT {keys}, arg_max(h, request_time) AS h, max(request_time) AS t, arg_max(bp, request_time) AS b,
                   arg_max(op, request_time) AS o
            FROM s SEMI JOIN top_disagreeing c ON {same("s")}
            WHERE {disagrees} GROUP BY ALL
        ) x ON {same("x")}
        ORDER BY c.n DESC, c.d DESC, {", ".join(f"c.k_{k}" for k in rows.keys)}
    """).fetchall()
    width = len(rows.keys)
    cases = [
        {
            "key": dict(zip(rows.keys, r[:width], strict=True)),
            "requests": int(r[width]),
            "delta": float(r[width + 1]),
            "h": int(r[width + 2]),
            "request_time": r[width + 3].astimezone(UTC),
            "bp": float(r[width + 4]),
            "op": float(r[width + 5]),
        }
        for r in found
    ]
    return int(totals[0]), int(totals[1]), cases


def _logged(rows: Rows, settings: Settings, cases: list[dict[str, Any]]) -> None:
    """Add each case's logged ``online_features`` and ``online_model_version`` from the shadow files.

    Only the hour partitions holding the cases' requests are read (the latest disagreeing requests of the most
    frequent entities cluster in the newest hours), and in them only the rows at the cases' request times (a
    case's row ``h`` is at its time ``t``): the time filter runs in the Parquet scan, so the row ids are hashed and
    the features decoded for those rows alone, not for every row of the hours (~0.7 s of CPU per 10M rows).
    """
    hours = sorted({c["request_time"].replace(minute=0, second=0, microsecond=0) for c in cases})
    files = [
        f
        for hour in hours
        for f in shadow_files(settings.shadow_dir / rows.usecase.name, Window(hour, hour + timedelta(hours=1)))
    ]
    wanted = ", ".join(str(c["h"]) for c in cases)
    times = ", ".join(f"TIMESTAMPTZ '{t.isoformat()}'" for t in sorted({c["request_time"] for c in cases}))
    row_id = row_id_sql(rows.usecase)
    listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    found = rows.con.execute(f"""
        SELECT {row_id} AS h, any_value(online_features), any_value(online_model_version)
        FROM read_parquet({listing}, union_by_name = true)
        WHERE CAST(request_time AS TIMESTAMPTZ) IN ({times}) AND {row_id} IN ({wanted}) GROUP BY ALL
    """).fetchall()
    logged = {int(h): (orjson.loads(features) if features else {}, version) for h, features, version in found}
    for case in cases:
        case["features"], case["model_version"] = logged.get(case["h"], ({}, None))


def _live_models(settings: Settings, usecase: UseCase, versions: list[str]) -> dict[str, Model] | str:
    """The live model of each version the cases name, or why they cannot all be loaded."""
    if not versions:
        return "the shadow rows name no online model version"
    try:
        models = {v: _model(settings, usecase, v) for v in versions}
    except MigrateError as exc:  # a corrupt manifest or an artifact whose hash does not match
        return f"the live model cannot be loaded: {exc.what}"
    missing = [v for v, m in models.items() if m is None]
    if missing:
        return f"no artifact of live model version(s) {missing} in {settings.artifacts_dir / usecase.name}"
    return {v: m for v, m in models.items() if m is not None}


def measure(rows: Rows, usecase: UseCase, settings: Settings, threshold: float, *, limit: int = 200) -> Explanation:
    """Attribute the window's disagreements (see the module docstring)."""
    requests, entities, cases = _cases(rows, threshold, limit)
    if cases:
        _logged(rows, settings, cases)
    base = Explanation(
        available=False, threshold=threshold, disagreeing_requests=requests, disagreeing_entities=entities
    )
    if not cases:
        return base.model_copy(update={"available": True, "reason": "no request disagrees beyond the threshold"})
    versions = sorted({c["model_version"] for c in cases if c["model_version"]})
    models = _live_models(settings, usecase, versions)
    if isinstance(models, str):
        return base.model_copy(update={"reason": models})
    snapshots = _snapshots(settings, usecase.name)
    if not snapshots:
        where = settings.snapshots_dir / usecase.name
        return base.model_copy(update={"reason": f"no batch snapshot in {where}"})
    offline = _offline_as_of(settings, usecase, cases)
    kinds: dict[Kind, list[Case]] = {k: [] for k in KINDS}
    chosen: dict[Path, list[dict[str, Any]]] = {}
    for case in cases:
        prior = [file for moment, file in snapshots if moment <= case["request_time"]]
        case["snapshot"] = prior[-1] if prior else snapshots[0][1]
        chosen.setdefault(case["snapshot"], []).append(case)
    try:
        snap_rows = _snapshot_rows(rows, usecase, chosen)
    except OfflineStoreError as exc:
        log.warning("explanation of %s unavailable: %s", usecase.name, exc.what)
        return base.model_copy(update={"reason": f"{exc.what}; {exc.fix}"})
    _rescore(cases, models, snap_rows, usecase)
    for index, case in enumerate(cases):
        kind, detail = _classify(case, usecase, None if offline is None else offline[index], threshold / 2)
        kinds[kind].append(
            Case(key=case["key"], requests=case["requests"], mean_abs_delta=case["delta"], detail=detail)
        )
    attributions = [
        Attribution(kind=k, entities=len(found), requests=sum(c.requests for c in found), top=found[:TOP])
        for k, found in kinds.items()
    ]
    return base.model_copy(
        update={
            "available": True,
            "examined_entities": len(cases),
            "model_version": ", ".join(versions),
            "snapshots": sorted({str(p) for p in chosen}),
            "kinds": attributions,
        }
    )


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _snapshot_rows(
    rows: Rows, usecase: UseCase, chosen: dict[Path, list[dict[str, Any]]]
) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    """The snapshot rows of the cases' entities, one query per snapshot file: (file, key) → column values."""
    keys = usecase.entity.key_names
    found: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    columns = ", ".join(f'"{c}"' for c in [*keys, *usecase.feature_names])
    for path, cases in chosen.items():
        values = ", ".join("(" + ", ".join(_sql_value(c["key"][k]) for k in keys) + ")" for c in cases)
        on = " AND ".join(f'p."{k}" = f."{k}"' for k in keys)
        probe = f"(VALUES {values}) p({', '.join(chr(34) + k + chr(34) for k in keys)})"
        literal = str(path).replace("'", "''")
        try:
            result = rows.con.execute(f"SELECT {columns} FROM read_parquet('{literal}') f SEMI JOIN {probe} ON {on}")
            names = [d[0] for d in result.description]
            fetched = result.fetchall()
        except duckdb.Error as exc:
            if not is_file_error(exc):
                raise
            # A damaged page reads as a bare duckdb.Error that names no file: the file is this query's one.
            raise OfflineStoreError(
                f"the batch snapshot {path} cannot be read: {first_line(exc)}",
                fix="restore that file (the batch features the night's batch run scored); the rest of the report "
                "does not read it",
            ) from exc
        for row in fetched:
            record = dict(zip(names, row, strict=True))
            found[(str(path), tuple(record[k] for k in keys))] = record
    return found


def _sql_value(value: int | str) -> str:
    return str(int(value)) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _rescore(
    cases: list[dict[str, Any]],
    models: dict[str, Any],
    snap_rows: dict[tuple[str, tuple[Any, ...]], dict[str, Any]],
    usecase: UseCase,
) -> None:
    """Score each case's logged online features and its snapshot features with its live model, one call per model."""
    for version, model in models.items():
        mine = [c for c in cases if c["model_version"] == version]
        names = list(model.feature_names)
        online_x, snap_x = [], []
        for case in mine:
            key = tuple(case["key"][k] for k in usecase.entity.key_names)
            case["snap_row"] = snap_rows.get((str(case["snapshot"]), key))
            online_x.append([_num(case["features"].get(n)) for n in names])
            snap_x.append([_num(None if case["snap_row"] is None else case["snap_row"].get(n)) for n in names])
        # A few hundred rows: sklearn's OpenMP threads cost more than they save (on a busy machine, seconds of
        # waiting at a barrier per tree); one thread gives the same scores.
        with threadpool_limits(limits=1):
            on_scores = model.score(np.array(online_x, dtype=np.float64))
            snap_scores = model.score(np.array(snap_x, dtype=np.float64))
        for case, on_score, snap_score in zip(mine, on_scores, snap_scores, strict=True):
            case["on_score"], case["snap_score"], case["model"] = float(on_score), float(snap_score), model.version


def _classify(
    case: dict[str, Any], usecase: UseCase, offline: dict[str, Any] | None, tolerance: float
) -> tuple[Kind, str]:
    """The cause of one case's disagreement and what shows it (see the module docstring)."""
    if abs(case["on_score"] - case["op"]) > tolerance:
        return "model_skew", (
            f"the live model on its logged features gives {case['on_score']:.4f}, the live path said {case['op']:.4f}"
        )
    # Same live model on both inputs: how much of the gap the models explain, and how much the inputs do.
    model_part = abs(case["snap_score"] - case["bp"]) if case["snap_row"] is not None else 0.0
    data_part = abs(case["op"] - case["snap_score"]) if case["snap_row"] is not None else abs(case["op"] - case["bp"])
    if model_part > tolerance and model_part >= data_part:
        return "model_skew", (
            f"live model {case['model']} on the batch snapshot gives {case['snap_score']:.4f}, batch {case['bp']:.4f}"
        )
    if offline is None:
        return "undetermined", "the offline store is unavailable to tell stale data from feature skew"
    features = case["features"]
    skewed = [n for n in usecase.feature_names if _differs(features.get(n), offline.get(n))]
    if skewed:
        return "feature_skew", ", ".join(
            f"{n}: online {features.get(n)} vs offline {offline.get(n)}" for n in skewed[:4]
        )
    return "stale_data", f"the snapshot {case['snapshot'].parent.name} predates the online features"
