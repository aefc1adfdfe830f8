"""Event validation: every kind of bad input is a rejection with its reason, never an exception."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from migrate.registry import Registry
from online.stream.event_schema import EventSchema, Rejection, ValidEvent

pytestmark = pytest.mark.unit

GOOD = {
    "event_id": "scan-1",
    "event_time": "2026-11-14T10:00:00+00:00",
    "store_id": 1001,
    "product_id": 20001,
    "found": True,
}


@pytest.fixture(scope="module")
def schema() -> EventSchema:
    return EventSchema(Registry(Path(__file__).parents[3] / "usecases").get("item_availability"))


def test_a_good_event_parses(schema: EventSchema) -> None:
    event = schema.parse(orjson.dumps({**GOOD, "extra": "ignored"}))
    assert isinstance(event, ValidEvent)
    assert event.key == (1001, 20001) and event.event_id == "scan-1"
    assert event.time_s == 1_794_650_400.0  # 2026-11-14T10:00Z


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "bad_json"),
        (None, "bad_json"),
        (b'"a string"', "not_an_object"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "found"}), "missing_field"),
        (orjson.dumps({**GOOD, "store_id": None}), "missing_field"),
        (orjson.dumps({**GOOD, "store_id": "1001"}), "wrong_type"),
        (orjson.dumps({**GOOD, "store_id": True}), "wrong_type"),
        (orjson.dumps({**GOOD, "found": 1}), "wrong_type"),
        (orjson.dumps({**GOOD, "event_time": "2026-11-14T10:00:00"}), "wrong_type"),
        (orjson.dumps({**GOOD, "event_time": 1763114400}), "wrong_type"),
        (orjson.dumps({**GOOD, "event_id": ""}), "wrong_type"),
    ],
)
def test_bad_events_are_rejected_with_the_reason(schema: EventSchema, raw: bytes | None, reason: str) -> None:
    result = schema.parse(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason and result.detail


def test_timing_lateness_and_future(schema: EventSchema) -> None:
    event = schema.parse(orjson.dumps(GOOD))
    assert isinstance(event, ValidEvent)
    t = event.time_s
    assert schema.timing(event, watermark_s=t + 299, arrived_s=t) is None  # 4m59s late: allowed
    late = schema.timing(event, watermark_s=t + 301, arrived_s=t)
    assert late is not None and late.reason == "too_late"
    assert schema.timing(event, watermark_s=t, arrived_s=t - 299) is None
    future = schema.timing(event, watermark_s=t, arrived_s=t - 301)
    assert future is not None and future.reason == "in_future"
