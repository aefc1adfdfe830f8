"""The batcher: concurrent requests go together as one call, each gets its own results, a failure reaches all."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from online.serving.batcher import Batcher
from online.serving.prediction_paths import Key, Outcome, Paths
from online.serving.predictor import OnlineResult

pytestmark = pytest.mark.unit

WAIT_S = 10.0  # bounds every wait: a broken batcher fails the test instead of hanging it
T = TypeVar("T")


class Gate:
    """A blocking fake call: records each call's items, holds the first call until `release`."""

    def __init__(self, fail_on: object = None, short_by: int = 0) -> None:
        self.calls: list[list[Any]] = []
        self.first_started = threading.Event()
        self.released = threading.Event()
        self.fail_on, self.short_by = fail_on, short_by

    def __call__(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.released.wait(WAIT_S), "the test never released the first call"
        if self.fail_on in items:
            raise ValueError(f"cannot compute {self.fail_on}")
        results = [f"r{item}" for item in items]
        return results[: len(results) - self.short_by] if len(self.calls) > 1 else results


async def _bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def _while_busy(
    batcher: Batcher[Any, Any], gate: Gate, first: Sequence[Any], waiting: Sequence[Sequence[Any]]
) -> list[Any]:
    """Start `first`, submit `waiting` while its call runs, release it; every request's result or exception."""
    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(batcher(first))]
    assert await _bounded(loop.run_in_executor(None, gate.first_started.wait, WAIT_S))
    tasks += [asyncio.ensure_future(batcher(items)) for items in waiting]
    await asyncio.sleep(0)  # each task runs up to its await: all queued behind the running call
    assert len(gate.calls) == 1  # nothing else was called while the first call ran
    gate.released.set()
    return await _bounded(asyncio.gather(*tasks, return_exceptions=True))


def _run(gate: Gate, first: Sequence[Any], waiting: Sequence[Sequence[Any]], **options: Any) -> tuple[list[Any], Any]:
    batcher: Batcher[Any, Any] = Batcher(gate, **options)
    try:
        return asyncio.run(_while_busy(batcher, gate, first, waiting)), batcher
    finally:
        gate.released.set()
        batcher.close()


def test_requests_arriving_during_a_call_go_together_as_the_next_call() -> None:
    gate = Gate()
    results, batcher = _run(gate, [1], [[2, 3], [4], [5, 6, 7]])
    assert gate.calls == [[1], [2, 3, 4, 5, 6, 7]]
    assert results == [["r1"], ["r2", "r3"], ["r4"], ["r5", "r6", "r7"]]  # each its own, in order
    assert (batcher.calls, batcher.items) == (2, 7)


def test_a_lone_request_is_called_at_once_and_alone() -> None:
    gate = Gate()
    gate.released.set()
    batcher: Batcher[int, str] = Batcher(gate)
    try:
        assert asyncio.run(_bounded(batcher([1, 2]))) == ["r1", "r2"]
        assert asyncio.run(_bounded(batcher([3]))) == ["r3"]
    finally:
        batcher.close()
    assert gate.calls == [[1, 2], [3]]


def test_a_call_takes_at_most_max_items_but_a_larger_request_goes_whole() -> None:
    gate = Gate()
    results, _ = _run(gate, [1], [[2, 3], [4], [5, 6, 7, 8], [9]], max_items=3)
    assert gate.calls == [[1], [2, 3, 4], [5, 6, 7, 8], [9]]
    assert results == [["r1"], ["r2", "r3"], ["r4"], ["r5", "r6", "r7", "r8"], ["r9"]]


def test_a_failed_call_fails_every_request_in_it_and_only_those() -> None:
    gate = Gate(fail_on="boom")
    batcher: Batcher[Any, str] = Batcher(gate)
    try:
        results = asyncio.run(_while_busy(batcher, gate, [1], [[2], ["boom"], [3, 4]]))
        assert asyncio.run(_bounded(batcher([5]))) == ["r5"]  # the batcher is not stuck after a failure
    finally:
        gate.released.set()
        batcher.close()
    assert gate.calls == [[1], [2, "boom", 3, 4], [5]]
    assert results[0] == ["r1"]
    for result in results[1:]:
        assert isinstance(result, ValueError) and str(result) == "cannot compute boom"


