"""Helpers of the stream processor's tests: a use case of each test's own, its events, expected features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from migrate.feature_windows import epoch_s, evaluate, features_at, groups_of
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
        return EventPublisher.for_usecase(
            self.usecase, self.bootstrap, topic_prefix=self.settings.events_topic_prefix, timeout_s=10
        )

    def publish(self, events: list[dict[str, Any]] | None = None) -> int:
        publisher = self.publisher()
        try:
            return publisher.publish(self.events if events is None else events, time_field="event_time")
        finally:
            publisher.close()

    def settings_with(self, **overrides: Any) -> Settings:
        return get_settings(state_dir=self.settings.state_dir, **overrides)

    def entity_keys(self, events: list[dict[str, Any]] | None = None) -> list[tuple[Any, ...]]:
        source = self.events if events is None else events
        return sorted({tuple(e[k] for k in self.usecase.entity.key_names) for e in source})

    def states(self, keys: list[tuple[Any, ...]]) -> dict[str, list[list[Any]]]:
        """Per feature group, per entity: the partial window states in Redis (what serving reads)."""
        assert self.usecase.realtime_features is not None and self.usecase.realtime_features.events is not None
        names = self.usecase.entity.key_names
        store = RedisFeatureStore(self.redis_url, read_timeout_s=5.0, write_timeout_s=30.0)
        try:
            group_keys = {
                g.name: [tuple(dict(zip(names, key, strict=True))[c] for c in g.key) for key in keys]
                for g in groups_of(self.usecase)
                if g.spec.features
            }
            read = store.read_online(
                self.usecase.name, keys, [], group_keys, self.usecase.realtime_features.events.partitions
            )
        finally:
            store.close()
        return read.states

    def expected(self, events: list[dict[str, Any]], at: datetime) -> dict[tuple[Any, ...], list[float]]:
        """Per entity of `events`: the features training computes for a prediction at `at` (earlier events only)."""
        ordered = sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
        entities = self.entity_keys(events)
        names = self.usecase.entity.key_names
        blocks = []
        for group in groups_of(self.usecase):
            if not group.spec.features:
                continue
            keys = [tuple(e[c] for c in group.key) for e in ordered]
            times = _array([epoch_s(e["event_time"]) for e in ordered])
            asked = [tuple(dict(zip(names, key, strict=True))[c] for c in group.key) for key in entities]
            at_s = _array([epoch_s(at)] * len(entities))
            blocks.append(features_at(group.spec, keys, times, ordered, at_keys=asked, at_times_s=at_s))
        values = np.hstack(blocks)
        return {key: list(values[i]) for i, key in enumerate(entities)}

    def observed(self, at: datetime, events: list[dict[str, Any]] | None = None) -> dict[tuple[Any, ...], list[float]]:
        """Per entity (of `events`, default: the world's) with any stored state: the features a request at `at`
        gets, evaluated from the window states in Redis as serving evaluates them."""
        keys = self.entity_keys(events)
        states = self.states(keys)
        out: dict[tuple[Any, ...], list[float]] = {}
        for i, key in enumerate(keys):
            if not states["entity"][i]:
                continue
            values: list[float] = []
            for group in groups_of(self.usecase):
                if group.spec.features:
                    values += evaluate(group.spec, states[group.name][i], epoch_s(at))
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
