"""The process while a comparison runs: BLAS on one thread, and the objects alive before it out of the collector's way.

A comparison keeps both cores busy with DuckDB's two threads and its own (`comparisons.background`). Two things
of the process took CPU from them without doing the comparison's work (measured on the 10,000,000-row bench,
docs/comparisons.md):

* **OpenBLAS's threads.** The paired bootstrap's weighted means (`w @ values`, 100 × 20,000) start OpenBLAS's
  pool, whose threads then spin waiting for more: ~3 % of the report's CPU samples were ``blas_thread_server``.
  The products are small; one thread computes the same numbers.
* **The collector's full passes.** Each one walks every object the process holds, the libraries' included
  (sklearn, scipy, matplotlib, pydantic); the export of a lookup version and the feature-skew check made five of
  them (~0.25 s, holding the GIL). `gc.freeze` moves the objects alive when the comparison starts to the permanent
  generation (the service does the same after start-up: online/serving/heap.py), so a pass walks only what the
  comparison made. The comparison's own garbage is still collected; the frozen objects again at the end.

Both settings are process-wide. Comparisons running at once on several threads share them: the first to start
sets them, the last to end puts them back.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import threadpool_limits

__all__ = ["tuned"]


class _Shared:
    """What the comparisons running now share: how many, the limiter they set, whether the first froze the heap (a
    caller that froze it already keeps its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.limits: Any = None  # threadpoolctl's limiter
        self.froze = False


_shared = _Shared()


@contextmanager
def tuned() -> Iterator[None]:
    """Run the block with BLAS on one thread and the objects alive at its start frozen (see the module docstring);
    both are put back when the last block running ends."""
    with _shared.lock:
        if _shared.active == 0:
            _shared.froze = gc.get_freeze_count() == 0
            if _shared.froze:
                gc.freeze()
            _shared.limits = threadpool_limits(limits=1, user_api="blas")
        _shared.active += 1
    try:
        yield
    finally:
        with _shared.lock:
            _shared.active -= 1
            if _shared.active == 0:
                _shared.limits.restore_original_limits()
                _shared.limits = None
                if _shared.froze:
                    gc.unfreeze()
