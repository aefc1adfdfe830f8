"""Work on a thread of its own while the caller goes on: DuckDB releases the GIL while a query runs, and so do
numpy's sorts and arithmetic, so a query on the caller's thread and numpy work here use both cores."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["in_background"]

P = ParamSpec("P")
T = TypeVar("T")


def in_background(name: str, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``function(*args, **kwargs)`` started on a thread named `name`; its result, or the exception it raised,
    comes through the future (`Future.result`), so an error surfaces where the caller waits for it."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return pool.submit(function, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task
