"""A shadow record: what each path answered for one entity of one served request, and how old its data was.

The wire format of the shadow log (JSON on ``migrate.shadow.<usecase>``, one record per line, up to 100 records of one
partition in a message: online/shadow/log.py) and of the sink's Parquet rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from online.stream.topic import key_bytes

__all__ = ["SCHEMA_VERSION", "ShadowRecord", "Source", "WireRecord", "shadow_topic", "wire_record"]

Source = Literal["batch", "online", "batch_fallback"]
_SOURCES = frozenset(get_args(Source))
SCHEMA_VERSION = 1


class ShadowRecord(BaseModel):
    """What both paths said about one request: predictions, data ages, model versions, latencies and errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    request_id: str = Field(min_length=1)
    usecase: str = Field(min_length=1)
    key: dict[str, int | str] = Field(min_length=1, description="Entity key: key column name → value.")
    request_time: AwareDatetime
    served_source: Source
    stage: str = Field(min_length=1, description="Cutover stage when served (shadow, canary, ...).")
    percent: float = Field(default=0.0, ge=0, le=100, description="Canary percent of the flag when served.")
    sample_percent: float = Field(
        default=100.0,
        gt=0,
        le=100,
        description="The share of entities the shadow comparison logged when served (the use case's "
        "shadow.sample_percent); the comparator scales counts of entities by it.",
    )
    batch_prediction: float | None = None
    batch_miss: bool = Field(default=False, description="The entity had no row in the lookup table.")
    batch_data_age_s: float | None = Field(default=None, description="Age of the batch prediction's features.")
    batch_model_version: str | None = None
    lookup_version: int | None = Field(
        default=None, description="The lookup-table version that answered (or, for a miss, was read)."
    )
    batch_latency_ms: float | None = None
    batch_error: str | None = None
    online_prediction: float | None = None
    # None: an age that was NaN or infinite, which JSON cannot carry (orjson writes null); a record holding one
    # read back before this allowed it was refused by the sink, counted as invalid and skipped.
    online_feature_ages_s: dict[str, float | None] = Field(
        default_factory=dict, description="Feature → age in seconds (null: not a finite number)."
    )
    online_features: dict[str, float | None] = Field(
        default_factory=dict, description="Feature → value the online model used (None: missing); explains skew."
    )
    online_model_version: str | None = None
    online_latency_ms: float | None = None
    online_error: str | None = None
    # The candidate model (`migrate models candidate`), scored beside the live one off the critical path. Optional,
    # so records and Parquet files written before it existed still read (the comparator reads with union_by_name).
    candidate_prediction: float | None = None
    candidate_model_version: str | None = None
    candidate_error: str | None = None
    candidate_latency_ms: float | None = None
    context: dict[str, Any] = Field(default_factory=dict, description="Extra JSON-able request context.")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_json(cls, data: bytes | str) -> ShadowRecord:
        return cls.model_validate(orjson.loads(data))

    def key_bytes(self) -> bytes:
        """The Kafka message key: the entity key, so one entity's records stay in order on one partition."""
        return key_bytes(self.key)


@dataclass(frozen=True, slots=True)
class WireRecord:
    """A shadow record's fields in the model's order and types (`wire_record`), encoded when sent: its Kafka key
    and its JSON are `ShadowRecord`'s, byte for byte. Encoded by the logger's thread, where a value JSON cannot
    carry is counted as a failed send, as a `ShadowRecord`'s is."""

    request_id: str
    fields: dict[str, Any]

    def key_bytes(self) -> bytes:
        # The events' key encoding, copied to its size: the logger's partitioner keeps up to 65,536 keys, and
        # orjson's own result would keep its 4 KiB working buffer with each (~256 MiB).
        return key_bytes(self.fields["key"])

    def to_json(self) -> bytes:
        return orjson.dumps(self.fields)

    def decode(self) -> ShadowRecord:
        """The record, validated as the sink reads it."""
        return ShadowRecord.from_json(self.to_json())


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def wire_record(
    *,
    request_id: str,
    usecase: str,
    key: Mapping[str, int | str],
    request_time: datetime,
    served_source: str,
    stage: str,
    percent: float = 0.0,
    sample_percent: float = 100.0,
    batch_prediction: float | None = None,
    batch_miss: bool = False,
    batch_data_age_s: float | None = None,
    batch_model_version: str | None = None,
    lookup_version: int | None = None,
    batch_latency_ms: float | None = None,
    batch_error: str | None = None,
    online_prediction: float | None = None,
    online_feature_ages_s: Mapping[str, float | None] | None = None,
    online_features: Mapping[str, float | None] | None = None,
    online_model_version: str | None = None,
    online_latency_ms: float | None = None,
    online_error: str | None = None,
    candidate_prediction: float | None = None,
    candidate_model_version: str | None = None,
    candidate_error: str | None = None,
    candidate_latency_ms: float | None = None,
    context: Mapping[str, Any] | None = None,
) -> WireRecord:
    """The record `ShadowRecord(...)` would be, for its key and JSON byte for byte, without building the model.

    The shadow comparison logs one record per compared entity: the model's validation and `model_dump` cost
    17–26 µs a record, these fields and their JSON 9–13 µs (in process, docs/serving.md). Numbers are coerced as
    the model's fields coerce them (``float``), the fields are in the model's order;
    tests/unit/online/test_shadow_record_encoding.py holds the bytes equal to the model's on hostile values. The
    values come from the serving code; the sink validates every record it reads, and counts and logs one that
    fails (`SinkReport.invalid`, online/shadow/sink.py), so a record is never lost silently.

    Raises:
        ValueError: `request_time` has no time zone (the record's times are UTC instants), or `served_source` is
            not a `Source`.
    """
    if request_time.tzinfo is None or request_time.utcoffset() is None:
        raise ValueError(f"a shadow record's request_time must carry a time zone, not {request_time!r}")
    if served_source not in _SOURCES:
        raise ValueError(f"a shadow record's served_source is one of {sorted(_SOURCES)}, not {served_source!r}")
    fields = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id,
        "usecase": usecase,
        "key": dict(key),
        "request_time": request_time,
        "served_source": served_source,
        "stage": stage,
        "percent": float(percent),
        "sample_percent": float(sample_percent),
        "batch_prediction": _float(batch_prediction),
        "batch_miss": batch_miss,
        "batch_data_age_s": _float(batch_data_age_s),
        "batch_model_version": batch_model_version,
        "lookup_version": lookup_version,
        "batch_latency_ms": _float(batch_latency_ms),
        "batch_error": batch_error,
        "online_prediction": _float(online_prediction),
        "online_feature_ages_s": {}
        if not online_feature_ages_s
        else {name: None if age is None else float(age) for name, age in online_feature_ages_s.items()},
        "online_features": {}
        if not online_features
        else {name: None if value is None else float(value) for name, value in online_features.items()},
        "online_model_version": online_model_version,
        "online_latency_ms": _float(online_latency_ms),
        "online_error": online_error,
        "candidate_prediction": _float(candidate_prediction),
        "candidate_model_version": candidate_model_version,
        "candidate_error": candidate_error,
        "candidate_latency_ms": _float(candidate_latency_ms),
        "context": {} if context is None else dict(context),
    }
    return WireRecord(request_id, fields)


def shadow_topic(usecase: str, prefix: str = "migrate.shadow.") -> str:
    return f"{prefix}{usecase}"