def test_a_call_returning_the_wrong_count_fails_its_requests() -> None:
    results, _ = _run(Gate(short_by=1), [1], [[2], [3]])
    assert results[0] == ["r1"]
    assert all(isinstance(r, RuntimeError) and "different item count" in str(r) for r in results[1:])


# -- through the paths: a coalesced failure is each request's own, as it would be alone -------------------------


class GatedPredictor:
    """An online predictor that blocks its first call and fails every later one."""

    def __init__(self) -> None:
        self.gate = Gate(fail_on=("fails",))

    def predict(
        self, keys: Sequence[Key], now: datetime | Sequence[datetime], context: Any = None
    ) -> list[OnlineResult]:
        return [OnlineResult(prediction=0.5, model_version="v1") for _ in self.gate(list(keys))]


def test_paths_report_a_failed_coalesced_online_call_on_every_request() -> None:
    predictor = GatedPredictor()
    paths = Paths(lookup=None, lookup_spec=None, predictor=predictor)  # type: ignore[arg-type]
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    requests: list[list[Key]] = [[("ok",)], [("fails",), ("b",)], [("c",)]]

    async def serve() -> list[Outcome]:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(paths.online_async(requests[0], [0], now, {}))]
        assert await _bounded(loop.run_in_executor(None, predictor.gate.first_started.wait, WAIT_S))
        tasks.append(asyncio.ensure_future(paths.online_async(requests[1], [0, 1], now, {})))
        tasks.append(asyncio.ensure_future(paths.online_async(requests[2], [0], now, {})))
        await asyncio.sleep(0)
        predictor.gate.released.set()
        return list(await _bounded(asyncio.gather(*tasks)))

    try:
        first, failing, beside = asyncio.run(serve())
    finally:
        predictor.gate.released.set()
        paths.close()
    assert predictor.gate.calls[:2] == [[("ok",)], [("fails",), ("b",), ("c",)]]  # one call for the three
    assert first.error is None and first.results[0].prediction == 0.5
    alone = paths.online(requests[1], [0, 1], now, {})  # what the failing request gets when called by itself
    for outcome, asked in ((failing, {0, 1}), (beside, {0})):
        assert outcome.results == {} and outcome.asked == frozenset(asked)
        assert outcome.error == alone.error == "ValueError: cannot compute ('fails',)"


def test_a_call_asked_for_after_close_fails_at_once_and_the_thread_is_gone() -> None:
    gate = Gate()
    gate.released.set()
    batcher: Batcher[int, str] = Batcher(gate, name="closing-batcher")
    assert asyncio.run(_bounded(batcher([1]))) == ["r1"]
    batcher.close()
    assert not [t for t in threading.enumerate() if t.name == "closing-batcher"]
    with pytest.raises(RuntimeError, match="the batcher was closed"):
        asyncio.run(_bounded(batcher([2])))
    assert gate.calls == [[1]]


def test_a_call_that_raises_a_base_exception_fails_its_requests_and_the_thread_goes_on() -> None:
    class Stop(BaseException):
        pass

    def call(items: list[int]) -> list[str]:
        if 0 in items:
            raise Stop("stop")
        return [f"r{i}" for i in items]

    batcher: Batcher[int, str] = Batcher(call)
    try:
        with pytest.raises(Stop):
            asyncio.run(_bounded(batcher([0])))
        assert asyncio.run(_bounded(batcher([1]))) == ["r1"]
    finally:
        batcher.close()


def test_the_thread_holds_no_result_once_handed_over() -> None:
    """Held until the next call, a call's results outlived their requests into the collector's old generations."""

    class Result:
        pass

    made: list[weakref.ref[Result]] = []

    def call(items: list[int]) -> list[Result]:
        results = [Result() for _ in items]
        made.extend(weakref.ref(result) for result in results)
        return results

    batcher: Batcher[int, Result] = Batcher(call)
    try:
        assert len(asyncio.run(_bounded(batcher([1, 2])))) == 2
        deadline = time.monotonic() + WAIT_S  # the thread leaves its frame just after handing the results over
        while any(ref() is not None for ref in made) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(made) == 2 and all(ref() is None for ref in made)
    finally:
        batcher.close()
