"""`comparisons.runtime.tuned`: BLAS on one thread and the heap frozen while comparisons run, put back after."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from comparison_fixtures import USECASE, label, record, write_shadow
from threadpoolctl import threadpool_info

from comparisons import comparison, staleness
from comparisons.runtime import tuned
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("heap_not_frozen")]


@pytest.fixture
def heap_not_frozen() -> Iterator[None]:
    """Each test starts with nothing frozen (an app started in this process by an earlier test freezes its heap:
    online/serving/heap.py), and leaves the heap frozen again if it was."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    yield
    if frozen:
        gc.freeze()


def _blas_threads() -> list[int]:
    np.ones((2, 2)) @ np.ones(2)  # numpy's BLAS is loaded with numpy; a product makes sure
    return [int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_blas_runs_on_one_thread_and_the_heap_is_frozen_inside_and_both_come_back() -> None:
    before = _blas_threads()
    assert before, "numpy's BLAS must be visible to threadpoolctl for this test to mean anything"
    assert gc.get_freeze_count() == 0
    with tuned():
        assert _blas_threads() == [1] * len(before)
        assert gc.get_freeze_count() > 0
    assert _blas_threads() == before
    assert gc.get_freeze_count() == 0


def test_a_heap_the_caller_froze_stays_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with tuned():
            pass
        assert gc.get_freeze_count() == frozen  # not unfrozen by us
    finally:
        gc.unfreeze()


def test_overlapping_comparisons_put_the_settings_back_only_when_the_last_ends() -> None:
    """A comparison on another thread starts after this one and ends before it: the settings hold until this one
    ends. (The first one here runs on the main thread, as `compare` does in the CLI, the DAG and the bench: OpenBLAS
    0.3.30-0.3.31 did not always take a thread count set from another thread once one had been set and put back.)"""
    before = _blas_threads()
    inner_done = threading.Event()
    seen: list[tuple[list[int], int]] = []

    def inner() -> None:
        with tuned():
            seen.append((_blas_threads(), gc.get_freeze_count()))
        inner_done.set()

    with tuned():
        thread = threading.Thread(target=inner)
        thread.start()
        assert inner_done.wait(10)
        thread.join(10)
        after_inner = (_blas_threads(), gc.get_freeze_count())
    assert seen[0][0] == [1] * len(before)
    assert seen[0][1] > 0
    assert after_inner[0] == [1] * len(before)  # the inner one ended: still tuned for this one
    assert after_inner[1] > 0
    assert _blas_threads() == before
    assert gc.get_freeze_count() == 0


def test_the_comparison_runs_tuned(settings: Settings, usecase: UseCase, monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare` itself runs inside `tuned`: a metric sees one BLAS thread and a frozen heap."""
    write_shadow(settings, [record(1, 0, bp=0.8, op=0.9), record(2, 10, bp=0.3, op=0.6)], [label(30, 1.0)])
    assert usecase.name == USECASE
    seen: list[tuple[list[int], int]] = []
    measure = staleness.measure

    def spy(rows: object) -> object:
        seen.append((_blas_threads(), gc.get_freeze_count()))
        return measure(rows)  # type: ignore[arg-type]

    monkeypatch.setattr(staleness, "measure", spy)
    comparison.compare(usecase, settings)
    assert len(seen) == 1
    threads, frozen = seen[0]
    assert set(threads) == {1}
    assert frozen > 0
    assert gc.get_freeze_count() == 0
