"""Shadow logs and labels written exactly as the sink writes them (its own table functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lookup_tables import TableSpec, open_lookup_store
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.shadow.parquet import label_table, shadow_table
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord

T0 = datetime(2026, 11, 14, 6, 0, tzinfo=UTC)
USECASE = "item_availability"


def at(minutes: float) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


def record(
    n: int,
    minutes: float,
    *,
    store: int = 1,
    product: int = 10,
    bp: float | None = 0.5,
    op: float | None = 0.5,
    batch_age: float | None = 3600.0,
    ages: dict[str, float] | None = None,
    features: dict[str, float | None] | None = None,
    batch_ms: float = 1.0,
    online_ms: float = 5.0,
    online_error: str | None = None,
    served: str = "batch",
    stage: str = "shadow",
    request_id: str | None = None,
    online_model_version: str | None = "v1",
) -> ShadowRecord:
    """One shadow record with sensible defaults (a miss when ``bp`` is None)."""
    return ShadowRecord(
        request_id=request_id or f"r{n}",
        usecase=USECASE,
        key={"store_id": store, "product_id": product},
        request_time=at(minutes),
        served_source=served,  # type: ignore[arg-type]
        stage=stage,
        batch_prediction=bp,
        batch_miss=bp is None,
        batch_data_age_s=None if bp is None else batch_age,
        batch_model_version=None if bp is None else "v1",
        batch_latency_ms=batch_ms,
        online_prediction=op,
        online_feature_ages_s=ages if ages is not None else ({"found_rate_1d": 60.0} if op is not None else {}),
        online_features=features or {},
        online_model_version=online_model_version if op is not None else None,
        online_latency_ms=online_ms,
        online_error=online_error,
    )


def label(minutes: float, value: float, *, store: int = 1, product: int = 10) -> LabelRecord:
    return LabelRecord(
        usecase=USECASE,
        key={"store_id": store, "product_id": product},
        event_time=at(minutes),
        label=value,
        source_event_id=f"e{store}-{product}-{minutes}",
    )


def _by_hour(items: Iterable[Any], moment: Callable[[Any], datetime]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for item in items:
        m = moment(item).astimezone(UTC)
        groups.setdefault(f"date={m:%Y-%m-%d}/hour={m:%H}", []).append(item)
    return groups


def write_shadow(settings: Settings, records: list[ShadowRecord], labels: list[LabelRecord] = ()) -> None:  # type: ignore[assignment]
    """Write records and labels in the sink's layout (one file per hour)."""
    for part, items in _by_hour(records, lambda r: r.request_time).items():
        path = settings.shadow_dir / USECASE / part / "part-test-0-0-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(shadow_table(items, [0] * len(items), list(range(len(items)))), path)
    for part, items in _by_hour(labels, lambda r: r.event_time).items():
        path = settings.labels_dir / USECASE / part / "part-test-0-0-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(label_table(items, [0] * len(items), list(range(len(items)))), path)


def with_policy(usecase: UseCase, **policy: Any) -> UseCase:
    """The use case with some cutover-policy fields replaced."""
    return usecase.model_copy(update={"cutover_policy": usecase.cutover_policy.model_copy(update=policy)})


def publish_lookup(
    settings: Settings, usecase: UseCase, cutoff: datetime, keys: list[tuple[int, int]], prediction: float = 0.5
) -> int:
    """Publish one lookup version of `usecase` with a row per (store, product) key scored as of `cutoff`."""
    store = open_lookup_store(settings)
    spec = TableSpec.for_usecase(usecase, settings)
    info = store.begin_version(
        spec,
        run_id=f"run-{cutoff:%H}",
        model_version="v1",
        data_interval_start=cutoff - timedelta(days=1),
        data_interval_end=cutoff,
    )
    rows = pa.table(
        {
            "store_id": pa.array([k[0] for k in keys], pa.int64()),
            "product_id": pa.array([k[1] for k in keys], pa.int64()),
            "prediction": pa.array([prediction] * len(keys), pa.float64()),
            "features_as_of": pa.array([cutoff] * len(keys), pa.timestamp("us", tz="UTC")),
        }
    )
    store.write_chunk(spec, info.version, 0, rows)
    return store.publish(spec, info.version, checksum=f"c{info.version}", scored_at=cutoff).version


def labels_by_hand(
    records: list[ShadowRecord], labels: list[LabelRecord], delay: timedelta
) -> list[tuple[ShadowRecord, str, float | None]]:
    """Per distinct request: (record, state, label) by the rule of comparisons.shadow_rows, request by request."""
    watermark = max(lb.event_time for lb in labels)
    seen, out = set(), []
    for r in records:
        ident = (r.request_id, r.key["store_id"], r.key["product_id"])
        if ident in seen:
            continue
        seen.add(ident)
        due = r.request_time + delay
        if due > watermark:
            out.append((r, "pending", None))
            continue
        mine = sorted(
            (lb for lb in labels if lb.key == r.key and r.request_time < lb.event_time), key=lambda lb: lb.event_time
        )
        if mine and mine[0].event_time <= due:
            out.append((r, "labeled", mine[0].label))
        else:
            out.append((r, "unlabeled", None))
    return out
