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

__all__ = ["SCHEMA_VERSION", "RequestRecords", "ShadowRecord", "Source", "WireRecord", "shadow_topic", "wire_record"]

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
    batch_latency_ms: float | None = Field(
        default=None,
        description="The latency of the lookup read that answered this entity: the serving worker's when the batch "
        "path served it (served_source batch or batch_fallback), else the shadow comparison's (a background call).",
    )
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
    online_latency_ms: float | None = Field(
        default=None,
        description="The latency of the online call that answered this entity: the serving worker's when the online "
        "path was asked on the request (served_source online or batch_fallback), else the shadow comparison's, a "
        "background call at idle priority over the entities of several requests: not a latency anyone was served.",
    )
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


_FLOAT_OR_NONE = frozenset((float, type(None)))


def _floats(values: Mapping[str, Any] | None) -> dict[str, float | None]:
    """`values` with each number as ``float``, as the model's ``dict[str, float | None]`` fields coerce them.

    When every value already is a ``float`` (not a subclass) or None, as in the jobs the comparison process decodes
    (msgspec types them), the copy is made in C: ~0.8 µs for 13 features against 1.2-1.8 µs for the per-value
    coercion, and a record has two such maps. A ``float``'s ``float()`` is itself, so both give the same dict.
    """
    if not values:
        return {}
    if set(map(type, values.values())) <= _FLOAT_OR_NONE:
        return dict(values)
    return {name: None if value is None else float(value) for name, value in values.items()}


class RequestRecords:
    """The shadow records of one request's entities: what they share (the request, its flag, each path's error)
    checked, coerced and laid out in the model's field order once; each entity's record is a copy of that with its
    own fields set (`record`), its latencies among them.

    The comparison's loop over a 100-entity request took ~4 µs a record this way against ~9 µs with each record
    built field by field (in process, docs/serving.md item 17).
    The records of one request share their ``context`` dict: records are only encoded, never changed.

    Raises:
        ValueError: `request_time` has no time zone (the record's times are UTC instants).
    """

    __slots__ = ("_base", "request_id")

    def __init__(
        self,
        *,
        request_id: str,
        usecase: str,
        request_time: datetime,
        stage: str,
        percent: float = 0.0,
        sample_percent: float = 100.0,
        batch_error: str | None = None,
        candidate_error: str | None = None,
        candidate_latency_ms: float | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        if request_time.tzinfo is None or request_time.utcoffset() is None:
            raise ValueError(f"a shadow record's request_time must carry a time zone, not {request_time!r}")
        self.request_id = request_id
        # Every field of the model in its order (a copy keeps the order, and setting a key keeps its place);
        # the entity's own fields hold their defaults until `record` sets them.
        self._base: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "request_id": request_id,
            "usecase": usecase,
            "key": None,
            "request_time": request_time,
            "served_source": None,
            "stage": stage,
            "percent": float(percent),
            "sample_percent": float(sample_percent),
            "batch_prediction": None,
            "batch_miss": False,
            "batch_data_age_s": None,
            "batch_model_version": None,
            "lookup_version": None,
            "batch_latency_ms": None,
            "batch_error": batch_error,
            "online_prediction": None,
            "online_feature_ages_s": {},
            "online_features": {},
            "online_model_version": None,
            "online_latency_ms": None,
            "online_error": None,
            "candidate_prediction": None,
            "candidate_model_version": None,
            "candidate_error": candidate_error,
            "candidate_latency_ms": _float(candidate_latency_ms),
            "context": {} if context is None else dict(context),
        }

    def record(
        self,
        *,
        key: Mapping[str, int | str],
        served_source: str,
        batch_prediction: float | None = None,
        batch_miss: bool = False,
        batch_data_age_s: float | None = None,
        batch_model_version: str | None = None,
        lookup_version: int | None = None,
        batch_latency_ms: float | None = None,
        online_prediction: float | None = None,
        online_feature_ages_s: Mapping[str, float | None] | None = None,
        online_features: Mapping[str, float | None] | None = None,
        online_model_version: str | None = None,
        online_latency_ms: float | None = None,
        online_error: str | None = None,
        candidate_prediction: float | None = None,
        candidate_model_version: str | None = None,
    ) -> WireRecord:
        """One entity's record. Its latencies are the entity's own: those of the calls that computed its answers
        (a request's entities can be answered by the serving worker's call and the comparison's).

        Raises:
            ValueError: `served_source` is not a `Source`.
        """
        if served_source not in _SOURCES:
            raise ValueError(f"a shadow record's served_source is one of {sorted(_SOURCES)}, not {served_source!r}")
        fields = self._base.copy()
        fields["key"] = dict(key)
        fields["served_source"] = served_source
        if batch_prediction is not None:
            fields["batch_prediction"] = float(batch_prediction)
        fields["batch_miss"] = batch_miss
        if batch_data_age_s is not None:
            fields["batch_data_age_s"] = float(batch_data_age_s)
        fields["batch_model_version"] = batch_model_version
        fields["lookup_version"] = lookup_version
        if batch_latency_ms is not None:
            fields["batch_latency_ms"] = float(batch_latency_ms)
        if online_prediction is not None:
            fields["online_prediction"] = float(online_prediction)
        if online_feature_ages_s:
            fields["online_feature_ages_s"] = _floats(online_feature_ages_s)
        if online_features:
            fields["online_features"] = _floats(online_features)
        fields["online_model_version"] = online_model_version
        if online_latency_ms is not None:
            fields["online_latency_ms"] = float(online_latency_ms)
        fields["online_error"] = online_error
        if candidate_prediction is not None:
            fields["candidate_prediction"] = float(candidate_prediction)
        fields["candidate_model_version"] = candidate_model_version
        return WireRecord(self.request_id, fields)


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
    fails (`SinkReport.invalid`, online/shadow/sink.py), so a record is never lost silently. The records of a
    request's entities are built with `RequestRecords`, which this is one record of.

    Raises:
        ValueError: `request_time` has no time zone (the record's times are UTC instants), or `served_source` is
            not a `Source`.
    """
    shared = RequestRecords(
        request_id=request_id,
        usecase=usecase,
        request_time=request_time,
        stage=stage,
        percent=percent,
        sample_percent=sample_percent,
        batch_error=batch_error,
        candidate_error=candidate_error,
        candidate_latency_ms=candidate_latency_ms,
        context=context,
    )
    return shared.record(
        key=key,
        served_source=served_source,
        batch_prediction=batch_prediction,
        batch_miss=batch_miss,
        batch_data_age_s=batch_data_age_s,
        batch_model_version=batch_model_version,
        lookup_version=lookup_version,
        batch_latency_ms=batch_latency_ms,
        online_prediction=online_prediction,
        online_feature_ages_s=online_feature_ages_s,
        online_features=online_features,
        online_model_version=online_model_version,
        online_latency_ms=online_latency_ms,
        online_error=online_error,
        candidate_prediction=candidate_prediction,
        candidate_model_version=candidate_model_version,
    )


def shadow_topic(usecase: str, prefix: str = "migrate.shadow.") -> str:
    return f"{prefix}{usecase}"
