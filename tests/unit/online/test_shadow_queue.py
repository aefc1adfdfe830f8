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
from online.serving.shadow_handoff import PROBLEM_BYTES, STARTING, ShadowProcess
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
    process._taken[0] += entities  # what the comparison process does for each job it takes
    process._taken[1] += 1


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
        process._taken[0] += 1  # what the comparison process does for each job it takes
        process._taken[1] += 1
        assert process.submit(b"room for one") and not process.submit(b"no more")
    finally:
        process._queue.cancel_join_thread()
        process._queue.close()


def test_the_jobs_of_one_loop_turn_leave_together_in_order(shadow: ShadowProcess) -> None:
    async def turn() -> None:
        assert [shadow.submit(b"job %d" % i, entities=i + 1) for i in range(3)] == [True, True, True]
        assert shadow._held and shadow._queue.empty()  # held until the loop's turn ends
        await asyncio.sleep(0)  # the turn ends: the flush ran
        assert not shadow._held
        assert shadow.submit(b"next turn", entities=2)

    asyncio.run(turn())
    assert shadow._queue.get(timeout=5) == [(1, b"job 0"), (2, b"job 1"), (3, b"job 2")]
    assert shadow._queue.get(timeout=5) == [(2, b"next turn")]
    assert shadow._submitted == 8
    # Off the event loop a job is sent at once, alone.
    assert shadow.submit(b"from a thread", entities=1)
    assert shadow._queue.get(timeout=5) == [(1, b"from a thread")]


def test_close_sends_what_is_held_before_stopping(shadow: ShadowProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(shadow._queue, "put_nowait", sent.append)
    monkeypatch.setattr(shadow._queue, "put", lambda item, timeout: sent.append(item))
    monkeypatch.setattr(shadow._process, "join", lambda timeout: None, raising=False)
    monkeypatch.setattr(shadow._process, "is_alive", lambda: False, raising=False)

    async def submit_then_close() -> None:
        shadow.submit(b"last", entities=1)
        shadow.close()  # before the turn ends: the held job goes first, then the stop

    asyncio.run(submit_then_close())
    assert sent == [[(1, b"last")], None]


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


def test_the_shadow_log_is_not_ok_until_the_process_first_reports(
    shadow: ShadowProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first report the process has delivered nothing: /readyz must not say "ok" yet."""
    monkeypatch.setattr(shadow._process, "is_alive", lambda: True, raising=False)
    assert shadow.health(USECASE.name) == STARTING.decode()
    assert shadow.channel(USECASE.name).health() == STARTING.decode()
    shadow._problems[0].value = b""  # what the process's first report writes while its logger delivers
    assert shadow.health(USECASE.name) is None
    shadow._problems[0].value = b"x" * (PROBLEM_BYTES - 1)  # the longest problem it writes still fits
    assert shadow.health(USECASE.name) == "x" * (PROBLEM_BYTES - 1)
