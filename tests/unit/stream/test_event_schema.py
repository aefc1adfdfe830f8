"""Event validation: every kind of bad input is a rejection with its reason, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("raw", [{**GOOD, "found": None}, {k: v for k, v in GOOD.items() if k != "found"}])
def test_a_value_field_may_be_null_or_absent_and_reads_none(schema: EventSchema, raw: dict[str, object]) -> None:
    """Not a key, the time or the id: an unknown value, read as training reads a NULL in the event table."""
    for event in (schema.parse(orjson.dumps(raw)), schema.parse_reference(orjson.dumps(raw))):
        assert isinstance(event, ValidEvent)
        assert event.fields["found"] is None and event.key == (1001, 20001)
    expected = [1_794_650_400.0 if name == "event_time" else raw.get(name) for name in schema.names]
    assert schema.parse_fetch([orjson.dumps(raw)]) == [expected]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "bad_json"),
        (None, "bad_json"),
        (b'"a string"', "not_an_object"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "event_id"}), "missing_field"),
        (orjson.dumps({**GOOD, "store_id": None}), "missing_field"),
        (orjson.dumps({**GOOD, "event_time": None}), "missing_field"),
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
    assert schema.timing(event.time_s, watermark_s=t + 299, arrived_s=t) is None  # 4m59s late: allowed
    late = schema.timing(event.time_s, watermark_s=t + 301, arrived_s=t)
    assert late is not None and late.reason == "too_late"
    assert schema.timing(event.time_s, watermark_s=t, arrived_s=t - 299) is None
    future = schema.timing(event.time_s, watermark_s=t, arrived_s=t - 301)
    assert future is not None and future.reason == "in_future"


# --- the fast path (msgspec) against the reference (orjson + plain checks), on hostile input ------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(
        [
            "2026-11-14T10:00:00+00:00",
            "2026-11-14T10:00:00Z",
            "2026-11-14 10:00:00Z",
            "2026-11-14T10:00:00.123456789Z",  # msgspec would round the nanoseconds; fromisoformat truncates
            "2026-11-14T10:00Z",
            "2026-11-14T10:00:00+0530",
            "2026-11-14T10:00:00",  # naive
            "20261114T100000Z",
            "2026-02-30T10:00:00Z",
            "2026-11-14T24:00:00Z",
            "",
        ]
    ),
    st.lists(st.integers(), max_size=2),
)


@given(
    event=st.fixed_dictionaries(
        {},
        optional={name: _VALUES for name in ("event_id", "event_time", "store_id", "product_id", "found", "x")},
    ),
    good=st.fixed_dictionaries({}, optional={name: st.just(value) for name, value in GOOD.items()}),
)
@settings(max_examples=400, deadline=None)
def test_the_fast_path_parses_exactly_as_the_reference(schema: EventSchema, event: dict, good: dict) -> None:
    raw = json.dumps({**good, **event}).encode()  # the standard library writes integers of any size
    assert schema.parse(raw) == schema.parse_reference(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":1,"store_id":2,"product_id":3,"found":true}',
        b'{"event_id":"\\ud800","event_time":"2026-11-14T10:00:00Z","store_id":1,"product_id":3,"found":true}',
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":1e999,"product_id":3,"found":true}',
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":18446744073709551615,"product_id":3,"found":true}',
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":99999999999999999999999,"product_id":3,"found":1}',
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":1.0,"product_id":3,"found":true}',
        b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":1,"product_id":3,"found":true} x',
        b"[1, 2]",
        b"",
    ],
)
def test_the_fast_path_agrees_on_duplicates_surrogates_and_huge_numbers(schema: EventSchema, raw: bytes) -> None:
    assert schema.parse(raw) == schema.parse_reference(raw)


def test_a_float_field_reads_ints_and_floats_as_the_reference_does() -> None:
    usecase = Registry(Path(__file__).parents[3] / "usecases").get("fraud_detection")
    fraud = EventSchema(usecase)
    floats = [name for name, kind in fraud.types.items() if kind == "float"]
    assert floats, "the fraud example declares a float field (the amount)"
    base = {name: GOOD_FRAUD[kind] for name, kind in fraud.types.items()}
    for value in (0, 1, -3, 2**53 + 1, 1e-320, 0.1, 1.7976931348623157e308, 2**64, 10**30):
        raw = json.dumps({**base, floats[0]: value}).encode()
        parsed = fraud.parse(raw)
        assert parsed == fraud.parse_reference(raw)
        assert isinstance(parsed, ValidEvent) and parsed.fields[floats[0]] == float(value)


GOOD_FRAUD = {"int": 7, "float": 1.5, "str": "x", "bool": True, "datetime": "2026-11-14T10:00:00Z"}


def test_a_good_event_takes_the_fast_path(schema: EventSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    def reference(raw: bytes | None) -> None:
        raise AssertionError(f"the reference parsed {raw!r}")

    monkeypatch.setattr(schema, "parse_reference", reference)
    assert isinstance(schema.parse(orjson.dumps(GOOD)), ValidEvent)
    assert isinstance(schema.parse(orjson.dumps({**GOOD, "event_time": "2026-11-14T10:00:00.5Z"})), ValidEvent)


_HOSTILE = [
    b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":1,"store_id":2,"product_id":3,"found":true}',
    b'{"event_id":"a","event_time":"2026-11-14T10:00:00Z","store_id":18446744073709551615,"product_id":3,"found":true}',
    b'{"event_id":"a","event_time":"2026-11-14T10:00:00.123456789Z","store_id":1,"product_id":3,"found":true}',
    b"[1, 2]",
    b"",
    b"{nope",
    None,
]


@given(
    events=st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={name: _VALUES for name in ("event_id", "event_time", "store_id", "product_id", "found")},
            ).map(lambda event: json.dumps({**GOOD, **event}).encode()),
            st.sampled_from(_HOSTILE),
            st.just(orjson.dumps(GOOD)),
        ),
        max_size=12,
    )
)
@settings(max_examples=300, deadline=None)
def test_a_fetch_parses_as_its_messages_one_by_one(schema: EventSchema, events: list[bytes | None]) -> None:
    rows = schema.parse_fetch(events)
    assert len(rows) == len(events)
    for raw, row in zip(events, rows, strict=True):
        one = schema.parse(raw)
        if isinstance(one, Rejection):
            assert row == one
        else:
            assert not isinstance(row, Rejection)
            assert row == [one.fields[name] for name in schema.names]
            assert schema.event_of(row) == one
