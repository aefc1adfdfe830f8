"""A shadow record: what each path answered for one entity of one served request, and how old its data was.

The wire format of the shadow log (JSON on ``migrate.shadow.<usecase>``) and of the sink's Parquet rows.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["SCHEMA_VERSION", "ShadowRecord", "Source", "shadow_topic"]

Source = Literal["batch", "online", "batch_fallback"]
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
    online_feature_ages_s: dict[str, float] = Field(default_factory=dict, description="Feature → age in seconds.")
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
        return orjson.dumps(self.key, option=orjson.OPT_SORT_KEYS)


def shadow_topic(usecase: str, prefix: str = "migrate.shadow.") -> str:
    return f"{prefix}{usecase}"
