"""The real-time part of the use-case schema: event streams, their schemas, windowed features and feature groups.

`migrate.usecase.UseCase` holds one `RealtimeFeatures`; this module is apart only to keep each file readable.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ENTITY_GROUP",
    "IDENTIFIER",
    "MAIN_STREAM",
    "Duration",
    "EventFieldType",
    "EventStream",
    "FeatureGroup",
    "Identifier",
    "RealtimeFeature",
    "RealtimeFeatures",
    "SideStream",
    "Strict",
    "parse_duration",
]

IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"
MAIN_STREAM = "main"  # the stream of realtime_features.events, keyed by the entity
ENTITY_GROUP = "entity"  # the feature group of realtime_features.features, keyed by the entity
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

Identifier = Annotated[str, Field(pattern=IDENTIFIER)]


def parse_duration(text: str) -> timedelta:
    """``"30m"`` → 30 minutes; units s, m, h, d."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like '30m', '2h' or '1d'")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _valid_duration(text: str) -> str:
    parse_duration(text)
    return text


# Kept as the text the YAML holds (a model dumps back what it read); `parse_duration` gives the timedelta.
Duration = Annotated[str, AfterValidator(_valid_duration)]


class Strict(BaseModel):
    """Strict, frozen: unknown keys are errors (a typo in a YAML file is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RealtimeFeature(Strict):
    """A windowed aggregate over events, computed by the stream processor (online issue)."""

    name: Identifier
    aggregation: Literal["count", "mean", "sum", "min", "max", "minutes_since"]
    field: Identifier | None = Field(default=None, description="Event field aggregated (not for count).")
    window: str | None = Field(default=None, description="Window length, e.g. '30m'; not for minutes_since.")
    where: dict[str, bool | int | str] = Field(default_factory=dict, description="Event filter: field == value.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


EventFieldType = Literal["int", "float", "str", "bool", "datetime"]


class EventStream(Strict):
    """The Kafka topic of raw events and the schema every event must match (else: dead-letter topic)."""

    topic: str | None = Field(default=None, description="Default: '<settings.events_topic_prefix><use case>'.")
    partitions: int = Field(default=4, ge=1, le=1024)
    id_field: Identifier = Field(description="Unique id of an event (labels and dead letters name it).")
    fields: dict[Identifier, EventFieldType] = Field(min_length=1, description="Field name → type.")
    allowed_lateness: str = Field(
        default="5m", description="Events older than the partition's newest event time minus this are dead-lettered."
    )
    max_future: str = Field(
        default="5m", description="Events timed later than their arrival (broker timestamp) plus this are refused."
    )

    @field_validator("allowed_lateness", "max_future")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class FeatureGroup(Strict):
    """Real-time features kept per value of other columns than the entity's key (per store, per merchant, ...)."""

    name: Identifier
    key: list[Identifier] = Field(
        min_length=1,
        description="Event fields keying the group; a request supplies each from its entity key or context.",
    )
    features: list[RealtimeFeature] = Field(min_length=1)


class SideStream(Strict):
    """Another event stream of the use case (weather, a merchant feed): its own topic, offline table and schema,
    feeding feature groups keyed by its columns. Its topic may be partitioned by anything: each partition keeps a
    partial state per key, merged at read time."""

    name: Identifier
    event_table: Identifier = Field(description="Offline-store table holding the same events as the topic.")
    event_time_column: Identifier
    events: EventStream
    groups: list[FeatureGroup] = Field(
        default_factory=list, description="Feature groups it feeds (none: a stream of label events only)."
    )

    @model_validator(mode="after")
    def _fields_declared(self) -> SideStream:
        fields = self.events.fields
        if fields.get(self.event_time_column) != "datetime":
            raise ValueError(f"stream {self.name!r}: events.fields must declare {self.event_time_column!r} as datetime")
        if self.events.id_field not in fields:
            raise ValueError(f"stream {self.name!r}: events.id_field {self.events.id_field!r} is not among its fields")
        for group in self.groups:
            used = list(group.key)
            for feature in group.features:
                used += [feature.field, *feature.where] if feature.field else list(feature.where)
            unknown = sorted({f for f in used if f not in fields})
            if unknown:
                raise ValueError(f"stream {self.name!r}: group {group.name!r} reads {unknown}, not among its fields")
        return self


