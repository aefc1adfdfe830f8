"""``migrate replay``: rebuild a use case's real-time features from the event topic's retention, idempotently.

The group's checkpoints and the real-time feature fields are cleared, every partition is started at the first
offset at or after ``from - warm-up`` (the longest window plus the allowed lateness, so windows open full), and a
processor runs until it has caught up with the topic's end. Running it twice gives the same features; from the
topic's start it gives exactly what an uninterrupted live run gave. Stop the live processors of the group first:
the replay claims every partition, and a live processor that checkpoints after that is fenced out.
"""

from __future__ import annotations

from datetime import datetime

import redis

from migrate.errors import BrokerUnavailableError
from migrate.feature_windows import groups_of, warm_up
from migrate.realtime_schema import MAIN_STREAM
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.kafka import (
    KafkaConsumer,
    TopicPartition,
    ensure_topic,
    fetched_end_offsets,
    kafka_errors,
    partitions_for_topic,
)
from online.stream.checkpoint import CheckpointStore, start_offsets
from online.stream.processor import StreamProcessor, StreamReport
from online.stream.topic import default_group, events_topic

__all__ = ["replay"]


def _offsets_at(
    bootstrap: str, topic: str, partitions: int, moment: datetime | None, timeout_s: float
) -> dict[int, int]:
    timeout_ms = int(timeout_s * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, request_timeout_ms=max(timeout_ms, 1000), bootstrap_timeout_ms=timeout_ms
        )
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(f"replay of {topic!r}: no broker at {bootstrap}: {exc}", fix="start it") from exc
    try:
        numbers = partitions_for_topic(consumer, topic, bootstrap, timeout_s=timeout_s) or set(range(partitions))
        tps = [TopicPartition(topic, p) for p in sorted(numbers)]
        if moment is None:
            return {tp.partition: o for tp, o in consumer.beginning_offsets(tps, timeout_ms=timeout_ms).items()}
        stamps = {tp: int(moment.timestamp() * 1000) for tp in tps}
        # No event since the moment: Kafka answers none; the embedded broker (Tansu 0.6) answers offset 0 with
        # timestamp -1, which read as an offset replayed the whole partition.
        found = {
            tp: at.offset
            for tp, at in consumer.offsets_for_times(stamps, timeout_ms=timeout_ms).items()
            if at is not None and at.timestamp >= 0
        }
        # A partition with no event since the moment starts at its end: the fetched one (the embedded broker's
        # `end_offsets` stops short of its last produce batch, whose older events would be replayed).
        after = [tp for tp in tps if tp not in found]
        ends = fetched_end_offsets(consumer, after, timeout_s=timeout_s) if after else {}
        return {tp.partition: found[tp] if tp in found else ends[tp] for tp in tps}
    finally:
        consumer.close()


def replay(
    settings: Settings,
    usecase: UseCase,
    *,
    bootstrap: str,
    redis_url: str,
    since: datetime | None = None,
    group_id: str | None = None,
    stream: str = MAIN_STREAM,
) -> StreamReport:
    """Rebuild the real-time features of one event stream from `since` (None: the topic's start) and return
    what was consumed; the other streams' features are left as they are."""
    assert usecase.realtime_features is not None
    events = usecase.realtime_features.source(stream)[2]
    assert events is not None
    topic = events_topic(usecase, settings.events_topic_prefix, stream)
    partitions = events.partitions
    ensure_topic(bootstrap, topic, partitions, timeout_s=settings.kafka_timeout_s)
    moment = None if since is None else since - warm_up(usecase)
    offsets = _offsets_at(bootstrap, topic, partitions, moment, settings.kafka_timeout_s)
    group_id = group_id or default_group(usecase.name, stream)
    groups = [g.name for g in groups_of(usecase) if g.stream == stream and g.spec.features]
    client = redis.Redis.from_url(redis_url, socket_timeout=settings.redis_write_timeout_s)
    try:
        CheckpointStore(client, usecase.name, group_id).reset(partitions, groups)
        start_offsets(client, usecase.name, group_id, offsets)
    finally:
        client.close()
    processor = StreamProcessor(
        settings, usecase, bootstrap=bootstrap, redis_url=redis_url, group_id=group_id, stream=stream
    )
    return processor.run(until_caught_up=True)
