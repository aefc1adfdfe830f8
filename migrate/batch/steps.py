"""The batch path, one function per step: snapshot → score chunks → validate → publish → record.

The Airflow DAG calls these steps as tasks; ``migrate score`` calls them in-process through `run_batch`.
Every step is idempotent for the same data interval and run id.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from lookup_tables import RunRecord, TableSpec, open_lookup_store
from migrate.artifact import ArtifactStore
from migrate.batch.offline_store import open_offline, write_snapshot
from migrate.errors import BatchValidationError
from migrate.scoring import load_model, score
from migrate.settings import Settings
from migrate.usecase import UseCase


@dataclass(frozen=True)
class Interval:
    """The data interval a batch run scores; features are taken as of its end."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("data interval bounds must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"data interval ends ({self.end}) before it starts ({self.start})")

    @property
    def key(self) -> str:
        """A file-system-safe name of the interval (its partition)."""
        return self.end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Chunk:
    """One slice of a snapshot, scored by one (mapped) task: rows [chunk_id × chunk_size, + rows)."""

    chunk_id: int
    rows: int


@dataclass(frozen=True)
class Snapshot:
    """The entities and features of one interval, written once as Parquet."""

    path: str
    rows: int
    chunks: list[Chunk]
    chunk_size: int

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Snapshot:
        return cls(data["path"], data["rows"], [Chunk(**c) for c in data["chunks"]], data["chunk_size"])


@dataclass(frozen=True)
class ChunkResult:
    """What scoring one chunk wrote, with a content checksum for the run checksum."""

    chunk_id: int
    rows: int
    checksum: str
    seconds: float
    scored_at: str  # ISO time the chunk finished scoring
    score_seconds: float = 0.0  # inside the model alone
    write_seconds: float = 0.0  # inside the bulk load alone


def snapshot(usecase: UseCase, settings: Settings, interval: Interval) -> Snapshot:
    """Write the entities and their features as of the interval's end to ``snapshots/<usecase>/<interval>``."""

    chunk_size = usecase.batch.chunk_size or settings.chunk_size
    target = settings.snapshots_dir / usecase.name / interval.key / "snapshot.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with open_offline(settings.offline_store_path) as con:
        write_snapshot(
            con,
            usecase,
            interval.end,
            tmp,
            row_group_size=min(chunk_size, 100_000),
            memory_limit=settings.snapshot_memory,
        )
    os.replace(tmp, target)  # overwrite the interval's partition in one step: reruns are idempotent
    rows = pq.ParquetFile(target).metadata.num_rows
    # Chunks are fixed row ranges of the key-sorted snapshot, whatever row groups DuckDB wrote: the same data
    # always gives the same chunks, hence the same checksums.
    chunks = [Chunk(i, min(chunk_size, rows - start)) for i, start in enumerate(range(0, rows, chunk_size))]
    return Snapshot(str(target), rows, chunks, chunk_size)


def read_chunk(snap: Snapshot, chunk: Chunk) -> Any:
    """The rows of one chunk, reading only the Parquet row groups that hold them."""

    first = chunk.chunk_id * snap.chunk_size
    last = first + chunk.rows
    parquet = pq.ParquetFile(snap.path)
    groups: list[int] = []
    offset = group_start = 0
    for i in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(i).num_rows
        if group_start < last and group_start + n > first:
            if not groups:
                offset = first - group_start
            groups.append(i)
        group_start += n
    table = parquet.read_row_groups(groups).slice(offset, chunk.rows)
    index = table.schema.get_field_index("features_as_of")
    return table.set_column(index, "features_as_of", table["features_as_of"].cast(pa.timestamp("us", tz="UTC")))


def begin(usecase: UseCase, settings: Settings, interval: Interval, run_id: str) -> dict[str, Any]:
    """Open a loading version of the lookup table for this run (reused if the task is retried)."""

    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    _, sha, info = store.resolve(usecase)
    model_version = info.version if info is not None else f"pinned-{sha[:12]}"
    version = open_lookup_store(settings).begin_version(
        TableSpec.for_usecase(usecase, settings),
        run_id=run_id,
        model_version=model_version,
        data_interval_start=interval.start,
        data_interval_end=interval.end,
    )
    return {"version": version.version, "model_version": model_version}


