"""After a rehearsal's replay, the label stream is known up to the replay's end when the history goes on after it
and the sink read every event before it: found on the flight trial, where windows closing in the quiet night between
the last departure (00:31) and the replay's end (03:00) stayed pending (54 of 143 requests)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from migrate.demo.rehearse import _labels_known_through
from migrate.label_progress import read_progress, write_progress
from migrate.settings import Settings
from migrate.usecase import UseCase
from tests.unit.origin_flights import flight_events, origin_flights

pytestmark = pytest.mark.unit

EVENTS = [  # (id, time, origin, kind, late): nothing between 00:31 and 04:13
    ("d1", "2001-03-06 00:02", "SLC", "departed", False),
    ("d2", "2001-03-06 00:31", "PDX", "departed", True),
    ("d3", "2001-03-06 04:13", "SLC", "departed", False),
]
LAST, END = datetime(2001, 3, 6, 0, 31, tzinfo=UTC), datetime(2001, 3, 6, 3, 0, tzinfo=UTC)


@pytest.fixture
def rehearsal(tmp_path: Path) -> tuple[UseCase, Settings, Path]:
    flight_events(tmp_path / "offline.duckdb", "late BOOLEAN", EVENTS).close()
    fields = {"event_id": "str", "event_time": "datetime", "origin": "str", "kind": "str", "late": "bool"}
    usecase = origin_flights(fields, [{"name": "events_60m", "aggregation": "count", "window": "60m"}])
    settings = Settings(state_dir=tmp_path / "state", offline_store=tmp_path / "offline.duckdb")
    return usecase, settings, settings.labels_dir / usecase.name


def test_a_sink_that_read_the_last_replayed_event_knows_the_stream_up_to_the_replays_end(
    rehearsal: tuple[UseCase, Settings, Path],
) -> None:
    usecase, settings, root = rehearsal
    write_progress(root, "sink-0", LAST)  # what the sink read: the last event before the end
    _labels_known_through(usecase, settings, END)
    assert read_progress(root) == END


def test_a_sink_behind_the_replay_is_not_overruled_and_says_so(
    rehearsal: tuple[UseCase, Settings, Path], caplog: pytest.LogCaptureFixture
) -> None:
    usecase, settings, root = rehearsal
    behind = datetime(2001, 3, 6, 0, 10, tzinfo=UTC)
    write_progress(root, "sink-0", behind)
    with caplog.at_level(logging.WARNING):
        _labels_known_through(usecase, settings, END)
    assert read_progress(root) == behind
    assert "not its last replayed event at 2001-03-06T00:31:00+00:00" in caplog.text


def test_a_history_that_ends_before_the_replays_end_says_nothing_of_what_follows(
    rehearsal: tuple[UseCase, Settings, Path],
) -> None:
    usecase, settings, root = rehearsal
    write_progress(root, "sink-0", datetime(2001, 3, 6, 4, 13, tzinfo=UTC))
    _labels_known_through(usecase, settings, datetime(2001, 3, 6, 5, 0, tzinfo=UTC))
    assert read_progress(root) == datetime(2001, 3, 6, 4, 13, tzinfo=UTC)
