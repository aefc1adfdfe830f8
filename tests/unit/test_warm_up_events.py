"""The events a rehearsal publishes before `--from`, so its windows do not start empty.

Found on the flights trial: a rehearsal replayed events from `--from` only, so `minutes_since_route_late` was null
live on every request against 429 minutes in history. The warm-up is every event of the longest window plus the
allowed lateness before `--from`, and each key's last match of a `minutes_since` filter, however old; a window
state fed with them holds at `--from` what training computes from the whole history (and what a hand count says).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from migrate.batch.event_history import realtime_features_at, warm_up_events
from migrate.feature_windows import WindowState, groups_of, warm_up
from migrate.usecase import UseCase
from tests.unit.origin_flights import flight_events, origin_flights

pytestmark = pytest.mark.unit

START = datetime(2001, 3, 1, 10, 0, tzinfo=UTC)
EVENTS = [  # (id, time, origin, kind, late)
    ("p_late_old", "2001-02-27 23:00", "PDX", "departed", True),  # PDX's last late one before it is p_late
    ("p_late", "2001-03-01 02:00", "PDX", "departed", True),
    ("s_late_old", "2001-03-01 01:00", "SLC", "departed", True),
    ("s_late", "2001-03-01 03:00", "SLC", "departed", True),
    ("p_on_time", "2001-03-01 05:00", "PDX", "departed", False),  # old and no late match: not needed
    ("p_sched", "2001-03-01 08:50", "PDX", "scheduled", None),  # before the cut (08:55): not needed
    ("p1", "2001-03-01 09:20", "PDX", "scheduled", None),
    ("p2", "2001-03-01 09:30", "PDX", "departed", False),
    ("p3", "2001-03-01 10:00", "PDX", "departed", True),  # at --from: the replay's own, not the warm-up's
]


def usecase() -> UseCase:
    fields = {"event_id": "str", "event_time": "datetime", "origin": "str", "kind": "str", "late": "bool"}
    return origin_flights(
        fields,
        [
            {"name": "events_60m", "aggregation": "count", "window": "60m"},
            {"name": "minutes_since_late", "aggregation": "minutes_since", "where": {"late": True}},
        ],
        allowed_lateness="5m",
    )


@pytest.fixture
def store(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    return flight_events(tmp_path / "offline.duckdb", "late BOOLEAN", EVENTS)


def test_the_warm_up_is_the_windows_reach_and_each_keys_last_minutes_since_match(
    store: duckdb.DuckDBPyConnection,
) -> None:
    assert warm_up(usecase()) == timedelta(minutes=65)  # the 60m window plus 5m of allowed lateness
    sent = list(warm_up_events(store, usecase(), START))
    # By hand: the last late departure of each origin before the cut, then everything in [08:55, 10:00), in time order.
    assert [e["event_id"] for e in sent] == ["p_late", "s_late", "p1", "p2"]
    assert all(e["event_time"].tzinfo is UTC for e in sent)


def test_windows_fed_the_warm_up_hold_at_from_what_training_computes(store: duckdb.DuckDBPyConnection) -> None:
    (group,) = [g for g in groups_of(usecase()) if g.is_entity]
    states = {origin: WindowState(group.spec) for origin in ("PDX", "SLC")}
    for event in warm_up_events(store, usecase(), START):
        states[event["origin"]].add(event["event_time"].timestamp(), event)
    live = {origin: state.values_at(START.timestamp()) for origin, state in states.items()}
    # By hand at 10:00: PDX has p1 and p2 in the hour, its last late departure 8 hours before (02:00); SLC has none
    # in the hour, its last late one 7 hours before (03:00).
    by_hand = {"PDX": [2.0, 480.0], "SLC": [0.0, 420.0]}
    assert live == by_hand
    at = pa.array([START, START], pa.timestamp("us", tz="UTC"))
    spine = pa.table({"origin": ["PDX", "SLC"], "prediction_time": at})
    trained = realtime_features_at(store, usecase(), spine, START + timedelta(days=1))
    assert trained.tolist() == [by_hand["PDX"], by_hand["SLC"]]
