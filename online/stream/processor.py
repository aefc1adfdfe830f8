"""The stream processor: events from Kafka → validated → window states in Redis, exactly once.

One process is one member of a Kafka consumer group; the group splits the topic's partitions among its members.
Per partition the processor keeps a window state per entity and per key of each other feature group (per store,
per merchant: a partial state, since such a key's events arrive on every partition) (migrate/feature_windows.py),
updated a fetch at a time (online/stream/applier.py), and, every ``stream_checkpoint_interval_s`` or
``stream_checkpoint_events``, writes the changed states, the partition's watermark and its next offset in one Redis
transaction (online/stream/checkpoint.py), written while the next fetch is parsed
(online/stream/checkpoint_writer.py). Serving evaluates the states at each request's instant.
On (re)assignment it resumes from exactly that checkpoint, so a processor killed at any instant yields the
same features as one that never stopped. Bad or untimely events go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry

from migrate.errors import BrokerUnavailableError, DeadLetterError
from migrate.feature_windows import Group, WindowState, groups_of
from migrate.realtime_schema import MAIN_STREAM
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    TopicPartition,
    ensure_topic,
    kafka_errors,
    partitions_for_topic,
    topic_id,
)
from online.stream.applier import EventApplier
from online.stream.arrival import Arrival
from online.stream.checkpoint import CheckpointStore, FencedError
from online.stream.checkpoint_writer import CheckpointWriter
from online.stream.event_schema import EventSchema, RejectReason
from online.stream.heap import fewer_collections
from online.stream.metrics import StreamMetrics
from online.stream.outputs import DeadLetter, StreamOutputs, dead_letter_topic
from online.stream.partition import Partition
from online.stream.topic import default_group, events_topic, key_bytes

__all__ = ["StreamProcessor", "StreamReport", "default_group", "events_topic", "key_bytes"]

log = logging.getLogger(__name__)
SESSION_TIMEOUT_MS = 6_000
JOIN_GRACE_S = 30.0
SWEEP_INTERVAL_S = 10.0


@dataclass
class StreamReport:
    """What one run consumed and wrote."""

    events: int = 0
    dead_letters: int = 0
    checkpoints: int = 0
    fenced: int = 0
    freshness_s: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))

    def __str__(self) -> str:
        return f"{self.events:,} events, {self.dead_letters:,} dead letters, {self.checkpoints:,} checkpoints"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: StreamProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.processor.release([tp.partition for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.processor.take([tp.partition for tp in assigned])


class StreamProcessor:
    """One member of the use case's stream-processing consumer group."""

    def __init__(
        self,
        settings: Settings,
        usecase: UseCase,
        *,
        bootstrap: str,
        redis_url: str,
        group_id: str | None = None,
        registry: CollectorRegistry = REGISTRY,
        stream: str = MAIN_STREAM,
    ) -> None:
        declared = usecase.realtime_features
        events = None if declared is None else declared.source(stream)[2]
        if events is None:
            raise ValueError(f"use case {usecase.name!r} declares no realtime_features.events")
        self.settings = settings
        self.usecase = usecase
        self.stream = stream
        self.schema = EventSchema(usecase, stream)
        # The groups this stream feeds; the entity's only when it has features of its own.
        self.groups: list[Group] = [g for g in groups_of(usecase) if g.spec.features and g.stream == stream]
        self.specs = {group.name: group.spec for group in self.groups}
        self.topic = events_topic(usecase, settings.events_topic_prefix, stream)
        self.partitions_declared = events.partitions
        self.bootstrap = bootstrap
        # One consumer group per use case and stream: members of one joining or leaving rebalance no other.
        self.group_id = group_id or default_group(usecase.name, stream)
        self.token = uuid.uuid4().hex
        self.client = redis.Redis.from_url(
            redis_url,
            socket_timeout=settings.redis_write_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
        )
        self.checkpoints = CheckpointStore(self.client, usecase.name, self.group_id)
        self.metrics = StreamMetrics.of(registry, usecase.name)
        self.partitions: dict[int, Partition] = {}
        self.report = StreamReport()
        self._consumer: Any = None
        self._outputs: StreamOutputs | None = None
        self._last_checkpoint = time.monotonic()
        self.arrival = Arrival(settings, self.schema.future_s)  # the processor's clock: wall, or MIGRATE_CLOCK_*
        self._halted: DeadLetterError | None = None  # a dead letter failed: nothing may be checkpointed any more
        self.writer = CheckpointWriter(self.checkpoints, self.token)  # in a thread of its own while `run` runs
        self.applier = EventApplier(
            self.schema,
            self.groups,
            stream=stream,
            received_s=self.arrival.received_s,
            dead_letter=self._dead_letter,
            counts=self.report,
        )

    # --- partitions ------------------------------------------------------------------------------------------

    def take(self, numbers: Sequence[int]) -> None:
        """Claim newly assigned partitions and resume each from its checkpoint."""
        self._settle()
        for number in numbers:
            start = self.checkpoints.claim(number, self.token)
            part = Partition(number, watermark=self.arrival.bounded(number, start.watermark))
            part.states = {
                (group, key): WindowState.from_json(self.specs[group], data)
                for (group, key), data in start.states.items()
                if group in self.specs  # a group since removed from the YAML: its state is dropped
            }
            part.next_offset = start.offset
            self.partitions[number] = part
            tp = TopicPartition(self.topic, number)
            if start.offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, start.offset)
            log.info("partition %d: resuming at offset %s with %d entities", number, start.offset, len(part.states))

    def release(self, numbers: Sequence[int]) -> None:
        """Checkpoint revoked partitions (if still ours and not halted by a failed dead letter) and forget them."""
        if self._halted is None:
            with contextlib.suppress(FencedError):
                self.checkpoint([n for n in numbers if n in self.partitions])
        for number in numbers:
            self.partitions.pop(number, None)

    # --- events ----------------------------------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        """Apply one message of a partition this processor owns, or dead-letter it (`handle_fetch` of one)."""
        self.handle_fetch([message])

    def handle_fetch(self, messages: Sequence[Any]) -> None:
        """Apply a fetch's messages of one partition this processor owns, or dead-letter each bad one
        (`EventApplier.apply`; a dead letter that fails raises `DeadLetterError`, the events before it applied)."""
        if not messages:
            return
        part = self.partitions.get(messages[0].partition)
        if part is None:
            return
        self.applier.apply(part, messages)

    def _dead_letter(self, message: Any, reason: RejectReason, detail: str) -> None:
        """Hand one message's dead letter to the producer and count it; a failure halts the processor."""
        assert self._outputs is not None
        try:
            self._outputs.dead_letter(DeadLetter.of(self.usecase.name, reason, detail, message))
        except DeadLetterError as exc:
            self._halted = exc
            raise
        self.metrics.dead_letter(reason)
        self.report.dead_letters += 1

    # --- checkpoints -----------------------------------------------------------------------------------------

    def checkpoint(self, numbers: Sequence[int] | None = None, *, wait: bool = True) -> None:
        """Flush dead letters, then write each partition's checkpoint (one transaction each).

        The states are serialized here; with ``wait=False`` (the loop) the Redis write runs in the writer thread
        while the next fetch is parsed, and is settled — its result taken, a fenced partition let go — before
        the next checkpoint, a (re)assignment, the caught-up check or the end of the run. One write at a time, so
        a partition's checkpoints land in order; a failed write raises at the next settle.
        """
        self._settle()
        chosen = [self.partitions[n] for n in (numbers if numbers is not None else list(self.partitions))]
        chosen = [p for p in chosen if p.pending and p.next_offset is not None]
        self._last_checkpoint = time.monotonic()
        if not chosen or self._halted is not None:
            return
        if self._outputs is not None:
            try:
                self._outputs.flush()  # before the offset moves past them: no dead letter is lost
            except DeadLetterError as exc:
                self._halted = exc
                raise
        self.writer.send(chosen)
        if wait:
            self._settle()

    def _settle(self) -> None:
        """Wait for the checkpoint write in flight, if any; count it, let fenced partitions go, raise its error."""
        for sent, written in self.writer.settle():
            part = sent.partition
            if written is None:
                log.warning("partition %d was taken over by another processor; letting it go", part.number)
                if self.partitions.get(part.number) is part:
                    del self.partitions[part.number]
                self.report.fenced += 1
                continue
            ages = [written - a for a in sent.arrivals]
            self.metrics.committed(sent.messages, ages)
            self.report.freshness_s.extend(ages)
            self.report.checkpoints += 1

    def sweep(self) -> int:
        """Drop window buckets no accepted event can reach any more (memory stays flat); returns entities swept."""
        swept = 0
        for part in self.partitions.values():
            for state in part.states.values():
                spec = state.spec
                horizon = part.watermark - spec.span * spec.resolution_s - self.schema.lateness_s
                if state.buckets and state.newest < horizon:
                    state.buckets = {}
                    swept += 1
        return swept

    # --- the loop --------------------------------------------------------------------------------------------

    def run(
        self,
        *,
        until_caught_up: bool = False,
        max_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> StreamReport:
        """Consume until stopped (or caught up with the topic's end, or `max_seconds`)."""
        settings = self.settings
        timeout_s = settings.kafka_timeout_s
        timeout_ms = int(timeout_s * 1000)
        self._consumer = self._outputs = None
        try:
            # Inside the try: a refused topic (`TopicRecreatedError`) or an absent broker still closes the client.
            ensure_topic(self.bootstrap, self.topic, self.partitions_declared, timeout_s=timeout_s)
            self.checkpoints.bind_topic(self.topic, topic_id(self.bootstrap, self.topic, timeout_s=timeout_s))
            dlq = dead_letter_topic(self.usecase.name, settings.dead_letter_topic_prefix)
            self._outputs = StreamOutputs(self.bootstrap, self.usecase.name, dlq, timeout_s)
            self._consumer = self._connect(timeout_ms)
            self._consumer.subscribe([self.topic], listener=_Listener(self))
            self.writer.start(f"migrate-stream-{self.usecase.name}-checkpoint")
            with fewer_collections():
                self._loop(until_caught_up, max_seconds, stop)
            self.checkpoint()
        except kafka_errors.KafkaError as exc:
            raise BrokerUnavailableError(
                f"stream processor of {self.usecase.name!r} lost Kafka at {self.bootstrap}: {exc}",
                fix="restart it once the broker is back; it resumes from its last checkpoint",
            ) from exc
        finally:
            self.writer.stop()  # a write in flight ends (or fails) before its client closes
            if self._consumer is not None:
                self._consumer.close(autocommit=False, timeout_ms=timeout_ms)
            if self._outputs is not None:
                self._outputs.close()
            self.client.close()
        return self.report

    def _connect(self, timeout_ms: int) -> Any:
        """The group's consumer (not yet subscribed).

        Raises:
            BrokerUnavailableError: no broker answered at the bootstrap address.
        """
        try:
            return KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id,
                client_id=f"migrate-stream-{self.usecase.name}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=1_000,
                max_poll_records=self.settings.stream_checkpoint_events,
                fetch_max_wait_ms=50,
                request_timeout_ms=max(timeout_ms, 1_000),
                bootstrap_timeout_ms=timeout_ms,
            )
        except kafka_errors.KafkaError as exc:
            raise BrokerUnavailableError(
                f"stream processor of {self.usecase.name!r}: no broker at {self.bootstrap}: {exc}", fix="start it"
            ) from exc

    def _loop(self, until_caught_up: bool, max_seconds: float | None, stop: threading.Event | None) -> None:
        settings = self.settings
        started = last_sweep = last_log = time.monotonic()
        logged_events = 0
        consumer = self._consumer
        behind = False
        while stop is None or not stop.is_set():
            if self._halted is not None:
                raise self._halted  # raised inside a rebalance callback, where kafka-python only logs it
            # Behind (more than one checkpoint's events fetched to the broker's end and not handled yet), the
            # checkpoints are fewer and larger: a checkpoint serializes each changed state whole, so at 0.1 s a
            # backlog's states were written again and again (docs/stream.md). Caught up, the interval bounds freshness.
            most = settings.stream_catch_up_checkpoint_events if behind else settings.stream_checkpoint_events
            polled = consumer.poll(timeout_ms=50, max_records=most)
            for messages in polled.values():
                self.handle_fetch(messages)
            behind = sum(self._waiting().values()) > settings.stream_checkpoint_events
            most = settings.stream_catch_up_checkpoint_events if behind else settings.stream_checkpoint_events
            interval = (
                settings.stream_catch_up_checkpoint_interval_s if behind else settings.stream_checkpoint_interval_s
            )
            now = time.monotonic()
            pending = sum(p.pending for p in self.partitions.values())
            if pending >= most or (pending and now - self._last_checkpoint >= interval):
                self.checkpoint(wait=False)
            elif self.writer.written():
                # A write that has ended is counted now, not at the next checkpoint: when the events pause (a
                # rehearsal's warm-up, then nothing until the day starts) it would wait, uncounted, for the next one.
                self._settle()
            if now - last_sweep >= SWEEP_INTERVAL_S:
                self.sweep()
                last_sweep = now
            if now - last_log >= 5.0:
                lag = self._lag()
                rate = (self.report.events - logged_events) / (now - last_log)
                log.info(
                    "%s: %.0f events/s, lag %d, %d dead letters, partitions %s",
                    self.usecase.name,
                    rate,
                    lag,
                    self.report.dead_letters,
                    sorted(self.partitions),
                )
                logged_events, last_log = self.report.events, now
            if max_seconds is not None and now - started >= max_seconds:
                return
            if until_caught_up and not polled and self._caught_up(now - started):
                return

    def _waiting(self) -> dict[int, int]:
        """Per partition of this member's: its events known to the broker (the high watermark its last fetch
        answered) and not handled yet; a partition no fetch has answered for yet is left out."""
        waiting = {}
        for number, part in self.partitions.items():
            high = self._consumer.highwater(TopicPartition(self.topic, number))
            if high is not None:
                waiting[number] = max(0, high - (part.next_offset or 0))
        return waiting

    def _lag(self) -> int:
        waiting = self._waiting()
        for number, lag in waiting.items():
            self.metrics.lag(number, lag)
        return sum(waiting.values())

    def _caught_up(self, elapsed: float) -> bool:
        """Whether the whole group is done: every partition of the topic checkpointed at its end offset.

        Not just this member's partitions: when another member dies, its partitions come here after the rebalance.

        A partition of this member's is at its end only once a fetch has answered for it, with the high watermark
        the broker holds then: the embedded broker (Tansu 0.6) answers `end_offsets` with the first offset of the
        partition's last produce batch plus one, short of the end by the rest of that batch. A run that resumed
        from a checkpoint inside that batch, and polled nothing before the first fetch answered, stopped there as
        caught up with the batch's tail not read (tests/unit/stream/test_caught_up.py).
        """
        self._settle()  # the last checkpoint written before its offsets are read back
        if not self.partitions and elapsed < JOIN_GRACE_S:
            return False
        if any(p.pending for p in self.partitions.values()):
            return False
        timeout_s = self.settings.kafka_timeout_s
        numbers = partitions_for_topic(self._consumer, self.topic, self.bootstrap, timeout_s=timeout_s)
        tps = [TopicPartition(self.topic, n) for n in sorted(numbers)]
        ends = self._consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
        done = self.checkpoints.positions()
        for tp in tps:
            end = ends[tp]
            if tp.partition in self.partitions:
                high = self._high_watermark(tp)
                if high is None:
                    return False  # no fetch has answered for it yet: its end is not known
                end = max(end, high)
            if done.get(tp.partition, 0) < end:
                return False
        return True

    def _high_watermark(self, tp: Any) -> int | None:
        try:
            high = self._consumer.highwater(tp)
        except kafka_errors.IllegalStateError:  # revoked since: its new owner decides
            return None
        return None if high is None else int(high)
