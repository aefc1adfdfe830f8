"""`migrate services status`: which Redis and Kafka a state dir uses, where, which process, whether they answer."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from migrate.devservices.redis_server import EmbeddedRedis
from migrate.devservices.shared_broker import broker_file, running_broker
from migrate.errors import BrokerUnavailableError
from migrate.settings import Settings
from online.features.redis_store import mask_url
from online.kafka import wait_for_broker

__all__ = ["ServiceStatus", "services_status"]

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ServiceStatus:
    """One service as seen now."""

    name: str
    """``redis`` or ``kafka``"""
    kind: str
    """``configured`` (a URL in the settings) or ``embedded`` (started under the state dir)"""
    address: str | None
    """Where clients connect (passwords masked); None when nothing runs"""
    pid: int | None
    """The embedded server's process (None for a configured one, or when none runs)"""
    state: str
    """``healthy``, ``not running``, or ``unhealthy: <why>``"""

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


def services_status(settings: Settings, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[ServiceStatus]:
    """Redis and Kafka of these settings: the configured ones, or the state dir's embedded ones (never started here)."""
    return [_redis(settings, timeout_s), _kafka(settings, timeout_s)]


def _ping(url: str, timeout_s: float) -> str:
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"unhealthy: {exc}"
    finally:
        client.close()
    return "healthy"


def _redis(settings: Settings, timeout_s: float) -> ServiceStatus:
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        return ServiceStatus("redis", "configured", mask_url(url), None, _ping(url, timeout_s))
    server = EmbeddedRedis(settings)
    pid = server.pid
    if server.running():
        return ServiceStatus("redis", "embedded", server.url, pid, "healthy")
    if pid is not None:
        return ServiceStatus("redis", "embedded", server.url, pid, _ping(server.url, timeout_s))
    return ServiceStatus("redis", "embedded", None, None, "not running")


def _kafka(settings: Settings, timeout_s: float) -> ServiceStatus:
    if settings.kafka_bootstrap:
        return ServiceStatus(
            "kafka", "configured", settings.kafka_bootstrap, None, _answer(settings.kafka_bootstrap, timeout_s)
        )
    running = running_broker(settings)
    if running is None:
        stale = " (stale " + str(broker_file(settings)) + ")" if broker_file(settings).exists() else ""
        return ServiceStatus("kafka", "embedded", None, None, f"not running{stale}")
    return ServiceStatus("kafka", "embedded", running.bootstrap, running.pid, _answer(running.bootstrap, timeout_s))


def _answer(bootstrap: str, timeout_s: float) -> str:
    try:
        wait_for_broker(bootstrap, timeout_s)
    except BrokerUnavailableError as exc:
        return f"unhealthy: {exc.what}"
    return "healthy"