_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _model(usecase: UseCase, settings: Settings) -> Any:
    # Mapped tasks in one worker process score several chunks: load (and verify) the artifact once. The lock:
    # run_batch's chunk threads all start at once, and without it each loaded the model (seen with py-spy on a
    # 1M-row PostgreSQL run: a second deserialisation and compilation, ~0.4 s of CPU on two shared cores).

    key = (usecase.name, str(settings.artifacts_dir))
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    _, sha, _ = store.resolve(usecase)
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
        if cached is None or cached.sha256 != sha:
            cached = _MODELS[key] = load_model(usecase, store)
    return cached


def chunk_checksum(keys: list[Any], predictions: Any, features_as_of: Any) -> str:
    """sha256 over a chunk's keys, predictions and feature times, in row order."""
    digest = hashlib.sha256()
    for column in keys:
        digest.update(column.tobytes() if hasattr(column, "tobytes") else "\x1f".join(column).encode())
    digest.update(predictions.tobytes())
    digest.update(features_as_of.tobytes())
    return digest.hexdigest()


def score_chunk(usecase: UseCase, settings: Settings, snap: Snapshot, version: int, chunk: Chunk) -> ChunkResult:
    """Score one row group of the snapshot and write it into the loading version (idempotent per chunk)."""

    started = time.perf_counter()
    model = _model(usecase, settings)
    table = read_chunk(snap, chunk)
    matrix = np.column_stack(
        [table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in model.feature_names]
    )
    scoring = time.perf_counter()
    predictions = score(model, matrix)
    score_seconds = time.perf_counter() - scoring
    if np.isnan(predictions).any():
        raise BatchValidationError(
            f"model {model.version} produced NaN for chunk {chunk.chunk_id} of {usecase.name!r}",
            fix="check the model and the features it received",
        )
    key_names = usecase.entity.key_names
    out = pa.table(
        {
            **{k: table.column(k) for k in key_names},
            "prediction": pa.array(predictions),
            "features_as_of": table.column("features_as_of"),
        }
    )
    writing = time.perf_counter()
    open_lookup_store(settings).write_chunk(TableSpec.for_usecase(usecase, settings), version, chunk.chunk_id, out)
    write_seconds = time.perf_counter() - writing
    key_arrays = [
        table.column(k).to_numpy() if usecase.entity.keys[i].type == "int" else table.column(k).to_pylist()
        for i, k in enumerate(key_names)
    ]
    as_of = table.column("features_as_of").cast(pa.int64()).to_numpy()
    checksum = chunk_checksum(key_arrays, predictions, as_of)
    return ChunkResult(
        chunk.chunk_id,
        table.num_rows,
        checksum,
        time.perf_counter() - started,
        datetime.now(UTC).isoformat(),
        score_seconds,
        write_seconds,
    )


def run_checksum(model_version: str, results: list[ChunkResult]) -> str:
    """Combine chunk checksums in chunk order; the same data and model give the same checksum."""
    digest = hashlib.sha256(model_version.encode())
    for result in sorted(results, key=lambda r: r.chunk_id):
        digest.update(result.checksum.encode())
    return digest.hexdigest()


def scored_at(results: list[ChunkResult]) -> datetime:
    """When the last chunk of the run finished scoring."""
    return max(datetime.fromisoformat(r.scored_at) for r in results)


