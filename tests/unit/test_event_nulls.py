"""Events with a value not known yet (NULL, or absent): the stream and training read them alike.

Found on real flight data: a `scheduled` event (the prediction) carries no `delay` yet, its `departed` event does.
The stream processor dead-lettered every such event (`missing_field`) while training's windows counted it, so a
count window trained on events serving never saw. Now a field that is not the entity key, the time, the id or a
feature group's key may be null or absent: it reads as None, as training reads a NULL in the event table, so a
count still counts the event, a mean over the field skips it, and a filter on it does not match. The required ones
still go to the dead-letter topic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest

from migrate.batch.event_history import realtime_features_at
from migrate.feature_windows import WindowState, evaluate, groups_of
from migrate.usecase import UseCase
from online.stream.event_schema import EventSchema, Rejection, ValidEvent
from tests.unit.origin_flights import flight_events, origin_flights

pytestmark = pytest.mark.unit

FIELDS = {"event_id": "str", "event_time": "datetime", "origin": "str", "kind": "str", "delay": "float"}
EVENTS = [  # (id, time, origin, kind, delay): the scheduled events carry no delay
    ("s1", "2001-03-01 10:00", "PDX", "scheduled", None),
    ("d1", "2001-03-01 10:04", "PDX", "departed", 4.0),
    ("s2", "2001-03-01 10:10", "PDX", "scheduled", None),
    ("d2", "2001-03-01 10:31", "PDX", "departed", 21.0),
    ("s3", "2001-03-01 10:40", "PDX", "scheduled", None),
]


def usecase() -> UseCase:
    return origin_flights(
        FIELDS,
        [
            {"name": "events_60m", "aggregation": "count", "window": "60m"},
            {"name": "mean_delay_60m", "aggregation": "mean", "field": "delay", "window": "60m"},
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    return flight_events(tmp_path / "offline.duckdb", "delay DOUBLE", EVENTS)


def _wire(event: tuple[str, str, str, str, float | None]) -> bytes:
    event_id, at, origin, kind, delay = event
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_time": at.replace(" ", "T") + ":00Z",
            "origin": origin,
            "kind": kind,
            "delay": delay,
        }
    )


def test_the_stream_accepts_an_unknown_value_and_refuses_a_missing_key_time_or_id() -> None:
    schema = EventSchema(usecase())
    accepted = [schema.parse(_wire(e)) for e in EVENTS]
    assert all(isinstance(e, ValidEvent) for e in accepted)
    assert [e.fields["delay"] for e in accepted if isinstance(e, ValidEvent)] == [None, 4.0, None, 21.0, None]
    absent = {"event_id": "s9", "event_time": "2001-03-01T11:00:00Z", "origin": "PDX", "kind": "scheduled"}
    event = schema.parse(orjson.dumps(absent))
    assert isinstance(event, ValidEvent) and event.fields["delay"] is None
    for required in ("origin", "event_time", "event_id"):
        rejected = schema.parse(orjson.dumps({**absent, required: None}))
        assert isinstance(rejected, Rejection) and rejected.reason == "missing_field", required


def test_training_and_the_stream_windows_agree_with_a_hand_count(store: duckdb.DuckDBPyConnection) -> None:
    at = datetime(2001, 3, 1, 10, 45, tzinfo=UTC)
    # By hand: every event strictly before 10:45 within the hour (resolution 1m) counts, 5 of them; the mean delay
    # is over the two known delays.
    by_hand = [5.0, (4.0 + 21.0) / 2]
    spine = pa.table({"origin": ["PDX"], "prediction_time": pa.array([at], pa.timestamp("us", tz="UTC"))})
    trained = realtime_features_at(store, usecase(), spine, datetime(2001, 3, 2, tzinfo=UTC))
    assert trained.tolist() == [by_hand]
    # The stream's path: the events as the stream accepts them, into a window state, evaluated at the same instant.
    schema = EventSchema(usecase())
    (group,) = [g for g in groups_of(usecase()) if g.is_entity]
    state = WindowState(group.spec)
    for raw in map(_wire, EVENTS):
        event = schema.parse(raw)
        assert isinstance(event, ValidEvent)
        state.add(event.time_s, event.fields)
    assert evaluate(group.spec, [state.to_json()], at.timestamp()) == by_hand
