"""The event history leaves out what the stream processor refuses, and counts it.

Found reading the replay: the stream dead-letters an event with a null entity key, time, id or group key, a NaN or
infinite number (JSON cannot carry them) or an empty string, but training's and a backtest's windows read the event
table as it was: a null time was skipped in silence, a null key's events kept under None, a NaN went into a sum,
and a replay to Kafka wrote a NaN as JSON null, which the stream then accepts. Now every read of the history keeps
the rows the stream's parse accepts (`migrate.batch.event_history._select`) and `refused_events` counts the rest.
Each test compares against an independent computation: the stream's own parse of the JSON a producer would send,
or the windows over a table from which the refused rows were deleted by hand.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.batch.event_history import (
    RealtimeHistory,
    iter_events,
    realtime_features_at,
    refused_by_stream,
    refused_events,
)
from migrate.feature_windows import required_event_fields
from migrate.usecase import UseCase
from online.stream.event_schema import EventSchema, ValidEvent
from tests.unit.origin_flights import flight_events, origin_flights

pytestmark = pytest.mark.unit

FIELDS = {"event_id": "str", "event_time": "datetime", "origin": "str", "kind": "str", "delay": "float"}
FEATURES = [
    {"name": "events_60m", "aggregation": "count", "window": "60m"},
    {"name": "delay_sum_60m", "aggregation": "sum", "field": "delay", "window": "60m"},
]
T = datetime(2001, 3, 1, 10, 0)
GOOD = [  # (id, time, origin, kind, delay)
    ("g1", T, "PDX", "departed", 4.0),
    ("g2", T + timedelta(minutes=5), "PDX", "scheduled", None),  # an optional value not known: kept
    ("g3", T + timedelta(minutes=9), "PDX", None, 2.5),
    ("g4", T + timedelta(minutes=12), "SEA", "departed", 7.0),
]
REFUSED = [
    ("r1", T + timedelta(minutes=1), None, "departed", 1.0),  # no entity key
    (None, T + timedelta(minutes=2), "PDX", "departed", 1.0),  # no id
    ("r3", None, "PDX", "departed", 1.0),  # no time
    ("r4", T + timedelta(minutes=3), "PDX", "departed", math.nan),  # NaN
    ("r5", T + timedelta(minutes=4), "PDX", "departed", math.inf),  # infinity
    ("r6", T + timedelta(minutes=6), "", "departed", 1.0),  # an empty key
    ("r7", T + timedelta(minutes=7), "PDX", "", 1.0),  # an empty optional string: the stream refuses it too
]
END = datetime(2001, 3, 2, tzinfo=UTC)


def usecase() -> UseCase:
    return origin_flights(FIELDS, FEATURES)


def _store(path: Path, rows: list[tuple[Any, ...]]) -> duckdb.DuckDBPyConnection:
    return flight_events(path, "delay DOUBLE", rows)


def _producer_json(row: tuple[Any, ...]) -> bytes:
    """The message a producer would send for a row (Python's json: NaN and Infinity as its non-standard tokens)."""
    event = dict(zip(FIELDS, row, strict=True))
    moment = event["event_time"]
    event["event_time"] = None if moment is None else moment.isoformat() + "Z"
    return json.dumps(event).encode()


def _stream_accepts(schema: EventSchema, row: tuple[Any, ...]) -> bool:
    return isinstance(schema.parse(_producer_json(row)), ValidEvent)


def test_the_history_keeps_what_the_stream_accepts_and_counts_the_rest(tmp_path: Path) -> None:
    con = _store(tmp_path / "offline.duckdb", GOOD + REFUSED)
    schema = EventSchema(usecase())
    assert [_stream_accepts(schema, r) for r in GOOD] == [True] * len(GOOD)
    assert [_stream_accepts(schema, r) for r in REFUSED] == [False] * len(REFUSED)
    kept = [e["event_id"] for e in iter_events(con, usecase(), T.replace(tzinfo=UTC), END)]
    assert kept == ["g1", "g2", "g3", "g4"]
    assert refused_events(con, usecase(), END) == len(REFUSED)
    # A range counts the rows timed in it, and those with no time (they belong to no range, and are in none).
    assert refused_events(con, usecase(), T.replace(tzinfo=UTC) + timedelta(minutes=5)) == 5  # r1, r2, r3, r4, r5
    late = T.replace(tzinfo=UTC) + timedelta(minutes=5)
    assert refused_events(con, usecase(), END, start=late) == 3  # r3 (no time), r6, r7


def test_an_infinite_time_is_refused_and_counted_in_every_range(tmp_path: Path) -> None:
    con = _store(tmp_path / "offline.duckdb", GOOD)
    con.execute("INSERT INTO flight_events VALUES ('r8', 'infinity'::TIMESTAMP, 'PDX', 'departed', 1.0)")
    con.execute("INSERT INTO flight_events VALUES ('r9', '-infinity'::TIMESTAMP, 'PDX', 'departed', 1.0)")
    # Not an instant: like a null time it belongs to no range, so every count names it.
    assert refused_events(con, usecase(), END, start=T.replace(tzinfo=UTC)) == 2
    everything = iter_events(con, usecase(), datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
    assert [e["event_id"] for e in everything] == ["g1", "g2", "g3", "g4"]


def test_training_windows_equal_those_over_the_accepted_rows_alone(tmp_path: Path) -> None:
    hostile = _store(tmp_path / "hostile.duckdb", GOOD + REFUSED)
    clean = _store(tmp_path / "clean.duckdb", GOOD)
    at = datetime(2001, 3, 1, 10, 30, tzinfo=UTC)
    spine = pa.table({"origin": ["PDX", "SEA"], "prediction_time": pa.array([at, at], pa.timestamp("us", tz="UTC"))})
    # By hand: PDX has g1, g2, g3 within the hour before 10:30, delays 4.0 and 2.5 known; SEA has g4.
    by_hand = [[3.0, 6.5], [1.0, 7.0]]
    assert realtime_features_at(clean, usecase(), spine, END).tolist() == by_hand
    assert realtime_features_at(hostile, usecase(), spine, END).tolist() == by_hand
    history = RealtimeHistory(hostile, usecase(), END)
    assert history.refused == {"main": len(REFUSED)}
    assert refused_by_stream(clean, usecase(), END) == {"main": 0}


def test_a_group_key_is_required_as_the_stream_requires_it(tmp_path: Path) -> None:
    by_kind = origin_flights(
        FIELDS,
        FEATURES,
        context=[{"name": "kind", "type": "str"}],
        groups=[
            {
                "name": "by_kind",
                "key": ["kind"],
                "features": [{"name": "kind_60m", "aggregation": "count", "window": "60m"}],
            }
        ],
    )
    assert required_event_fields(by_kind) == {"event_id", "event_time", "origin", "kind"}
    assert EventSchema(by_kind).required == required_event_fields(by_kind)
    con = _store(tmp_path / "offline.duckdb", GOOD + REFUSED)
    # g3 has no kind: the stream refuses it now, as the history does.
    assert not _stream_accepts(EventSchema(by_kind), GOOD[2])
    kept = [e["event_id"] for e in iter_events(con, by_kind, T.replace(tzinfo=UTC), END)]
    assert kept == ["g1", "g2", "g4"]
    assert refused_events(con, by_kind, END) == len(REFUSED) + 1


_times = st.one_of(st.none(), st.datetimes(min_value=T, max_value=T + timedelta(hours=2)))
_texts = st.one_of(st.none(), st.sampled_from(["", "PDX", "SEA", " "]))
_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_rows = st.lists(
    st.tuples(st.one_of(st.none(), st.sampled_from(["", "a", "b"])), _times, _texts, _texts, _floats),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows)
def test_the_history_refuses_exactly_what_the_stream_refuses(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[Any, ...]]
) -> None:
    """Any mix of nulls, empty strings, NaN and infinities: the rows the history keeps are those the stream's parse
    accepts, in event-time order, and the count is the rest."""
    con = _store(tmp_path_factory.mktemp("h") / "offline.duckdb", rows)
    schema = EventSchema(usecase())
    accepted = [r for r in rows if _stream_accepts(schema, r)]
    kept = list(iter_events(con, usecase(), datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)))
    assert sorted((e["event_id"], e["event_time"]) for e in kept) == sorted(
        (r[0], r[1].replace(tzinfo=UTC)) for r in accepted
    )
    assert refused_events(con, usecase(), datetime.max.replace(tzinfo=UTC)) == len(rows) - len(accepted)
