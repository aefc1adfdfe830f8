"""The shadow log's and the labels' Parquet rows: flat columns, each file made durable before it is named."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from migrate.errors import SinkError
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord

__all__ = ["label_table", "shadow_table", "write_durably"]


def _key_columns(keys: list[dict[str, Any]]) -> dict[str, pa.Array]:
    names = sorted({name for key in keys for name in key})
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [key.get(name) for key in keys]
        if all(value is None or (isinstance(value, int) and not isinstance(value, bool)) for value in values):
            columns[f"key_{name}"] = pa.array(values, pa.int64())
        else:
            columns[f"key_{name}"] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return columns


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


_TS = pa.timestamp("us", tz="UTC")


def _ages(records: list[ShadowRecord]) -> dict[str, pa.Array]:
    """The feature ages typed, as column ``online_feature_ages``: a struct with one DOUBLE field per feature any
    record of the file logged (null where a record did not, or logged NaN or an infinity, as in the JSON, which
    orjson writes as null). No column when no record logged an age: a struct needs a field."""
    names = sorted({name for r in records for name in r.online_feature_ages_s})
    if not names:
        return {}
    fields = [pa.array([_finite(r.online_feature_ages_s.get(name)) for r in records], pa.float64()) for name in names]
    return {"online_feature_ages": pa.StructArray.from_arrays(fields, names=names)}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def shadow_table(records: list[ShadowRecord], partitions: list[int], offsets: list[int]) -> pa.Table:
    """Flat columns: the entity key as JSON and as ``key_<name>`` columns, dicts as JSON strings; the feature ages
    also typed (`_ages`), which the comparator reads without parsing JSON."""
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([r.request_id for r in records], pa.string()),
        "usecase": pa.array([r.usecase for r in records], pa.string()),
        "entity_key": pa.array([_json(r.key) for r in records], pa.string()),
        **_key_columns([r.key for r in records]),
        "request_time": pa.array([r.request_time for r in records], _TS),
        "served_source": pa.array([r.served_source for r in records], pa.string()),
        "stage": pa.array([r.stage for r in records], pa.string()),
        "percent": pa.array([r.percent for r in records], pa.float64()),
        "sample_percent": pa.array([r.sample_percent for r in records], pa.float64()),
        "batch_prediction": pa.array([r.batch_prediction for r in records], pa.float64()),
        "batch_miss": pa.array([r.batch_miss for r in records], pa.bool_()),
        "batch_data_age_s": pa.array([r.batch_data_age_s for r in records], pa.float64()),
        "batch_model_version": pa.array([r.batch_model_version for r in records], pa.string()),
        "lookup_version": pa.array([r.lookup_version for r in records], pa.int64()),
        "batch_latency_ms": pa.array([r.batch_latency_ms for r in records], pa.float64()),
        "batch_error": pa.array([r.batch_error for r in records], pa.string()),
        "online_prediction": pa.array([r.online_prediction for r in records], pa.float64()),
        "online_feature_ages_s": pa.array([_json(r.online_feature_ages_s) for r in records], pa.string()),
        **_ages(records),
        "online_features": pa.array([_json(r.online_features) for r in records], pa.string()),
        "online_model_version": pa.array([r.online_model_version for r in records], pa.string()),
        "online_latency_ms": pa.array([r.online_latency_ms for r in records], pa.float64()),
        "online_error": pa.array([r.online_error for r in records], pa.string()),
        "candidate_prediction": pa.array([r.candidate_prediction for r in records], pa.float64()),
        "candidate_model_version": pa.array([r.candidate_model_version for r in records], pa.string()),
        "candidate_error": pa.array([r.candidate_error for r in records], pa.string()),
        "candidate_latency_ms": pa.array([r.candidate_latency_ms for r in records], pa.float64()),
        "context": pa.array([_json(r.context) for r in records], pa.string()),
        "schema_version": pa.array([r.schema_version for r in records], pa.int32()),
        "kafka_partition": pa.array(partitions, pa.int32()),
        "kafka_offset": pa.array(offsets, pa.int64()),
    }
    return pa.table(columns)


def label_table(records: list[LabelRecord], partitions: list[int], offsets: list[int]) -> pa.Table:
    """Flat columns like ``shadow_table``: one row per label."""
    columns: dict[str, pa.Array] = {
        "usecase": pa.array([r.usecase for r in records], pa.string()),
        "entity_key": pa.array([_json(r.key) for r in records], pa.string()),
        **_key_columns([r.key for r in records]),
        "event_time": pa.array([r.event_time for r in records], _TS),
        "label": pa.array([r.label for r in records], pa.float64()),
        "source_event_id": pa.array([r.source_event_id for r in records], pa.string()),
        "ref": pa.array([r.ref for r in records], pa.string()),
        "kafka_partition": pa.array(partitions, pa.int32()),
        "kafka_offset": pa.array(offsets, pa.int64()),
    }
    return pa.table(columns)


def write_durably(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SinkError(f"Parquet file {path} could not be written: {exc}", fix="check disk space and rights") from exc
