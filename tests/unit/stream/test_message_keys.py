"""A message key costs its own length in memory: the processor remembers one per entity (KNOWN_KEYS of them).

orjson's result keeps its 4 KiB working buffer; the stream bench's 20,000 remembered keys held 78 MiB that way
(tracemalloc), and KNOWN_KEYS of them would have held ~800 MB.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import orjson
import pytest

from online.shadow.record import wire_record
from online.stream.processor import key_bytes

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 3, tzinfo=UTC)


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


def test_a_shadow_records_kept_key_costs_about_its_length() -> None:
    """The shadow logger's partitioner keeps each entity's key (up to 65,536): the same encoding, copied to size."""
    keys = [{"store_id": 1000 + i, "product_id": f"P{20000 + i}"} for i in range(2_000)]
    records = [
        wire_record(request_id=f"r{i}", usecase="uc", key=key, request_time=T0, served_source="batch", stage="shadow")
        for i, key in enumerate(keys)
    ]
    tracemalloc.start()
    try:
        kept = [record.key_bytes() for record in records]
        per_key = tracemalloc.get_traced_memory()[0] / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(keys[0], option=orjson.OPT_SORT_KEYS)
    assert kept[0] == records[0].decode().key_bytes()
    assert per_key < 200, f"{per_key:.0f} bytes held per ~40-byte key"
