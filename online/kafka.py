"""Kafka clients: the one place that imports kafka-python, with topic and producer helpers every stream uses.

kafka-python's protocol classes call the deprecated ``importlib.resources.read_text`` at import time, a warning
silenced here rather than in every caller. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import orjson

from migrate.errors import BrokerUnavailableError, TopicError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.errors as kafka_errors  # type: ignore[import-untyped]
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
    from kafka.admin import NewTopic  # type: ignore[import-untyped]
    from kafka.consumer.subscription_state import ConsumerRebalanceListener  # type: ignore[import-untyped]
    from kafka.partitioner import DefaultPartitioner, Partitioner  # type: ignore[import-untyped]
    from kafka.partitioner.default import murmur2  # type: ignore[import-untyped]

__all__ = [
    "Bootstrap",
    "ConsumerRebalanceListener",
    "DefaultPartitioner",
    "KafkaConsumer",
    "KafkaProducer",
    "KeyHashPartitioner",
    "OffsetAndMetadata",
    "TopicPartition",
    "acknowledged_producer",
    "bootstrap_from_file",
    "ensure_topic",
    "fetched_end_offsets",
    "kafka_errors",
    "partitions_for_topic",
    "topic_id",
    "wait_for_broker",
]


Bootstrap = str | Callable[[], str]
"""A bootstrap address, or a function giving the current one (an embedded broker that restarts on a new port)."""


def bootstrap_from_file(path: Path, fallback: str) -> Callable[[], str]:
    """The address recorded in `path` (the embedded broker's ``broker.json``: ``{"pid": …, "port": …}``), read
    afresh at each call; `fallback` while the file is missing or unreadable (the broker is being restarted)."""

    def current() -> str:
        try:
            port = int(orjson.loads(path.read_bytes())["port"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return fallback
        return f"127.0.0.1:{port}"

    return current


class _AdminClient(KafkaAdminClient):  # type: ignore[misc]
    """``KafkaAdminClient`` that stops its IO thread when bootstrapping fails (kafka-python 3.0.12 leaks it)."""

    def __init__(self, **config: Any) -> None:
        try:
            super().__init__(**config)
        except BaseException:
            if hasattr(self, "_net"):
                self._closed = False
                with contextlib.suppress(Exception):
                    self.close()
            raise


def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Return once a metadata request to ``bootstrap`` succeeds; raise ``BrokerUnavailableError`` after timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
        try:
            admin = _AdminClient(
                bootstrap_servers=bootstrap, request_timeout_ms=remaining_ms, bootstrap_timeout_ms=remaining_ms
            )
        except kafka_errors.KafkaError as exc:
            last = exc
            time.sleep(0.05)
            continue
        try:
            admin.list_topics()
            return
        except kafka_errors.KafkaError as exc:
            last = exc
            time.sleep(0.05)
        finally:
            admin.close()
    raise BrokerUnavailableError(
        f"no Kafka broker answered at {bootstrap} within {timeout_s:.1f}s ({last})",
        fix="start the broker, check MIGRATE_KAFKA_BOOTSTRAP, or raise MIGRATE_KAFKA_TIMEOUT_S",
    )


def _admin(bootstrap: str, timeout_s: float) -> Any:
    timeout_ms = int(timeout_s * 1000)
    try:
        return _AdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:.1f}s ({exc})",
            fix="start the broker or check MIGRATE_KAFKA_BOOTSTRAP",
        ) from exc


def ensure_topic(bootstrap: str, name: str, partitions: int = 1, *, timeout_s: float = 5.0) -> bool:
    """Create topic ``name`` unless it exists; True if this call created it."""
    admin = _admin(bootstrap, timeout_s)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=int(timeout_s * 1000))
        return True
    except kafka_errors.TopicAlreadyExistsError:
        return False
    except kafka_errors.KafkaError as exc:
        raise TopicError(
            f"topic {name!r} could not be created at {bootstrap}: {exc}",
            fix="create it with the team's Kafka tooling, or grant this client CREATE on the cluster",
        ) from exc
    finally:
        admin.close()


class KeyHashPartitioner(Partitioner):  # type: ignore[misc]
    """kafka-python's `DefaultPartitioner` (the Java client's murmur2 of the key), each key's hash kept.

    kafka-python computes murmur2 in pure Python: ~13 µs for a 36-byte entity key, as much as the rest of a
    shadow record's send. Entities come back (a product is asked for all day), so each key's hash is kept, up to
    `keys` of them (then forgotten all at once, as the feature store's caches are). A record goes to the partition
    `DefaultPartitioner` picks (tests/unit/online/test_kafka_partitioner.py); a record without a key goes to its
    random one.
    """

    def __init__(self, keys: int = 65_536) -> None:
        self._keys = keys
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def partition(  # noqa: PLR0917 - kafka-python's Partitioner interface
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        if serialized_key is None or not (partitions := cluster.partitions_for_topic(topic)):
            # no key, or a topic the metadata does not know: the library decides (or raises)
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        return self.for_key(serialized_key, partitions)

    def for_key(self, serialized_key: bytes, partitions: Collection[int]) -> int:
        """The partition of `serialized_key` among the topic's `partitions` (all of them, not only the available:
        `DefaultPartitioner` hashes a key over every partition). The shadow log picks partitions itself, to send
        several records of one partition in one message."""
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._keys:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


def acknowledged_producer(bootstrap: str, client_id: str, timeout_s: float, **options: Any) -> Any:
    """A producer for records that must not be lost (acks=all), every wait bounded by `timeout_s`.

    Raises:
        BrokerUnavailableError: no broker answered at `bootstrap`.
    """
    timeout_ms = int(timeout_s * 1000)
    config: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "max_block_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        "delivery_timeout_ms": timeout_ms + 1000,
        "bootstrap_timeout_ms": timeout_ms,
    }
    try:
        return KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, **(config | options))
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(f"{client_id}: no broker at {bootstrap}: {exc}", fix="start it") from exc


def topic_id(bootstrap: str, name: str, *, timeout_s: float = 5.0) -> str | None:
    """The topic's id (a UUID string; a new one each time the topic is recreated), or None if it does not exist."""
    admin = _admin(bootstrap, timeout_s)
    try:
        described = admin.describe_topics([name])
    except kafka_errors.UnknownTopicOrPartitionError:
        return None
    except kafka_errors.KafkaError as exc:
        raise TopicError(f"topic {name!r} could not be described at {bootstrap}: {exc}", fix="check broker") from exc
    finally:
        admin.close()
    for entry in described:
        if entry.get("name") == name and not entry.get("error_code"):
            value = entry.get("topic_id")
            return None if value is None else str(value)
    return None


