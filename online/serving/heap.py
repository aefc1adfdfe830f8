"""Keep the garbage collector's full passes off the request path's tail.

A worker's heap after start-up (FastAPI, pandas, sklearn, the model, the feature specs) holds a few hundred
thousand objects that live as long as the process. CPython's full collection (generation 2) walks all of them:
measured on the bench's worker at 16 connections, 100–120 ms per pass, about once every 2 s, with every
request in flight waiting behind it. That pause, not the work, was the p99 (docs/serving.md, "Where the tail
came from"). `gc.freeze()` moves the objects alive at that moment to a permanent generation the collector never
walks, so a full pass only looks at what was allocated since: the requests in flight.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

__all__ = ["settle_heap"]


def settle_heap() -> int:
    """Collect what start-up left as garbage, then freeze every object still alive; returns how many are frozen.

    Called once, when a worker has loaded everything it serves with (the app's start-up). A model swapped in
    later is not frozen: its objects are few (NumPy arrays, not one object per node), and freezing again would
    pin the model it replaced. Frozen objects are still freed by reference counting; only cycles among them
    would stay until the worker exits.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's passes", frozen)
    return frozen
