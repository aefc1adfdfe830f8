"""A started worker's full garbage collections walk what requests allocate, not the start-up heap.

Before this, each full pass walked every object the imports and the model left (hundreds of thousands) and took
100-120 ms on the bench's worker at 16 connections: the whole p99 (docs/serving.md, "Where the tail came from").
The figure checked here is what a full pass walks (`gc.get_objects()`: generations 0-2, not the permanent one),
not a time, so the test holds on a loaded machine.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from online.serving.app import create_app
from tests.unit.online.test_app_requests import URL, EchoServer, deps_with

pytestmark = pytest.mark.unit


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()  # the test measures from a heap that no earlier test froze
    gc.collect()  # nor the garbage earlier tests left: only what is alive counts
    yield
    gc.unfreeze()  # and leaves the process's collector as it found it


def test_a_started_worker_keeps_its_start_up_heap_out_of_full_collections(unfrozen: None) -> None:
    walked_before = len(gc.get_objects())
    assert walked_before > 50_000  # the imports alone (FastAPI, NumPy, sklearn, pydantic): what used to be walked
    with TestClient(create_app(deps_with(EchoServer()))) as client:  # `with`: runs the app's start-up
        walked_after_start = len(gc.get_objects())
        for _ in range(50):  # requests allocate and free; none of it pins the heap back into the collector
            assert client.post(URL, json={"entities": [{"store_id": 1, "product_id": 2}]}).status_code == 200
        gc.collect()
        walked_after_requests = len(gc.get_objects())
    assert gc.get_freeze_count() >= walked_before * 0.9
    assert walked_after_start < walked_before / 20, (walked_before, walked_after_start)
    assert walked_after_requests < walked_before / 20, (walked_before, walked_after_requests)
