"""The shadow log: one record per served request, sent to Kafka without ever slowing or blocking serving.

``ShadowLogger.log()`` only puts the record on a bounded in-memory queue; a daemon thread serialises it and hands
it to a ``KafkaProducer``. When Kafka is down or slow, records are dropped and counted — never waited for.
Memory is bounded twice: by the queue (``queue_size``) and by the records handed to the producer and not yet
acknowledged (``max_in_flight``; kafka-python 3 has no ``buffer_memory`` to do it for us).

The broker may move: the embedded one restarts on a new port and records it in its ``broker.json``. Given a
function for its address (``MIGRATE_KAFKA_BOOTSTRAP_FILE``, set by ``migrate serve``), the logger reads it at every
(re)connection and at every topic check, and reconnects when it changed or the broker stopped answering.
``health()`` says why records are not being delivered (``/readyz``'s ``shadow_log`` check).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from migrate.errors import BrokerError
from migrate.settings import Settings
from online.kafka import (
    Bootstrap,
    KafkaProducer,
    KeyHashPartitioner,
    bootstrap_from_file,
    ensure_topic,
    kafka_errors,
)
from online.shadow.record import ShadowRecord, WireRecord, shadow_topic

__all__ = ["DROP_REASONS", "Message", "ShadowLogger", "group_messages"]

log = logging.getLogger(__name__)

DropReason = Literal["queue_full", "send_failed", "broker_unavailable"]
DROP_REASONS: tuple[DropReason, ...] = ("queue_full", "send_failed", "broker_unavailable")


class _Metrics:
    """The logger's Prometheus series, created once per registry and shared by every logger on it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "migrate_shadow_records_sent", "Shadow records acknowledged by Kafka.", ["usecase"], registry=registry
        )
        self.dropped = Counter(
            "migrate_shadow_records_dropped",
            "Shadow records dropped instead of blocking serving.",
            ["usecase", "reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "migrate_shadow_queue_depth",
            "Shadow records waiting to be sent.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livesum",  # with several workers (PROMETHEUS_MULTIPROC_DIR): every live queue
        )
        self.healthy = Gauge(
            "migrate_shadow_log_healthy",
            "1 while shadow records are delivered, 0 while not.",
            ["usecase"],
            registry=registry,
            multiprocess_mode="livemin",  # with several workers: 0 while any of them cannot deliver
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    with _METRICS_LOCK:
        found = _METRICS.get(registry)
        if found is None:
            found = _METRICS[registry] = _Metrics(registry)
        return found


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message of the shadow log: the JSON of one or more records of one partition, one per line."""

    partition: int
    records: int
    key: bytes | None  # the entity key of a message of one record (as every message was before); none for several
    value: bytes

    @classmethod
    def of(cls, partition: int, records: list[tuple[bytes, bytes]]) -> Message:
        if len(records) == 1:
            key, value = records[0]
            return cls(partition, 1, key, value)
        return cls(partition, len(records), None, b"\n".join(value for _, value in records))


def group_messages(
    records: list[tuple[bytes, bytes]],
    partitions: list[int],
    partitioner: KeyHashPartitioner,
    *,
    records_per_message: int,
    message_bytes: int,
) -> list[Message]:
    """Encoded records (Kafka key, JSON) as the shadow log's messages: each record to its key's partition
    (`DefaultPartitioner`'s), in order; the records of one partition joined by newlines, up to `records_per_message`
    records and `message_bytes` bytes a message (a record larger than that alone is a message of its own).

    kafka-python costs ~40-55 µs of CPU per message sent whatever its size, ~6-8 µs per record at 100 records a
    message (docs/serving.md). JSON never holds a raw newline, so the sink splits a message back into its records.
    """
    grouped: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        grouped.setdefault(partitioner.for_key(key, partitions), []).append((key, value))
    messages: list[Message] = []
    for partition, of_partition in grouped.items():
        start, size = 0, 0
        for end, (_, value) in enumerate(of_partition):
            full = end - start >= records_per_message or size + len(value) > message_bytes
            if end > start and full:
                messages.append(Message.of(partition, of_partition[start:end]))
                start, size = end, 0
            size += len(value) + 1
        messages.append(Message.of(partition, of_partition[start:]))
    return messages


class ShadowLogger:
    """Non-blocking shadow logging to ``<prefix><usecase>``; the producer connects lazily and reconnects."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        usecase: str,
        *,
        topic_prefix: str = "migrate.shadow.",
        queue_size: int = 10_000,
        max_in_flight: int = 10_000,
        timeout_s: float = 5.0,
        max_block_ms: int = 200,
        linger_ms: int = 5,
        batch_bytes: int = 262_144,
        records_per_message: int = 100,
        message_bytes: int = 131_072,
        gather_s: float = 0.05,
        retry_after_s: float = 1.0,
        topic_check_s: float = 10.0,
        create_topic: bool = True,
        partitions: int = 1,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._problem: str | None = None  # why records are not delivered now; cleared by the next acknowledgement
        self._address = bootstrap if callable(bootstrap) else None
        self.bootstrap = bootstrap() if callable(bootstrap) else bootstrap
        self.usecase = usecase
        self.topic = shadow_topic(usecase, topic_prefix)
        self.queue_size = queue_size
        # The records queued by `log_many`, each call's as one list: a `queue.Queue` put and get cost ~2.9 µs a record
        # (its Python lock and conditions), a 100-record request's ~0.3 ms in the comparison process; this queue is C.
        # `_queued` (records, under `_queue_lock`) bounds it at `queue_size` records.
        self._queue: queue.SimpleQueue[list[ShadowRecord | WireRecord]] = queue.SimpleQueue()
        self._queue_lock = threading.Lock()
        self._queued = 0
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._max_block_ms = max_block_ms
        self._linger_ms = linger_ms
        self._batch_bytes = batch_bytes
        if records_per_message < 1 or message_bytes < 1:
            raise ValueError(
                f"a shadow log message holds at least one record and one byte, not records_per_message="
                f"{records_per_message}, message_bytes={message_bytes}"
            )
        # A message's records are in flight together: never more of them than may be in flight at all.
        self._records_per_message = min(records_per_message, max_in_flight)
        self._message_bytes = message_bytes
        self._gather_s = gather_s
        self._partitioner = KeyHashPartitioner()
        self._retry_after_s = retry_after_s
        self._topic_check_s = topic_check_s
        self._check_topic_at = 0.0
        self._failed_since_check = False
        self._create_topic = create_topic
        self._partitions = partitions
        metrics = _metrics(registry if registry is not None else REGISTRY)
        self._sent = metrics.sent.labels(usecase)
        self._dropped = {reason: metrics.dropped.labels(usecase, reason) for reason in DROP_REASONS}
        self._queue_depth = metrics.queue_depth.labels(usecase)
        self._healthy = metrics.healthy.labels(usecase)
        self._queue_depth.set_function(lambda: self._queued)
        self._healthy.set_function(lambda: 0 if self._problem else 1)
        self._counts: dict[str, int] = dict.fromkeys(("sent", *DROP_REASONS), 0)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._generation = 0  # bumps when a producer is discarded; its late callbacks are then ignored
        self._capacity = threading.Condition(self._lock)
        self._producer: Any = None
        self._retry_at = 0.0
        self._outage_logged = False  # warn once per outage, not once per retry
        self._last_ack = time.monotonic()
        self._closing = threading.Event()
        self._deadline = float("inf")  # set by close()
        self._thread = threading.Thread(target=self._run, name=f"shadow-log-{usecase}", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(
        cls, settings: Settings, usecase: str, *, bootstrap: str | None = None, **options: Any
    ) -> ShadowLogger:
        """A logger for ``usecase`` with the settings' prefix, queue size and timeout (``bootstrap`` overrides)."""
        configured = bootstrap or settings.kafka_bootstrap
        address: Bootstrap | None = configured
        if configured is not None and bootstrap is None and settings.kafka_bootstrap_file is not None:
            address = bootstrap_from_file(settings.kafka_bootstrap_file, configured)  # follows a restarted broker
        if address is None:
            raise BrokerError(
                f"no Kafka bootstrap address for the shadow log of {usecase!r}",
                fix="set MIGRATE_KAFKA_BOOTSTRAP, or pass the embedded broker's address (migrate.devservices.broker)",
            )
        options.setdefault("topic_prefix", settings.shadow_topic_prefix)
        options.setdefault("queue_size", settings.shadow_queue_size)
        options.setdefault("timeout_s", settings.kafka_timeout_s)
        return cls(address, usecase, **options)

    # -- the caller's side: never blocks ------------------------------------------------------------------------

    def log(self, record: ShadowRecord | WireRecord) -> bool:
        """Queue ``record`` (a `ShadowRecord`, or `wire_record`'s fields of one) for sending; False (and counted as
        dropped) if the queue is full or the logger closed."""
        return self.log_many((record,)) == 1

    def log_many(self, records: Sequence[ShadowRecord | WireRecord]) -> int:
        """Queue `records` (e.g. one request's) for sending, in order, as far as the queue has room; the rest are
        dropped and counted (``queue_full``), as all of them are once the logger closed. The number queued."""
        with self._queue_lock:  # close() sets `_closing` under it: what is queued before is sent or counted by it
            fits = 0 if self._closing.is_set() else max(0, min(len(records), self.queue_size - self._queued))
            if fits:
                self._queued += fits
                self._queue.put(list(records[:fits]))
        if fits < len(records):
            self._drop("queue_full", len(records) - fits)
        return fits

    def stats(self) -> dict[str, int]:
        """Records sent and dropped (by reason) by this logger, and those queued or in flight now."""
        with self._lock:
            counts = dict(self._counts)
            counts["in_flight"] = self._in_flight
        counts["queued"] = self._queued
        return counts

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def publish_gauges(self) -> None:
        """Write the queue depth and health as values: in multiprocess mode (several serving workers,
        ``PROMETHEUS_MULTIPROC_DIR``) a gauge's function is never read, only the value in its file."""
        self._queue_depth.set(self._queued)
        self._healthy.set(0 if self._problem else 1)

    def health(self) -> str | None:
        """None while records are delivered (or none was sent yet); else why not, e.g. the broker is unreachable."""
        return self._problem

    def close(self, timeout_s: float = 5.0) -> bool:
        """Send what can be sent within ``timeout_s``; drop (and count) the rest; True if the thread has stopped.

        A thread still inside a connection attempt (bounded by ``timeout_s`` of the constructor) stops, and counts
        the records it holds as dropped, when that attempt ends.
        """
        self._deadline = time.monotonic() + timeout_s
        with self._queue_lock:  # no record is queued after this, and every one queued before is drained below
            self._closing.set()
        self._thread.join(timeout=timeout_s + 0.5)  # the thread itself stops at the deadline
        self._drain_as_dropped("broker_unavailable")
        return self.closed

    @property
    def closed(self) -> bool:
        """Closed and its thread stopped: every record logged is now counted as sent or dropped."""
        return self._closing.is_set() and not self._thread.is_alive()

    def __enter__(self) -> ShadowLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the background thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take(500, wait_s=0.05)
            if batch:
                self._send(batch)
            elif self._closing.is_set():
                break
            if self._closing.is_set() and (self._producer is None or time.monotonic() >= self._deadline):
                break  # closing with no broker, or out of time: nothing more can be delivered
        producer, self._producer = self._producer, None
        if producer is not None:
            self._close_producer(producer, max(0.0, self._deadline - time.monotonic()))

    def _take(self, limit: int, wait_s: float) -> list[ShadowRecord | WireRecord]:
        """About `limit` records (whole `log_many` calls): the first call's within `wait_s`, then those queued
        ``gather_s`` later (none waited for once closing). A record waits at most ``gather_s`` more; the thread sends
        fuller messages less often (each message and each produce request costs CPU here and in the broker), and
        sleeps meanwhile rather than wake for every record logged."""
        try:
            batch = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return []
        if self._gather_s > 0 and self._queued < limit - 1:
            self._closing.wait(self._gather_s)  # returns at once when close() is called
        while len(batch) < limit:  # a call's records stay together: a batch may pass `limit` by one call's
            try:
                batch.extend(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._queue_lock:
            self._queued -= len(batch)
        return batch

    def _send(self, batch: list[ShadowRecord | WireRecord]) -> None:
        self._check_topic()
        producer = self._connected_producer()
        if producer is None:
            self._drop("broker_unavailable", len(batch))
            return
        try:
            partitions = producer.partitions_for(self.topic)
            why = "metadata timed out"
        except kafka_errors.KafkaError as exc:  # within max_block_ms (KafkaTimeoutError), or the broker refused
            partitions, why = None, f"no metadata for {self.topic}: {exc}"
        if not partitions:
            # The broker is gone or does not serve the topic: drop and count the batch, reconnect later.
            self._drop("broker_unavailable", len(batch))
            self._reset_producer(why)
            return
        messages = self._messages(batch, sorted(partitions))
        for index, message in enumerate(messages):
            if not self._reserve(message.records):
                self._drop("broker_unavailable", sum(m.records for m in messages[index:]))
                self._maybe_reconnect()
                return
            try:
                future = producer.send(self.topic, key=message.key, value=message.value, partition=message.partition)
            except kafka_errors.KafkaTimeoutError:
                self._release(count=message.records)
                self._drop("broker_unavailable", sum(m.records for m in messages[index:]))
                self._reset_producer("metadata timed out")
                return
            except (kafka_errors.KafkaError, ValueError, TypeError) as exc:
                # e.g. a single record larger than the producer's max_request_size: it alone fails, counted
                self._release(count=message.records)
                self._drop("send_failed", message.records)
                log.warning(
                    "%d shadow record(s) for %s (%d bytes) not sent: %s",
                    message.records,
                    self.topic,
                    len(message.value),
                    str(exc),
                )
                continue
            future.add_callback(functools.partial(self._on_sent, self._generation, message.records))
            future.add_errback(functools.partial(self._on_failed, self._generation, message.records))

    def _messages(self, batch: list[ShadowRecord | WireRecord], partitions: list[int]) -> list[Message]:
        """The batch as Kafka messages (`group_messages`); a record JSON cannot carry is counted as a failed send."""
        encoded: list[tuple[bytes, bytes]] = []
        for record in batch:
            try:
                encoded.append((record.key_bytes(), record.to_json()))
            except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
                self._drop("send_failed")
                log.warning("shadow record %s for %s not sent: %s", record.request_id, self.topic, str(exc))
        return group_messages(
            encoded,
            partitions,
            self._partitioner,
            records_per_message=self._records_per_message,
            message_bytes=self._message_bytes,
        )

    def _reserve(self, count: int) -> bool:
        """Take `count` in-flight slots, waiting at most max_block_ms for the broker to acknowledge earlier records."""
        room = self._max_in_flight - count
        with self._capacity:
            if self._in_flight > room:
                self._capacity.wait_for(lambda: self._in_flight <= room, self._max_block_ms / 1000)
            if self._in_flight > room:
                return False
            self._in_flight += count
            return True

    def _release(self, generation: int | None = None, outcome: str | None = None, *, count: int = 1) -> bool:
        with self._capacity:
            if generation is not None and generation != self._generation:
                return False  # already counted as dropped when its producer was discarded
            self._in_flight -= count
            if outcome is not None:
                self._counts[outcome] += count
            self._capacity.notify_all()
            return True

    def _on_sent(self, generation: int, count: int, _metadata: Any) -> None:
        self._last_ack = time.monotonic()
        self._problem = None
        if self._release(generation, "sent", count=count):
            self._sent.inc(count)

    def _on_failed(self, generation: int, count: int, exc: BaseException) -> None:
        self._failed_since_check = True
        if generation == self._generation:  # a discarded producer's late failures say nothing of the current one
            self._problem = f"records to {self.bootstrap} failed: {exc}"
        if self._release(generation, "send_failed", count=count):
            self._dropped["send_failed"].inc(count)
        log.debug("%d shadow record(s) for %s failed: %s", count, self.topic, str(exc))

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        self._dropped[reason].inc(count)
        with self._lock:
            self._counts[reason] += count

    def _drain_as_dropped(self, reason: DropReason) -> None:
        dropped = 0
        while True:
            try:
                dropped += len(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._queue_lock:
            self._queued -= dropped
        if dropped:
            self._drop(reason, dropped)

    def _check_topic(self) -> None:
        """Every ``topic_check_s`` and after failures: follow the broker if it moved, make sure the topic still
        exists (reconnect if it was gone), and reconnect if the broker no longer answers.

        A restarted broker with memory storage (Tansu) has lost the topic, yet acknowledges produce requests for
        it; a producer with stale metadata would keep sending into nothing. One restarted on another port leaves a
        producer that only ever retries the old one.
        """
        now = time.monotonic()
        if self._producer is None:
            return
        if now < self._check_topic_at and not self._failed_since_check:
            return
        self._check_topic_at = now + self._topic_check_s
        self._failed_since_check = False
        if self._address is not None:
            current = self._address()
            if current != self.bootstrap:
                self._reset_producer(f"the broker moved from {self.bootstrap} to {current}")
                self._retry_at = 0.0
                return
        if not self._create_topic:
            return
        try:
            created = ensure_topic(self.bootstrap, self.topic, self._partitions, timeout_s=self._timeout_s)
        except BrokerError as exc:
            self._reset_producer(f"Kafka at {self.bootstrap} does not answer: {exc.what}")
            return
        if created:
            self._reset_producer("topic was missing (broker restarted?)")
            self._retry_at = 0.0

    def _connected_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        now = time.monotonic()
        if now < self._retry_at or (self._closing.is_set() and now >= self._deadline):
            return None
        if self._address is not None:
            self.bootstrap = self._address()  # the embedded broker may have restarted on another port
        try:
            if self._create_topic:
                ensure_topic(self.bootstrap, self.topic, self._partitions, timeout_s=self._timeout_s)
            self._producer = KafkaProducer(**self._producer_config())
        except (kafka_errors.KafkaError, BrokerError) as exc:
            self._retry_at = time.monotonic() + self._retry_after_s
            self._problem = f"no Kafka broker at {self.bootstrap}: {exc}"
            # A string, not the exception: a retained log record must not keep its traceback (and socket) alive.
            level = logging.DEBUG if self._outage_logged else logging.WARNING
            self._outage_logged = True
            log.log(level, "shadow log %s: Kafka at %s unavailable, dropping: %s", self.topic, self.bootstrap, str(exc))
            return None
        self._last_ack = time.monotonic()
        self._outage_logged = False
        log.info("shadow log %s: connected to %s", self.topic, self.bootstrap)
        return self._producer

    def _producer_config(self) -> dict[str, Any]:
        timeout_ms = int(self._timeout_s * 1000)
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": f"migrate-shadow-{self.usecase}",
            "acks": 1,  # the leader's word is enough for an observability log; no wait for replicas
            "enable_idempotence": False,  # idempotence needs acks=all
            "retries": 2,
            "linger_ms": self._linger_ms,
            # Records gathered per partition before a produce request. kafka-python's 16 KiB default filled every
            # ~17 records of ~1 KB, each full batch a wake-up of the sender thread and a request: 65-88 µs of CPU
            # per record sent, against 30-38 µs at 256 KiB (same broker, 20,000 records, docs/serving.md).
            "batch_size": self._batch_bytes,
            # Each message's records (JSON, every one naming its features) shrink ~6x with lz4: on the bench's
            # embedded broker, 0.73-1.0 ms of its CPU per ~129 KB message against 0.23-0.28 ms, the producer's
            # CPU no higher (docs/serving.md, item 16). The broker stores the batch as sent; consumers (the sink)
            # decompress it.
            "compression_type": "lz4",
            "max_block_ms": self._max_block_ms,
            "request_timeout_ms": timeout_ms,
            "delivery_timeout_ms": timeout_ms + self._linger_ms + 1000,
            "bootstrap_timeout_ms": timeout_ms,
            "reconnect_backoff_ms": 50,
            "reconnect_backoff_max_ms": 1000,
            # Topics are created explicitly (ensure_topic on every (re)connect). Auto-creation by a metadata
            # request raced with produce requests on a restarted Tansu and left records that no fetch returns.
            "allow_auto_create_topics": False,
            # The partition kafka-python's default gives each entity key, its murmur2 (pure Python) kept per key.
            "partitioner": KeyHashPartitioner(),
        }

    def _maybe_reconnect(self) -> None:
        """In-flight records stuck for longer than a delivery timeout: the connection is dead; start afresh."""
        if time.monotonic() - self._last_ack > 2 * self._timeout_s + 1:
            self._reset_producer("no acknowledgement")

    def _reset_producer(self, why: str) -> None:
        self._problem = why  # until the next acknowledgement
        producer, self._producer = self._producer, None
        with self._capacity:
            lost, self._in_flight = self._in_flight, 0
            self._generation += 1
            self._capacity.notify_all()
        if lost:
            self._drop("send_failed", lost)
        self._retry_at = time.monotonic() + self._retry_after_s
        log.warning("shadow log %s: %s; reconnecting in %.1fs", self.topic, why, self._retry_after_s)
        if producer is not None:
            self._close_producer(producer, 0.0)

    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        try:
            producer.close(timeout=timeout_s)
        except kafka_errors.KafkaError as exc:
            log.warning("shadow log %s: producer close failed: %s", self.topic, str(exc))
