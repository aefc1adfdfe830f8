"""The shadow record schema and a logger that never blocks its caller, even with no broker at all."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from online.shadow.log import DROP_REASONS, ShadowLogger
from online.shadow.record import ShadowRecord


def record(i: int = 1, **changes: object) -> ShadowRecord:
    fields: dict[str, object] = {
        "request_id": f"req-{i}",
        "usecase": "item_availability",
        "key": {"store_id": 3, "product_id": f"p{i}"},
        "request_time": datetime(2026, 11, 25, 10, 30, tzinfo=UTC),
        "served_source": "batch_fallback",
        "stage": "canary",
        "percent": 12.5,
        "batch_prediction": 0.25,
        "batch_data_age_s": 3600.0,
        "batch_model_version": "v1",
        "batch_latency_ms": 0.4,
        "online_prediction": None,
        "online_feature_ages_s": {"sales_30m": 12.0},
        "online_model_version": "v2",
        "online_latency_ms": 7.5,
        "online_error": "TimeoutError: feature store",
        "context": {"client": "app"},
    }
    fields.update(changes)
    return ShadowRecord.model_validate(fields)


def test_record_round_trips_through_json() -> None:
    original = record()
    restored = ShadowRecord.from_json(original.to_json())
    assert restored == original
    assert restored.request_time.tzinfo is not None
    assert ShadowRecord.from_json(original.to_json().decode()) == original


def test_record_key_is_stable_across_key_order() -> None:
    assert record(key={"a": 1, "b": "x"}).key_bytes() == record(key={"b": "x", "a": 1}).key_bytes()


@pytest.mark.parametrize(
    "changes",
    [
        {"request_time": datetime(2026, 11, 25, 10, 30)},  # naive: ambiguous hour partition
        {"served_source": "cache"},
        {"percent": 101.0},
        {"key": {}},
        {"unknown_field": 1},
    ],
)
def test_record_rejects_malformed_fields(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        record(**changes)


def test_record_is_frozen() -> None:
    with pytest.raises(ValidationError):
        record().stage = "online"  # type: ignore[misc]


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts TCP connections (kernel backlog) and never answers a Kafka request.

    Harsher than a closed port (every attempt waits for its timeout) and it avoids kafka-python 3.0.12's leak of
    the socket of a refused connection, which pytest would report as an unraisable ResourceWarning.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _wait_closed(logger: ShadowLogger) -> None:
    """The thread may still be inside a bounded connection attempt when close() returns."""
    deadline = time.monotonic() + 10
    while not logger.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logger.closed


def test_log_returns_while_the_broker_never_answers(silent_broker: str) -> None:
    registry = CollectorRegistry()
    logger = ShadowLogger(silent_broker, "uc", queue_size=1_000, timeout_s=3.0, registry=registry)
    try:
        accepted = [logger.log(record(i)) for i in range(200)]
        # Every call came back although no broker can have answered: the records wait in the queue.
        assert all(accepted)
        assert not logger.connected
        stats = logger.stats()
        assert stats["sent"] == 0
        assert stats["queue_full"] == 0
    finally:
        logger.close(timeout_s=0.2)
    _wait_closed(logger)
    stats = logger.stats()
    assert stats["sent"] == 0
    assert stats["queued"] == 0
    assert sum(stats[reason] for reason in DROP_REASONS) == 200


def test_log_with_no_broker_drops_counts_and_stays_bounded(silent_broker: str) -> None:
    registry = CollectorRegistry()
    logger = ShadowLogger(silent_broker, "uc", queue_size=50, timeout_s=0.5, registry=registry)
    total = 3_000
    try:
        results = []
        deepest = 0
        for i in range(total):
            results.append(logger.log(record(i)))
            deepest = max(deepest, logger.stats()["queued"])
            depth = _sample(registry, "migrate_shadow_queue_depth", usecase="uc")
            assert depth <= 50
        assert deepest <= 50
        assert results.count(False) == logger.stats()["queue_full"]
        assert results.count(False) > 0  # 3000 records cannot all fit a queue of 50 while a connect waits
    finally:
        logger.close(timeout_s=0.5)
    _wait_closed(logger)
    stats = logger.stats()
    assert stats["sent"] == 0
    assert stats["queue_full"] + stats["broker_unavailable"] + stats["send_failed"] == total
    for reason in DROP_REASONS:
        assert _sample(registry, "migrate_shadow_records_dropped_total", usecase="uc", reason=reason) == stats[reason]
    assert logger.log(record()) is False  # closed: refused, and counted
    assert _sample(registry, "migrate_shadow_records_dropped_total", usecase="uc", reason="queue_full") == (
        stats["queue_full"] + 1
    )


def test_a_requests_records_are_queued_as_far_as_they_fit_and_the_rest_counted(silent_broker: str) -> None:
    """`log_many` (a request's records at once) keeps the queue's bound in records, not calls: the records that fit
    are queued in order, the others counted as dropped, and every one is accounted for when the logger closes."""
    registry = CollectorRegistry()
    logger = ShadowLogger(silent_broker, "uc", queue_size=50, timeout_s=0.5, gather_s=5.0, registry=registry)
    calls = [[record(100 * c + i) for i in range(size)] for c, size in enumerate((30, 30, 1, 0, 45))]
    try:
        taken = [logger.log_many(call) for call in calls]
        stats = logger.stats()
        # The logger's thread may have taken the first call off the queue already (to send it, waiting for a
        # broker that never answers), which leaves room for more: both outcomes keep the bound and the count.
        assert stats["queued"] <= 50
        assert taken[0] == 30
        assert taken[3] == 0
        assert sum(len(call) for call in calls) - sum(taken) == stats["queue_full"]
        assert stats["queue_full"] > 0  # 106 records cannot all fit a queue of 50 while a connect waits
        assert _sample(registry, "migrate_shadow_queue_depth", usecase="uc") == stats["queued"]
    finally:
        logger.close(timeout_s=0.5)
    _wait_closed(logger)
    stats = logger.stats()
    assert stats["queued"] == 0
    assert stats["sent"] == 0
    assert sum(stats[reason] for reason in DROP_REASONS) == sum(len(call) for call in calls)
    assert logger.log_many([record(1), record(2)]) == 0  # closed: refused, and counted
    assert logger.stats()["queue_full"] == stats["queue_full"] + 2


class _SlowPut:
    """A queue whose `put` waits for `release`: a caller interrupted between deciding to queue and queueing."""

    def __init__(self) -> None:
        self.inner: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, item: Any) -> None:
        self.entered.set()
        self.release.wait(5)
        self.inner.put(item)

    def get(self, timeout: float | None = None) -> Any:
        return self.inner.get(timeout=timeout)

    def get_nowait(self) -> Any:
        return self.inner.get_nowait()


def test_records_queued_while_the_logger_closes_are_counted_not_lost(silent_broker: str) -> None:
    """A `log_many` that had decided to queue when `close` began: its records are sent or counted as dropped by the
    close, never left uncounted on the queue after it (the queueing and the closing hold one lock)."""
    logger = ShadowLogger(silent_broker, "uc", queue_size=100, timeout_s=0.2, registry=CollectorRegistry())
    slow = _SlowPut()
    logger._queue = slow  # type: ignore[assignment]  # the moment between deciding to queue and queueing
    caller = threading.Thread(target=logger.log_many, args=([record(i) for i in range(3)],))
    caller.start()
    assert slow.entered.wait(5)
    closer = threading.Thread(target=logger.close, kwargs={"timeout_s": 0.2})
    closer.start()
    time.sleep(0.3)  # the close would have drained the queue and returned by now, had it not waited for the put
    slow.release.set()
    caller.join(5)
    closer.join(5)
    _wait_closed(logger)
    stats = logger.stats()
    assert stats["queued"] == 0
    assert stats["sent"] + sum(stats[reason] for reason in DROP_REASONS) == 3


def test_loggers_share_metrics_per_registry(silent_broker: str) -> None:
    registry = CollectorRegistry()
    first = ShadowLogger(silent_broker, "a", queue_size=1, timeout_s=0.2, registry=registry)
    second = ShadowLogger(silent_broker, "b", queue_size=1, timeout_s=0.2, registry=registry)
    third = ShadowLogger(silent_broker, "a", queue_size=1, timeout_s=0.2, registry=CollectorRegistry())
    for logger in (first, second, third):
        logger.close(timeout_s=0.2)
    assert first.topic == "migrate.shadow.a"
    assert second.topic == "migrate.shadow.b"


def test_close_is_bounded_with_no_broker(silent_broker: str) -> None:
    logger = ShadowLogger(silent_broker, "uc", timeout_s=0.3, registry=CollectorRegistry())
    for i in range(100):
        logger.log(record(i))
    logger.close(timeout_s=0.5)
    _wait_closed(logger)
    stats = logger.stats()
    assert stats["queued"] == 0
    assert stats["in_flight"] == 0
    assert sum(stats[reason] for reason in DROP_REASONS) == 100
