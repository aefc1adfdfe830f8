"""Publishing events to a use case's topic: keyed by entity (one entity → one partition, in order), paced.

``migrate events replay`` uses it to play the offline event history back through Kafka at a chosen speed-up,
so that real-time features move while a simulated day runs; the benchmark uses it at a fixed rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from migrate.errors import BrokerUnavailableError, ConfigError
from migrate.usecase import UseCase
from online.kafka import acknowledged_producer, ensure_topic, kafka_errors
from online.stream.event_schema import encode_event
from online.stream.topic import events_topic, key_bytes

__all__ = ["EventPublisher"]


class EventPublisher:
    """A producer for one event topic; `publish` sends events and waits for every acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, key_names: Iterable[str], *, partitions: int, timeout_s: float):
        self.topic = topic
        self.key_names = tuple(key_names)
        self.timeout_s = timeout_s
        ensure_topic(bootstrap, topic, partitions, timeout_s=timeout_s)
        self.producer = acknowledged_producer(
            bootstrap,
            f"migrate-events-{topic}",
            timeout_s,
            batch_size=256 * 1024,
            delivery_timeout_ms=int(timeout_s * 4000),  # a replay sends flat out: batches queue longer
        )

    @classmethod
    def for_usecase(cls, usecase: UseCase, bootstrap: str, *, topic_prefix: str, timeout_s: float) -> EventPublisher:
        """The publisher of `usecase`'s event topic, keyed by its entity, with the partitions its YAML declares."""
        declared = usecase.realtime_features
        if declared is None or declared.events is None:
            raise ConfigError(
                f"use case {usecase.name!r} declares no event stream, so it has no event topic to publish to",
                fix="declare realtime_features.events in its YAML",
            )
        return cls(
            bootstrap,
            events_topic(usecase, topic_prefix),
            usecase.entity.key_names,
            partitions=declared.events.partitions,
            timeout_s=timeout_s,
        )

    def send(self, event: dict[str, Any], *, value: bytes | None = None, key: bytes | None = None) -> Any:
        """Send one event (or raw `value` bytes, for tests of bad input) keyed by its entity."""
        if key is None:
            key = key_bytes({k: event[k] for k in self.key_names})
        return self.producer.send(self.topic, key=key, value=encode_event(event) if value is None else value)

    def publish(
        self,
        events: Iterable[dict[str, Any]],
        *,
        time_field: str,
        speed: float | None = None,
        anchor: tuple[datetime, float] | None = None,
        on_progress: Callable[[int, datetime], None] | None = None,
    ) -> int:
        """Send `events` (in event-time order); with `speed`, event time runs `speed` times faster than wall time.

        `anchor` (simulated instant, Unix time) pins the pacing to a shared simulated clock (migrate/clock.py):
        an event timed t is sent at ``wall + (t - instant) / speed``. Without it the first event sets the origin.
        Returns the number sent, once every one is acknowledged.
        """
        sent = 0
        origin: tuple[float, float] | None = None if anchor is None else (anchor[0].timestamp(), anchor[1])
        try:
            for event in events:
                moment: datetime = event[time_field]
                if speed:
                    at = moment.timestamp()
                    if origin is None:
                        origin = (at, time.time())
                    wait = origin[1] + (at - origin[0]) / speed - time.time()
                    if wait > 0:
                        time.sleep(wait)
                self.send(event)
                sent += 1
                if on_progress is not None and sent % 1000 == 0:
                    on_progress(sent, moment)
            self.producer.flush(timeout=self.timeout_s * 4)
        except kafka_errors.KafkaError as exc:
            raise BrokerUnavailableError(
                f"events for {self.topic!r} were not all acknowledged after {sent}: {exc}",
                fix="retry once the broker is healthy; the processor counts a re-sent event again, so resend only "
                "from the first unacknowledged one",
            ) from exc
        return sent

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
