"""The processor's garbage-collector thresholds: raised for the run, never lowered, restored after."""

from __future__ import annotations

import gc

import pytest

from online.stream.heap import YOUNG_THRESHOLD, fewer_collections

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("young", [700, YOUNG_THRESHOLD * 2])
def test_the_young_threshold_is_raised_for_the_block_and_restored(young: int) -> None:
    before = gc.get_threshold()
    gc.set_threshold(young, 11, 12)
    try:
        with pytest.raises(RuntimeError), fewer_collections():
            assert gc.get_threshold() == (max(young, YOUNG_THRESHOLD), 11, 12)
            raise RuntimeError("the thresholds come back on the way out of an error too")
        assert gc.get_threshold() == (young, 11, 12)
    finally:
        gc.set_threshold(*before)
