"""Fixtures of the stream processor's tests: a broker, a Redis, a use case of each test's own, its events."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from stream_helpers import Stream

from migrate.batch.event_history import iter_events
from migrate.batch.offline_store import open_offline
from migrate.devservices.broker import Broker, start_broker
from migrate.devservices.redis_server import RedisServer

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
