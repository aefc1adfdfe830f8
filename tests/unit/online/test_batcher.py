"""The batchers: concurrent requests go together as one call, each gets its own results, a failure reaches all.

Each coalescing test runs on both: `Batcher` (a blocking call on its thread) and `AsyncBatcher` (a coroutine awaited
on the loop; here the same blocking call awaited through a thread of asyncio's, as a store without an asyncio
client reads)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from online.serving.batcher import AsyncBatcher, Batcher
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
    batcher: AnyBatcher, gate: Gate, first: Sequence[Any], waiting: Sequence[Sequence[Any]]
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


AnyBatcher = Batcher[Any, Any] | AsyncBatcher[Any, Any]


def _batcher(kind: str, call: Any, **options: Any) -> AnyBatcher:
    if kind == "thread":
        return Batcher(call, **options)

    async def awaited(items: list[Any]) -> Any:
        return await asyncio.to_thread(call, items)

    return AsyncBatcher(awaited, **options)


@pytest.fixture(params=["thread", "loop"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run(
    gate: Gate, first: Sequence[Any], waiting: Sequence[Sequence[Any]], kind: str = "thread", **options: Any
) -> tuple[list[Any], Any]:
    batcher = _batcher(kind, gate, **options)
    try:
        return asyncio.run(_while_busy(batcher, gate, first, waiting)), batcher
    finally:
        gate.released.set()
        batcher.close()


def test_requests_arriving_during_a_call_go_together_as_the_next_call(kind: str) -> None:
    gate = Gate()
    results, batcher = _run(gate, [1], [[2, 3], [4], [5, 6, 7]], kind)
    assert gate.calls == [[1], [2, 3, 4, 5, 6, 7]]
    assert results == [["r1"], ["r2", "r3"], ["r4"], ["r5", "r6", "r7"]]  # each its own, in order
    assert (batcher.calls, batcher.items) == (2, 7)


def test_a_lone_request_is_called_at_once_and_alone(kind: str) -> None:
    gate = Gate()
    gate.released.set()
    batcher = _batcher(kind, gate)
    try:
        assert asyncio.run(_bounded(batcher([1, 2]))) == ["r1", "r2"]
        assert asyncio.run(_bounded(batcher([3]))) == ["r3"]
    finally:
        batcher.close()
    assert gate.calls == [[1, 2], [3]]


def test_a_call_takes_at_most_max_items_but_a_larger_request_goes_whole(kind: str) -> None:
    gate = Gate()
    results, _ = _run(gate, [1], [[2, 3], [4], [5, 6, 7, 8], [9]], kind, max_items=3)
    assert gate.calls == [[1], [2, 3, 4], [5, 6, 7, 8], [9]]
    assert results == [["r1"], ["r2", "r3"], ["r4"], ["r5", "r6", "r7", "r8"], ["r9"]]


def test_a_failed_call_fails_every_request_in_it_and_only_those(kind: str) -> None:
    gate = Gate(fail_on="boom")
    batcher = _batcher(kind, gate)
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


def test_a_call_returning_the_wrong_count_fails_its_requests(kind: str) -> None:
    results, _ = _run(Gate(short_by=1), [1], [[2], [3]], kind)
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

    async def predict_async(
        self, keys: Sequence[Key], now: datetime | Sequence[datetime], context: Any = None
    ) -> list[OnlineResult]:
        return await asyncio.to_thread(self.predict, keys, now, context)  # as a store without an asyncio client


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


# -- the loop's batcher: a call is a task of its own ------------------------------------------------------------


def test_a_request_that_stops_waiting_leaves_the_loops_call_to_the_others() -> None:
    """A deadline cancels the request's own future, not the call it shares with others (as the thread's call goes
    on when its requests stop waiting)."""
    release = asyncio.Event()
    calls: list[list[int]] = []

    async def call(items: list[int]) -> list[str]:
        calls.append(list(items))
        await release.wait()
        return [f"r{i}" for i in items]

    async def serve() -> tuple[Any, Any, Any]:
        batcher: AsyncBatcher[int, str] = AsyncBatcher(call)
        first = asyncio.ensure_future(batcher([1]))
        await asyncio.sleep(0.01)  # the first call runs, alone
        patient = asyncio.ensure_future(batcher([2]))
        impatient = asyncio.ensure_future(asyncio.wait_for(batcher([3]), 0.01))
        gone = await asyncio.gather(impatient, return_exceptions=True)
        release.set()
        return await _bounded(first), await _bounded(patient), gone[0]

    first, patient, gone = asyncio.run(serve())
    assert (first, patient) == (["r1"], ["r2"]) and isinstance(gone, TimeoutError)
    assert calls == [[1], [2]]  # the request that gave up before its call started was dropped from it


def test_closing_the_loops_batcher_stops_its_call_and_refuses_the_next() -> None:
    started = asyncio.Event()

    async def call(items: list[int]) -> list[str]:
        started.set()
        await asyncio.sleep(WAIT_S)
        return [f"r{i}" for i in items]

    async def serve() -> tuple[Any, Any]:
        batcher: AsyncBatcher[int, str] = AsyncBatcher(call)
        waiting = asyncio.ensure_future(batcher([1]))
        await _bounded(started.wait())
        batcher.close()  # as the worker's shutdown does, on the loop
        stopped = (await asyncio.gather(waiting, return_exceptions=True))[0]
        refused = (await asyncio.gather(_bounded(batcher([2])), return_exceptions=True))[0]
        return stopped, refused

    stopped, refused = asyncio.run(serve())
    assert isinstance(stopped, asyncio.CancelledError)
    assert isinstance(refused, RuntimeError) and str(refused) == "the batcher was closed"


def test_the_loops_batcher_holds_no_result_once_handed_over() -> None:
    """While its next call runs, the task holds nothing of the call before it (held, they outlived their requests
    into the collector's older generations, as the thread's did)."""

    class Result:
        pass

    made: list[weakref.ref[Result]] = []
    started: list[list[int]] = []
    first_may_end, second_may_end = asyncio.Event(), asyncio.Event()

    async def call(items: list[int]) -> list[Result]:
        started.append(items)
        await (first_may_end if len(started) == 1 else second_may_end).wait()
        results = [Result() for _ in items]
        made.extend(weakref.ref(result) for result in results)
        return results

    async def serve() -> list[bool]:
        batcher: AsyncBatcher[int, Result] = AsyncBatcher(call)
        first = asyncio.ensure_future(batcher([1, 2]))
        while not started:  # the first call runs, alone
            await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher([3]))  # queued behind it: the same task's next call
        first_may_end.set()
        assert len(await _bounded(first)) == 2
        del first  # the request is answered and gone
        while len(started) < 2:  # the task is inside the second call now
            await asyncio.sleep(0)
        gc.collect()
        alive = [ref() is not None for ref in made]
        second_may_end.set()
        assert len(await _bounded(second)) == 1
        return alive

    assert asyncio.run(serve()) == [False, False]
