"""Helpers of the stream processor's tests: a use case of each test's own, its events, expected features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from migrate.feature_windows import WindowSpec, epoch_s, since_minutes, training_features
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase
from online.features.redis_store import RedisFeatureStore
from online.stream.processor import events_topic
from online.stream.publisher import EventPublisher


@dataclass
class Stream:
    """One test's use case (renamed, so topics and keys are its own) and where things are."""

    settings: Settings
    usecase: UseCase
    bootstrap: str
    redis_url: str
    events: list[dict[str, Any]]

    @property
    def topic(self) -> str:
        return events_topic(self.usecase, self.settings.events_topic_prefix)

    def publisher(self) -> EventPublisher:
        assert self.usecase.realtime_features is not None and self.usecase.realtime_features.events is not None
        return EventPublisher(
            self.bootstrap,
            self.topic,
            self.usecase.entity.key_names,
            partitions=self.usecase.realtime_features.events.partitions,
            timeout_s=10,
        )

    def publish(self, events: list[dict[str, Any]] | None = None) -> int:
        publisher = self.publisher()
        try:
            return publisher.publish(self.events if events is None else events, time_field="event_time")
        finally:
            publisher.close()

    def settings_with(self, **overrides: Any) -> Settings:
        return get_settings(state_dir=self.settings.state_dir, **overrides)

    def stored(
        self, events: list[dict[str, Any]] | None = None
    ) -> dict[tuple[Any, ...], dict[str, tuple[float | None, datetime]]]:
        """Every entity's (of `events`, default: the world's) real-time features in Redis: name → (value, time)."""
        store = RedisFeatureStore(self.redis_url, read_timeout_s=5.0, write_timeout_s=30.0)
        try:
            source = self.events if events is None else events
            keys = sorted({tuple(e[k] for k in self.usecase.entity.key_names) for e in source})
            rows = store.read(self.usecase.name, keys, self.usecase.realtime_feature_names)
        finally:
            store.close()
        return {
            key: {name: (v.value, v.event_time) for name, v in row.items()}
            for key, row in zip(keys, rows, strict=True)
            if row
        }

    def expected(self, events: list[dict[str, Any]], at: datetime) -> dict[tuple[Any, ...], list[float]]:
        """Per entity: the features the training code computes for an instant `at` after all `events`."""
        assert self.usecase.realtime_features is not None
        spec = WindowSpec(self.usecase.realtime_features)
        keys = self.usecase.entity.key_names
        by_entity: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for event in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
            by_entity.setdefault(tuple(event[k] for k in keys), []).append(event)
        out: dict[tuple[Any, ...], list[float]] = {}
        for key, history in by_entity.items():
            sentinel = {**history[-1], "event_time": at}
            rows = [*history, sentinel]
            times = [epoch_s(e["event_time"]) for e in rows]
            values = training_features(spec, [key] * len(rows), _array(times), rows)
            out[key] = list(values[-1])
        return out

    def observed(self, at: datetime, events: list[dict[str, Any]] | None = None) -> dict[tuple[Any, ...], list[float]]:
        """The stored features, read at instant `at` (minutes_since converted as serving does)."""
        assert self.usecase.realtime_features is not None
        spec = WindowSpec(self.usecase.realtime_features)
        out: dict[tuple[Any, ...], list[float]] = {}
        for key, row in self.stored(events).items():
            values: list[float] = []
            for name in spec.names:
                value = row[name][0] if name in row else None
                if name in spec.since_names:
                    values.append(since_minutes(value, epoch_s(at)))
                else:
                    values.append(math.nan if value is None else value)
            out[key] = values
        return out


def _array(values: list[float]) -> Any:

    return np.asarray(values, dtype=np.float64)


def same(a: dict[tuple[Any, ...], list[float]], b: dict[tuple[Any, ...], list[float]]) -> list[str]:
    """Differences between two feature maps (NaN equals NaN); empty when identical."""
    problems = [f"{key}: only in one of them" for key in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
        for x, y in zip(a[key], b[key], strict=True):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                problems.append(f"{key}: {a[key]} != {b[key]}")
                break
    return problems
