"""The shadow queue: bounded in jobs and in entities in flight; what it refuses is dropped and counted."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from migrate.cutover.flags import Flag, Stage
from migrate.cutover.guardrail import Guardrail
from migrate.registry import load_usecase
from migrate.usecase import CutoverPolicy
from online.serving.metrics import ServingMetrics
from online.serving.prediction_paths import Key, Outcome
from online.serving.shadow_handoff import ShadowProcess
from online.serving.usecase_server import UseCaseServer

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")


class IdleProcess:
    """Stands in for the comparison process: never started, so nothing leaves the queue unless the test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass


@pytest.fixture
def shadow(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShadowProcess]:
    monkeypatch.setattr(multiprocessing.get_context("spawn"), "Process", IdleProcess)
    process = ShadowProcess([USECASE.name], capacity=1_000, max_entities=10_000, registry=CollectorRegistry())
    yield process
    process._queue.cancel_join_thread()
    process._queue.close()


def _take(process: ShadowProcess, entities: int) -> None:
    process._taken.value += entities  # what the comparison process does for each job it takes


def test_the_queue_refuses_jobs_beyond_the_entity_bound(shadow: ShadowProcess) -> None:
    assert all(shadow.submit(b"job %d" % i, entities=100) for i in range(100))  # 10,000 entities in flight
    assert shadow.submit(b"one more", entities=1) is False
    assert shadow.submit(b"one more", entities=100) is False
    _take(shadow, 100)  # the process took one job: room for 100 entities, no more
    assert shadow.submit(b"fits", entities=100) is True
    assert shadow.submit(b"too many", entities=1) is False


def test_a_single_job_larger_than_the_bound_is_refused(shadow: ShadowProcess) -> None:
    assert shadow.submit(b"job", entities=10_001) is False
    assert shadow.submit(b"job", entities=10_000) is True


def test_the_queue_is_bounded_in_jobs_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing.get_context("spawn"), "Process", IdleProcess)
    process = ShadowProcess([USECASE.name], capacity=3, max_entities=10_000, registry=CollectorRegistry())
    try:
        assert [process.submit(b"job %d" % i) for i in range(5)] == [True, True, True, False, False]
        assert process._submitted == 3  # a refused job does not count as in flight
    finally:
        process._queue.cancel_join_thread()
        process._queue.close()


class LookupOnlyPaths:
    """Paths whose lookup answers every key with a miss (shadow stage reads only the lookup in the request)."""

    async def lookup_read_async(self, keys: Sequence[Key], indexes: Sequence[int]) -> Outcome:
        return Outcome(dict.fromkeys(indexes), 0.1, asked=frozenset(indexes))


class ShadowFlags:
    def current(self, usecase: str) -> Flag:
        return Flag(usecase, Stage.SHADOW, revision=1)


def test_a_request_the_full_queue_refuses_is_served_and_counted_as_skipped(shadow: ShadowProcess) -> None:
    registry = CollectorRegistry()
    server = UseCaseServer(
        USECASE,
        paths=LookupOnlyPaths(),  # type: ignore[arg-type]
        flags=ShadowFlags(),  # type: ignore[arg-type]
        guardrail=Guardrail.from_policy(CutoverPolicy()),
        shadow=shadow.channel(USECASE.name),
        background=None,  # type: ignore[arg-type]
        metrics=ServingMetrics(registry),
        on_breach=None,
        clock=lambda: datetime(2026, 11, 25, 10, tzinfo=UTC),
    )
    entities: list[dict[str, int | str]] = [{"store_id": 1, "product_id": p} for p in range(100)]

    def skipped() -> float:
        return registry.get_sample_value("migrate_shadow_skipped_total", {"usecase": USECASE.name}) or 0.0

    for _ in range(100):  # 100 requests of 100 entities fill the 10,000-entity bound
        answer = asyncio.run(server.predict(entities, {}))
        assert len(answer["predictions"]) == 100
    assert skipped() == 0 and shadow._submitted == 10_000
    answer = asyncio.run(server.predict(entities[:1], {}))
    assert [p["source"] for p in answer["predictions"]] == ["batch"]  # still served
    assert skipped() == 1 and shadow._submitted == 10_000