class RealtimeFeatures(Strict):
    """Real-time features: windowed aggregates over event streams, by event time, evaluated at request time."""

    event_table: Identifier = Field(description="Offline-store table holding the same events as the stream.")
    event_time_column: Identifier
    events: EventStream | None = Field(default=None, description="The event topic and schema (stream processor).")
    resolution: str = Field(default="1m", description="Window bucket width; windows are multiples of it.")
    features: list[RealtimeFeature] = Field(default_factory=list, description="Kept per entity.")
    groups: list[FeatureGroup] = Field(default_factory=list, description="Kept per value of other key columns.")
    streams: list[SideStream] = Field(default_factory=list, description="Further event streams and their groups.")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        parse_duration(value)
        return value

    def source(self, stream: str) -> tuple[str, str, EventStream | None]:
        """(event table, event time column, topic and schema) of the stream named `stream` (``main``: this one)."""
        if stream == MAIN_STREAM:
            return self.event_table, self.event_time_column, self.events
        for side in self.streams:
            if side.name == stream:
                return side.event_table, side.event_time_column, side.events
        raise ValueError(f"no event stream {stream!r}; declared: {['main', *(s.name for s in self.streams)]}")

    @property
    def all_groups(self) -> list[FeatureGroup]:
        """The groups of the main stream, then those of each further stream, in declared order."""
        return [*self.groups, *(group for stream in self.streams for group in stream.groups)]

    @property
    def all_features(self) -> list[RealtimeFeature]:
        """The entity's features, then each group's (main stream first), in declared order."""
        return [*self.features, *(f for group in self.all_groups for f in group.features)]

    @model_validator(mode="after")
    def _consistent(self) -> RealtimeFeatures:
        step = parse_duration(self.resolution)
        names = [group.name for group in self.all_groups]
        # 'batch' names the batch features in a predict answer's group ages (online/serving/predictor.py).
        if ENTITY_GROUP in names or "batch" in names or len(set(names)) != len(names):
            raise ValueError(f"feature group names {names} repeat or use a reserved name ('entity', 'batch')")
        streams = [stream.name for stream in self.streams]
        if MAIN_STREAM in streams or len(set(streams)) != len(streams):
            raise ValueError(f"stream names {streams} repeat or use the reserved name 'main'")
        for feature in self.all_features:
            if feature.aggregation != "minutes_since" and feature.window is None:
                raise ValueError(f"feature {feature.name!r} ({feature.aggregation}) needs a window, e.g. '30m'")
            if feature.aggregation == "minutes_since" and feature.window is not None:
                raise ValueError(f"feature {feature.name!r} (minutes_since) takes no window")
            if feature.aggregation not in ("count", "minutes_since") and feature.field is None:
                raise ValueError(f"feature {feature.name!r} ({feature.aggregation}) needs the event field it reads")
            if feature.window is not None and parse_duration(feature.window) % step:
                raise ValueError(f"feature {feature.name!r}: window {feature.window} is not a multiple of {step}")
        if self.events is not None:
            fields = self.events.fields
            if fields.get(self.event_time_column) != "datetime":
                raise ValueError(f"events.fields must declare {self.event_time_column!r} as datetime")
            if self.events.id_field not in fields:
                raise ValueError(f"events.id_field {self.events.id_field!r} is not among events.fields")
            for feature in [*self.features, *(f for group in self.groups for f in group.features)]:
                used = [feature.field, *feature.where] if feature.field else list(feature.where)
                unknown = [f for f in used if f not in fields]
                if unknown:
                    raise ValueError(f"feature {feature.name!r} reads {unknown}, not among events.fields")
            for group in self.groups:
                unknown = [k for k in group.key if k not in fields]
                if unknown:
                    raise ValueError(f"feature group {group.name!r} is keyed by {unknown}, not among events.fields")
        return self

    @property
    def names(self) -> list[str]:
        """Every real-time feature: the entity's, then each group's."""
        return [f.name for f in self.all_features]
