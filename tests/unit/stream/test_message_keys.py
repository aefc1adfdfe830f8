"""A message key costs its own length in memory: the processor remembers one per entity (KNOWN_KEYS of them).

orjson's result keeps its 4 KiB working buffer; the stream bench's 20,000 remembered keys held 78 MiB that way
(tracemalloc), and KNOWN_KEYS of them would have held ~800 MB.
"""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from online.stream.processor import key_bytes

pytestmark = pytest.mark.unit


def test_a_remembered_message_key_costs_about_its_length() -> None:
    keys = [{"store_id": 1000 + i, "product_id": 20000 + i} for i in range(2_000)]
    tracemalloc.start()
    try:
        kept = [key_bytes(key) for key in keys]
        per_key = tracemalloc.get_traced_memory()[0] / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(keys[0], option=orjson.OPT_SORT_KEYS)  # the same bytes, sorted JSON
    assert per_key < 200, f"{per_key:.0f} bytes held per ~40-byte key"
