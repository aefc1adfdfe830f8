"""Helpers of the examples' comparator tests: the shadow log the service would have written, in the sink's layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from online.shadow.parquet import label_table, shadow_table
from online.shadow.record import ShadowRecord


def scored_request(
    usecase: str,
    key: dict[str, Any],
    moment: datetime,
    event_id: str,
    predictions: tuple[float, float],
    versions: tuple[str, str],
    context: dict[str, Any] | None = None,
) -> ShadowRecord:
    """A shadow record of a request served from the lookup table, with both models' (batch, online) scores."""
    return ShadowRecord(
        request_id=f"req-{event_id}",
        usecase=usecase,
        key=key,
        request_time=moment,
        served_source="batch",
        stage="shadow",
        batch_prediction=predictions[0],
        batch_data_age_s=3_600.0,
        batch_model_version=versions[0],
        batch_latency_ms=1.0,
        online_prediction=predictions[1],
        online_feature_ages_s={"any": 30.0},
        online_model_version=versions[1],
        online_latency_ms=4.0,
        context=context or {},
    )


def write_by_hour(root: Path, rows: Sequence[Any], moment: Callable[[Any], datetime], kind: str) -> None:
    """Rows in the sink's layout under `root` (one Parquet file per hour), built by the sink's own tables."""
    table = shadow_table if kind == "shadow" else label_table
    hours: dict[datetime, list[Any]] = {}
    for row in rows:
        hours.setdefault(moment(row).astimezone(UTC).replace(minute=0, second=0, microsecond=0), []).append(row)
    for hour, part in hours.items():
        path = root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / "part-test-0-0-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(part, [0] * len(part), [*range(len(part))]), path)
