"""Materialization: the batch features of every entity, as of an instant, into the online feature store.

Each value is written with its row's ``features_as_of`` as event time, so re-running the same instant changes
nothing, an older instant cannot overwrite newer values, and a value that changed for the same event time is a
correction (rejected unless asked for). The snapshot is the batch path's own point-in-time query
(`migrate.batch.offline_store.snapshot_reader`, without its sort), streamed from DuckDB batch by batch so memory
stays flat at any entity count and the writes start while DuckDB computes the rest. A Redis store written by 0.x
has its stored features moved into the current layout first (`FeatureStore.prepare`; for Redis,
`RedisFeatureStore.upgrade_layout`, once per use case).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from lookup_tables import TableSpec, open_lookup_store
from migrate.batch.offline_store import open_offline, snapshot_reader, utc_aware
from migrate.errors import CorrectionRejectedError, NoActiveVersionError
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.features.redis_store import RedisFeatureStore
from online.features.store import FeatureStore, OnCorrection, WriteReport, correction_error

__all__ = ["MaterializeReport", "materialize", "materialize_active"]

BATCH_ROWS = 20_000  # entities read from the snapshot and handed to one write_features call
WRITERS = 4  # batches in flight, encoded while others are written (1M entities: 4 beat 2 in 5 of 5 pairs, +10%)


@dataclass(frozen=True)
class MaterializeReport:
    """What one materialization wrote; counts are per entity × feature, as in `WriteReport`."""

    usecase: str
    as_of: str  # ISO 8601, UTC
    store: str  # the store's URL, password masked
    entities: int
    written: int
    unchanged: int
    stale: int
    corrected: int
    rejected: int
    seconds: float
    snapshot_seconds: float  # until DuckDB's first batch: the rest of the snapshot is computed beside the writes
    write_seconds: float
    rejected_examples: list[str] = field(default_factory=list)


def materialize(
    usecase: UseCase,
    settings: Settings,
    store: FeatureStore,
    as_of: datetime,
    *,
    on_correction: OnCorrection = "reject",
    batch_rows: int = BATCH_ROWS,
) -> MaterializeReport:
    """Write the latest batch features at or before `as_of` of every entity listed by then into `store`.

    Raises:
        CorrectionRejectedError: after writing everything else, when `on_correction` is ``"reject"`` and some
            stored values differ at the same event time; `.report` holds the `MaterializeReport`.
        OfflineStoreError: the offline store lacks the use case's tables or columns.
        FeatureStoreUnavailableError: the feature store cannot be reached.
    """

    started = time.perf_counter()
    as_of = utc_aware(as_of)
    store.prepare(usecase.name)  # e.g. a Redis store written by 0.x moves its features into records first
    folder = settings.state_dir / "materialize" / usecase.name / f"{as_of:%Y%m%dT%H%M%SZ}.{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    total = WriteReport()
    try:
        with open_offline(settings.offline_store_path) as con:
            reader = snapshot_reader(
                con, usecase, as_of, folder, batch_rows=batch_rows, memory_limit=settings.snapshot_memory
            )
            snapshot_seconds = time.perf_counter() - started
            # Batches go to the store from WRITERS threads, so DuckDB computes the next batches and Arrow encodes
            # one (both without the GIL) while the server runs the scripts of another; reports are added up in
            # batch order. The snapshot holds each entity once, so no two batches touch the same key.
            with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="materialize") as pool:
                pending: deque[Future[WriteReport]] = deque()
                for batch in reader:
                    if len(pending) == WRITERS:
                        total = total + pending.popleft().result()
                    pending.append(pool.submit(_write, store, usecase, pa.Table.from_batches([batch]), on_correction))
                while pending:
                    total = total + pending.popleft().result()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - started
    result = MaterializeReport(
        usecase=usecase.name,
        as_of=as_of.isoformat(),
        store=store.url,
        entities=total.entities,
        written=total.written,
        unchanged=total.unchanged,
        stale=total.stale,
        corrected=total.corrected,
        rejected=total.rejected,
        seconds=seconds,
        snapshot_seconds=snapshot_seconds,
        write_seconds=seconds - snapshot_seconds,
        rejected_examples=[f"{r.key}/{r.feature}" for r in total.rejected_examples],
    )
    if total.rejected and on_correction == "reject":
        error = correction_error(usecase.name, store.url, total)
        error.report = result
        raise error
    return result


def _write(store: FeatureStore, usecase: UseCase, rows: pa.Table, on_correction: OnCorrection) -> WriteReport:
    try:
        return store.write_features(
            usecase.name,
            usecase.entity.key_names,
            rows,
            usecase.feature_names,
            "features_as_of",
            on_correction=on_correction,
        )
    except CorrectionRejectedError as exc:
        # The batch was written but for its corrections: keep going, and raise once at the end.
        assert isinstance(exc.report, WriteReport)
        return exc.report


def materialize_active(
    usecase: UseCase, settings: Settings, redis_url: str, *, on_correction: OnCorrection = "reject"
) -> MaterializeReport:
    """`materialize` as of the active lookup version's data-interval end, into the feature store at ``redis_url``.

    The caller says where the feature store is: the configured ``MIGRATE_REDIS_URL``, or the state dir's embedded
    Redis that ``migrate.devservices.redis_server.resolve_redis_url`` starts (the CLI and the DAG do that).
    """

    active = open_lookup_store(settings).active(TableSpec.for_usecase(usecase, settings))
    if active is None:
        raise NoActiveVersionError(
            f"lookup table {usecase.lookup_table.name!r} of {usecase.name!r} has no active version to materialize",
            fix=f"run the batch first: `migrate score {usecase.name}`",
        )
    with RedisFeatureStore.from_settings(settings, redis_url) as store:
        return materialize(usecase, settings, store, active.data_interval_end, on_correction=on_correction)