def validate(usecase: UseCase, settings: Settings, snap: Snapshot, version: int) -> dict[str, Any]:
    """Check the loaded version before publishing; abandon it and raise on failure."""
    store = open_lookup_store(settings)
    spec = TableSpec.for_usecase(usecase, settings)
    stats = store.stats(spec, version)
    problems: list[str] = []
    if stats.row_count != snap.rows:
        problems.append(f"{stats.row_count} rows loaded but the snapshot has {snap.rows}")
    if stats.null_predictions:
        problems.append(f"{stats.null_predictions} predictions are null or NaN")
    low, high = usecase.prediction_range
    if low is not None and stats.min_prediction is not None and stats.min_prediction < low:
        problems.append(f"min prediction {stats.min_prediction} < {low}")
    if high is not None and stats.max_prediction is not None and stats.max_prediction > high:
        problems.append(f"max prediction {stats.max_prediction} > {high}")
    active = store.active(spec)
    previous_rows = active.row_count if active is not None else None
    max_drop = usecase.batch.validation.max_row_drop
    if previous_rows and stats.row_count < previous_rows * (1 - max_drop):
        problems.append(
            f"{stats.row_count} rows is more than {max_drop:.0%} below the active version's {previous_rows}"
        )
    if snap.rows == 0:
        problems.append("the snapshot is empty")
    report = {
        "rows": stats.row_count,
        "previous_rows": previous_rows,
        "min": stats.min_prediction,
        "max": stats.max_prediction,
        "problems": problems,
    }
    if problems:
        store.abandon(spec, version)
        raise BatchValidationError(
            f"batch for {usecase.name!r} version {version} failed validation: " + "; ".join(problems),
            fix="inspect the snapshot and model; the previous lookup version stays active",
        )
    return report


def publish(usecase: UseCase, settings: Settings, version: int, checksum: str, scored_at: datetime) -> Any:
    """Atomically make the version the one readers see (or reuse an identical active one)."""
    return open_lookup_store(settings).publish(
        TableSpec.for_usecase(usecase, settings), version, checksum=checksum, scored_at=scored_at
    )


def record(
    usecase: UseCase,
    settings: Settings,
    interval: Interval,
    run_id: str,
    *,
    version: int | None,
    outcome: str,
    rows: int,
    checksum: str | None,
    started_at: datetime,
    details: dict[str, Any],
) -> None:
    """Record the run's metadata beside the lookup tables."""
    open_lookup_store(settings).record_run(
        RunRecord(
            run_id=run_id,
            usecase=usecase.name,
            data_interval_start=interval.start,
            data_interval_end=interval.end,
            version=version,
            outcome=outcome,
            row_count=rows,
            checksum=checksum,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            details=details,
        )
    )


@dataclass(frozen=True)
class BatchResult:
    """What one in-process batch run did."""

    run_id: str
    version: int
    activated: bool
    reused: bool
    rows: int
    checksum: str
    seconds: float
    reason: str
    steps: dict[str, float]  # wall seconds per step; score/write are summed over chunks


def run_batch(
    usecase: UseCase,
    settings: Settings,
    interval: Interval,
    run_id: str,
    *,
    on_chunk: Callable[[ChunkResult], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> BatchResult:
    """Every step of the DAG, in this process (``migrate score``); chunks on `workers` threads (default: cores).
    `on_total` hears the number of rows to score once the snapshot has counted them, before the first chunk."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps[name] = now - since
        return now

    snap = snapshot(usecase, settings, interval)
    mark = step("snapshot", started)
    if on_total is not None:
        on_total(snap.rows)
    opened = begin(usecase, settings, interval, run_id)
    mark = step("begin", mark)
    version, model_version = opened["version"], opened["model_version"]
    results = []
    # Chunks are independent: score them on every core at once. Scoring (OpenMP, one thread per chunk here),
    # Parquet reads and the bulk loads release the GIL, so threads overlap compute with I/O.

    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for result in pool.map(lambda c: score_chunk(usecase, settings, snap, version, c), snap.chunks):
            results.append(result)
            if on_chunk is not None:
                on_chunk(result)
    mark = step("chunks", mark)
    steps["score_in_model"] = sum(r.score_seconds for r in results)
    steps["write_in_store"] = sum(r.write_seconds for r in results)
    report = validate(usecase, settings, snap, version)
    mark = step("validate", mark)
    checksum = run_checksum(model_version, results)
    published = publish(usecase, settings, version, checksum, scored_at(results))
    step("publish", mark)
    outcome = "reused" if published.reused else ("published" if published.activated else "not_activated")
    record(
        usecase,
        settings,
        interval,
        run_id,
        version=published.version,
        outcome=outcome,
        rows=snap.rows,
        checksum=checksum,
        started_at=started_at,
        details={"validation": report, "reason": published.reason},
    )
    return BatchResult(
        run_id,
        published.version,
        published.activated,
        published.reused,
        snap.rows,
        checksum,
        time.perf_counter() - started,
        published.reason,
        steps,
    )
