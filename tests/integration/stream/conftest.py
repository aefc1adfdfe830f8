"""Fixtures of the stream processor's tests: a broker, a Redis, a use case of each test's own, its events."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import redis

from migrate.event_history import iter_events
from migrate.offline import open_offline
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase
from migrate.windows import WindowSpec, epoch_s, since_minutes, training_features
from online.broker import Broker, start_broker
from online.event_publisher import EventPublisher
from online.redis_server import RedisServer
from online.redis_store import RedisFeatureStore
from online.stream_processor import events_topic

LOCAL_REDIS_URL = os.environ.get("MIGRATE_TEST_STREAM_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(scope="module")
def broker(world: Any) -> Iterator[Broker]:
    running = start_broker(world.settings)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def stream_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis (DB 14) where it runs (required on CI), else an embedded one."""
    client = redis.Redis.from_url(LOCAL_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        yield LOCAL_REDIS_URL
        return
    except redis.RedisError:
        if os.environ.get("MIGRATE_REQUIRE_REDIS") == "1":
            pytest.fail(f"MIGRATE_REQUIRE_REDIS=1 but no Redis at {LOCAL_REDIS_URL}")
    finally:
        client.close()
    server = RedisServer(tmp_path_factory.mktemp("stream-redis") / "redis").start()
    yield server.url
    server.stop()


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
    import numpy as np

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


@pytest.fixture(scope="module")
def history(world: Any) -> list[dict[str, Any]]:
    """Every event of the generated world, in event-time order."""
    with open_offline(world.settings.offline_store_path) as con:
        return list(
            iter_events(con, world.usecase, datetime(2000, 1, 1).astimezone(), datetime(2100, 1, 1).astimezone())
        )


@pytest.fixture
def stream(world: Any, broker: Broker, stream_redis_url: str, history: list[dict[str, Any]]) -> Iterator[Stream]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    usecase = world.usecase.model_copy(update={"name": name})
    yield Stream(world.settings, usecase, broker.bootstrap, stream_redis_url, history)
    client = redis.Redis.from_url(stream_redis_url)
    try:
        for pattern in (f"mig:{name}:*", f"migstream:{name}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
