"""The shadow log follows the state dir's embedded broker when it restarts on another port, and says so meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from migrate.devservices.shared_broker import broker_file, shared_bootstrap, stop_shared_broker
from migrate.settings import Settings, get_settings
from online.shadow.log import DROP_REASONS, ShadowLogger
from online.shadow.record import ShadowRecord
from online.shadow.sink import run_sink

pytestmark = pytest.mark.integration


def record(i: int) -> ShadowRecord:
    return ShadowRecord(
        request_id=f"req-{i:06d}",
        usecase="uc",
        key={"store_id": 1, "product_id": f"p{i}"},
        request_time=datetime(2026, 11, 25, 10, tzinfo=UTC) + timedelta(seconds=i),
        served_source="batch",
        stage="shadow",
        batch_prediction=0.5,
        batch_model_version="v1",
        online_prediction=0.5,
        online_model_version="v2",
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Settings]:
    """A state dir whose shared broker is stopped after the test, whatever happened in it."""
    chosen = get_settings(state_dir=tmp_path / "state").model_copy(update={"kafka_bootstrap": None})
    yield chosen
    stop_shared_broker(chosen)


# kafka-python 3.0.12 drops the socket of a refused connection unclosed while the old port is dialled.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_shadow_log_follows_the_embedded_broker_to_its_new_port_and_counts_what_it_lost(state: Settings) -> None:
    first = shared_bootstrap(state)
    # What `migrate serve` gives its workers: the address now, and the file that names it after a restart.
    worker = state.model_copy(
        update={"kafka_bootstrap": first, "kafka_bootstrap_file": broker_file(state), "kafka_timeout_s": 1.0}
    )
    registry = CollectorRegistry()
    logger = ShadowLogger.from_settings(worker, "uc", registry=registry, topic_check_s=0.5, retry_after_s=0.2)
    logged = 0
    try:
        for _ in range(20):
            assert logger.log(record(logged))
            logged += 1
        wait_until(lambda: logger.stats()["sent"] == 20, 30, "the first records to be acknowledged")
        assert logger.health() is None

        stop_shared_broker(state)
        second = shared_bootstrap(state)  # the next command that needs Kafka starts it again, on another port
        assert second != first
        problems: set[str] = set()
        deadline = time.monotonic() + 60
        while logger.stats()["sent"] < 60 and time.monotonic() < deadline:
            logger.log(record(logged))
            logged += 1
            problem = logger.health()
            if problem is not None:
                problems.add(problem)
            time.sleep(0.01)
        assert logger.stats()["sent"] >= 60, logger.stats()
        assert any(second in problem for problem in problems), problems  # it said why, naming where it went
        wait_until(lambda: logger.health() is None, 30, "the logger to report itself healthy again")
        assert registry.get_sample_value("migrate_shadow_log_healthy", {"usecase": "uc"}) == 1
    finally:
        logger.close(timeout_s=10)
        stats = logger.stats()
    # Nothing lost silently: every record logged is counted as sent or dropped (with its reason).
    assert stats["sent"] + sum(stats[reason] for reason in DROP_REASONS) == logged, stats
    report = run_sink(state, "uc", idle_timeout_s=5, bootstrap=second)
    assert report.shadow_rows == stats["sent"] - 20  # all sent after the move are in the new broker
