"""A bounded background pool: work beyond its capacity is refused (and counted), never queued without limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BoundedPool:
    """At most `capacity` tasks queued or running; `submit` returns None instead of growing memory."""

    def __init__(self, workers: int, capacity: int, name: str = "migrate-bg") -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(capacity)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | None:
        """Run `fn(*args)` in the background, or return None when the pool is full."""
        if not self._slots.acquire(blocking=False):
            return None
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            self._slots.release()
            return None
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting work and, with `wait`, finish what is queued."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