def partitions_for_topic(consumer: Any, topic: str, bootstrap: str, *, timeout_s: float = 5.0) -> set[int]:
    """The topic's partition numbers: from `consumer`'s metadata when it has them, else asked within `timeout_s`.

    ``KafkaConsumer.partitions_for_topic`` of kafka-python 3.0.12 waits for a metadata refresh with no timeout at
    all (``wait_for(future, None)``) when the topic is not in its cache: a broker gone at that moment hangs the
    caller. So the cache is read directly (this module is kafka-python's one wrapper) and a miss goes to a bounded
    admin request.

    Raises:
        TopicError: the broker did not answer within `timeout_s`.
    """
    cached = consumer._cluster.partitions_for_topic(topic)  # the cache only: never blocks
    if cached is not None:
        return set(cached)
    admin = _admin(bootstrap, timeout_s)
    try:
        described = admin.describe_topics([topic])
    except kafka_errors.KafkaError as exc:
        raise TopicError(
            f"the partitions of topic {topic!r} could not be read at {bootstrap} within {timeout_s:.1f}s: {exc}",
            fix="check the broker and MIGRATE_KAFKA_BOOTSTRAP, or raise MIGRATE_KAFKA_TIMEOUT_S",
        ) from exc
    finally:
        admin.close()
    for entry in described:
        if entry.get("name") == topic and not entry.get("error_code"):
            return {int(p["partition_index"]) for p in entry.get("partitions", [])}
    return set()


def fetched_end_offsets(consumer: Any, tps: list[Any], *, timeout_s: float = 5.0) -> dict[Any, int]:
    """Each partition's end offset as a fetch tells it: its high watermark, and at least the broker's end offset.

    The embedded broker (Tansu 0.6) answers a ListOffsets for the latest offset (kafka-python's `end_offsets`) with
    the first offset of the partition's last produce batch plus one, short of the end by the rest of that batch;
    a fetch's high watermark is right. `consumer` (one without a group: it is assigned `tps` here, and read from
    each partition's reported end) must not be in use.

    Raises:
        TopicError: no fetch answered for every partition within `timeout_s`.
    """
    timeout_ms = int(timeout_s * 1000)
    ends = consumer.end_offsets(tps, timeout_ms=timeout_ms)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, ends[tp])
    found: dict[Any, int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        consumer.poll(timeout_ms=100, max_records=1)  # the fetch answers with each partition's high watermark
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                found[tp] = max(int(ends[tp]), int(high))
        if len(found) == len(tps):
            return found
        if time.monotonic() >= deadline:
            missing = sorted(tp.partition for tp in tps if tp not in found)
            raise TopicError(
                f"no fetch answered for partitions {missing} of {tps[0].topic!r} within {timeout_s:.1f}s",
                fix="check the broker and MIGRATE_KAFKA_BOOTSTRAP, or raise MIGRATE_KAFKA_TIMEOUT_S",
            )
