"""Coalesce the concurrent calls of one function into one call over all their items.

A 1-row ``predict_proba`` or a 1-key Redis read is mostly per-call overhead: under concurrent load, the requests
that arrive while a call runs wait for it and then go together as the next call. There is no timer: a request
that finds no call running starts one at once, so a lone request pays nothing for the batching.

`Batcher` runs a blocking function on a thread of its own (the lookup table's read: SQLite or PostgreSQL through
a blocking driver). `AsyncBatcher` awaits a coroutine function on the event loop itself (the online path, whose
feature read waits on the loop): no thread, so no hand-off to one and back (docs/serving.md, issue 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["AsyncBatcher", "Batcher"]

_Batch = list[tuple[Sequence[T], "asyncio.Future[list[R]]"]]  # the requests of one call: their items and futures


class _Coalescing(ABC, Generic[T, R]):
    """What both batchers share: the requests waiting, and which of them go together in the next call."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._waiting: deque[tuple[Sequence[T], asyncio.Future[list[R]]]] = deque()
        self._closing = False
        self.calls = 0  # calls made and items sent: their ratio is the batching achieved
        self.items = 0

    async def __call__(self, items: Sequence[T]) -> list[R]:
        """The results of `items`, computed together with those of the requests waiting beside them."""
        return await self.submit(items)

    @abstractmethod
    def submit(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """`items` queued for the next call; the future of their results."""

    def _take(self) -> tuple[_Batch[T, R], list[T]]:
        """The next call's requests (at most `max_items` items, or one larger request whole) and their items; the
        requests whose client went away while waiting are dropped."""
        batch: _Batch[T, R] = []
        flat: list[T] = []
        while self._waiting and (not flat or len(flat) + len(self._waiting[0][0]) <= self.max_items):
            items, future = self._waiting.popleft()
            if future.cancelled():  # the client went away while waiting
                continue
            batch.append((items, future))
            flat.extend(items)
        if batch:
            self.calls += 1
            self.items += len(flat)
        return batch, flat


class Batcher(_Coalescing[T, R]):
    """Runs ``call(items)`` on a thread of its own for the items of every request waiting, at most `max_items`
    at once (a single larger request still goes whole). ``call`` returns one result per item, in order; when it
    raises, every request of that call gets the exception. Only used from one event loop."""

    def __init__(self, call: Callable[[list[T]], Sequence[R]], *, max_items: int = 256, name: str = "batcher") -> None:
        super().__init__(max_items)
        self._call = call
        # One thread of its own fed by a queue: an executor's submit takes a lock and a semaphore and builds a
        # future per call (docs/serving.md, issue 14).
        self._calls: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, _Batch[T, R], list[T]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._busy = False

    def submit(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """`items` queued for the next call; the future of their results. Cancelling it drops the items if their
        call has not started, and their results if it has. Awaiting this future directly costs no task (a
        deadline goes around it with ``asyncio.timeout``, not ``wait_for``, which wraps it in one)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._waiting.append((items, future))
        if not self._busy:
            self._next(loop)
        return future

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, flat = self._take()
        if not batch:
            return
        self._busy = True
        if self._closing:
            self._deliver(loop, batch, [], RuntimeError("the batcher was closed"))
            return
        # The thread hands its results straight to the loop: ``run_in_executor`` would chain a second future to
        # the executor's, a few callbacks more per call on the event loop (docs/serving.md, issue 14).
        self._calls.put((loop, batch, flat))

    def _serve(self) -> None:
        """The thread: each call, then its results (or its exception) to the loop, until `close`."""
        while (work := self._calls.get()) is not None:
            self._run(*work)
            del work  # the requests' items and futures, not kept while the thread waits for the next call

    def _run(self, loop: asyncio.AbstractEventLoop, batch: _Batch[T, R], flat: list[T]) -> None:
        # A method of its own: its results are not held by the thread's frame once handed over, so they do not
        # outlive their requests (held until the next call, they survived into the collector's older generations).
        try:
            results: Sequence[R] = self._call(flat)
        except BaseException as exc:  # every request of the call gets it, as it would from the call itself
            self._deliver(loop, batch, [], exc)
        else:
            self._deliver(loop, batch, results, None)

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, batch: _Batch[T, R], results: Sequence[R], error: BaseException | None
    ) -> None:
        # A loop gone (closed, even between the check and the call) has no request left to answer.
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finish, loop, batch, results, error)

    def _finish(
        self, loop: asyncio.AbstractEventLoop, batch: _Batch[T, R], results: Sequence[R], error: BaseException | None
    ) -> None:
        self._busy = False
        _settle(batch, results, error)
        if self._waiting:
            self._next(loop)

    def close(self) -> None:
        """Stop the thread after the call in progress; a call asked for later fails at once."""
        self._closing = True
        self._calls.put(None)
        self._thread.join()


class AsyncBatcher(_Coalescing[T, R]):
    """`Batcher`'s coalescing for a coroutine function, awaited on the event loop: ``await call(items)`` for the
    items of every request waiting, at most `max_items` at once (a single larger request still goes whole), one
    call at a time, in a task of its own (a request that stops waiting, at its deadline, does not cancel the call
    the others share). ``call`` returns one result per item, in order; when it raises, every request of that call
    gets the exception. Only used from one event loop."""

    def __init__(self, call: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_items: int = 256) -> None:
        super().__init__(max_items)
        self._call = call
        self._task: asyncio.Task[None] | None = None  # the calls in progress: one task while requests wait

    def submit(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """`items` queued for the next call; the future of their results. Cancelling it drops the items if their
        call has not started, and their results if it has."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._waiting.append((items, future))
        if self._task is None:
            self._task = loop.create_task(self._calls())
        return future

    async def _calls(self) -> None:
        """The task: one call after another while requests wait, then it ends (the next request starts one)."""
        try:
            while self._waiting:
                batch, flat = self._take()
                if not batch:
                    continue
                if self._closing:
                    _settle(batch, [], RuntimeError("the batcher was closed"))
                    continue
                try:
                    results = await self._call(flat)
                except asyncio.CancelledError:  # `close` at shutdown: the requests of the call stop waiting
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # every request of the call gets it, as it would from the call itself
                    _settle(batch, [], exc)
                except BaseException as exc:  # the worker is stopping (KeyboardInterrupt): answered, then raised
                    _settle(batch, [], exc)
                    raise
                else:
                    _settle(batch, results, None)
                    del results  # not held while the next call runs: they go with their requests
                del batch, flat
        finally:
            self._task = None

    def close(self) -> None:
        """Stop the call in progress (from the loop: the worker's shutdown); a call asked for later fails at once."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()


def _settle(batch: _Batch[T, R], results: Sequence[R], error: BaseException | None) -> None:
    """Each request's share of the call's results, or the call's error; a request that stopped waiting is skipped."""
    if error is None and len(results) != sum(len(items) for items, _ in batch):
        error = RuntimeError(f"a batched call returned {len(results)} results for a different item count")
    start = 0
    for items, future in batch:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(list(results[start : start + len(items)]))
        start += len(items)
