"""The values the lookup store hands out: versions, rows, statistics, publish outcomes and batch runs.

Every datetime leaving the store is timezone-aware UTC; datetimes coming in must be timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["loading", "ready", "active", "retired"]
Key = tuple[int | str, ...]


def utc(value: datetime, what: str = "datetime") -> datetime:
    """``value`` in UTC; naive datetimes are refused because their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} has no time zone; pass an aware datetime, e.g. in UTC")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class VersionInfo:
    """One version of a lookup table and where it is in its life: loading → ready/active → retired."""

    usecase: str
    version: int
    table: str
    run_id: str
    model_version: str
    data_interval_start: datetime
    data_interval_end: datetime
    row_count: int | None
    checksum: str | None
    status: Status
    created_at: datetime
    published_at: datetime | None
    scored_at: datetime | None


@dataclass(frozen=True)
class LookupRow:
    """One prediction as applications read it through the view, with where it came from."""

    key: Key
    prediction: float | None
    model_version: str
    features_as_of: datetime
    scored_at: datetime
    run_id: str
    version: int


@dataclass(frozen=True)
class VersionStats:
    """Aggregates over one version's rows, for validation before publishing."""

    row_count: int
    null_predictions: int
    min_prediction: float | None
    max_prediction: float | None


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` did: ``version`` is the one applications read afterwards if ``activated`` or ``reused``."""

    version: int
    activated: bool
    reused: bool
    reason: str


@dataclass(frozen=True)
class RunRecord:
    """One batch run of a use case and how it ended, kept as history."""

    run_id: str
    usecase: str
    data_interval_start: datetime
    data_interval_end: datetime
    version: int | None
    outcome: str
    row_count: int
    checksum: str | None
    started_at: datetime
    finished_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
