"""A prediction whose own outcome has arrived when it is made (a flight that already left): with
``label.from_event``, training refuses such rows, naming how many, unless the use case allows them, and then counts
them. Five flights written by hand, two of which left before their scheduled time."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from migrate.batch.offline_store import training_frame
from migrate.batch.own_outcome import OWN_OUTCOME_METRIC, checks_own_outcome, own_outcome_metrics
from migrate.batch.training import train
from migrate.errors import ConfigError, OwnOutcomeKnownError
from migrate.settings import get_settings
from migrate.usecase import UseCase
from tests.unit.route_flights import create_route_tables, route_flights

pytestmark = pytest.mark.unit

START, END = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "offline.duckdb"
    with duckdb.connect(str(path)) as con:
        create_route_tables(con)
        con.execute("INSERT INTO route_daily VALUES (1, '2026-11-01', 0.2), (2, '2026-11-01', 0.4)")
        # Each scheduled event names itself in flight_ref (the request's own id); each departure names its flight.
        con.execute("""INSERT INTO flight_events VALUES
            ('s1', '2026-11-02 10:00', 1, 'scheduled', NULL, 's1'),
            ('d1', '2026-11-02 09:50', 1, 'departed', false, 's1'),  -- left 10 minutes early: known at 10:00
            ('s2', '2026-11-02 11:00', 2, 'scheduled', NULL, 's2'),
            ('d2', '2026-11-02 10:40', 2, 'departed', false, 's2'),  -- left 20 minutes early
            ('s3', '2026-11-02 12:00', 1, 'scheduled', NULL, 's3'),
            ('d3', '2026-11-02 12:30', 1, 'departed', true, 's3'),   -- late
            ('s4', '2026-11-02 13:00', 2, 'scheduled', NULL, 's4'),
            ('d4', '2026-11-02 13:05', 2, 'departed', false, 's4'),
            ('s5', '2026-11-02 14:00', 1, 'scheduled', NULL, 's5'),
            ('d5', '2026-11-02 15:00', 1, 'departed', true, 's5')""")
    return path


def frame(path: Path, usecase: UseCase, id_column: str = "event_id") -> Any:
    with duckdb.connect(str(path), read_only=True) as con:
        return training_frame(con, usecase, START, END, id_column=id_column)


def test_predictions_made_after_their_own_departure_are_refused_naming_how_many(store: Path) -> None:
    with pytest.raises(OwnOutcomeKnownError) as caught:
        frame(store, route_flights())
    assert (caught.value.count, caught.value.rows, caught.value.example) == (2, 5, "s1")
    message = str(caught.value)
    assert "2 of 5 training rows (40.0%)" in message and "'s1'" in message and "'flight_ref'" in message
    assert "training.predict_before" in message and "training.spine.where" in message
    assert "label.from_event.allow_own_outcome_known: true" in message


def test_predicting_before_the_departures_is_accepted_and_the_boundary_counts(store: Path) -> None:
    # 25 minutes ahead: s1 at 09:35 (d1 09:50), s2 at 10:35 (d2 10:40): no departure named yet.
    honest = frame(store, route_flights(predict_before="25m"))
    assert honest.column("event_id").to_pylist() == ["s1", "s2", "s3", "s4", "s5"]
    assert honest.column("own_outcome_known").to_pylist() == [False] * 5
    assert honest.column("late").to_pylist() == [0, 0, 1, 0, 1]
    assert own_outcome_metrics(honest) == {OWN_OUTCOME_METRIC: 0.0}
    # 10 minutes ahead: s1 is asked at 09:50, the very instant d1 arrived: at or before counts; s2 is still known.
    with pytest.raises(OwnOutcomeKnownError) as caught:
        frame(store, route_flights(predict_before="10m"))
    assert (caught.value.count, caught.value.rows) == (2, 5)
    # 15 minutes ahead: s1 at 09:45 is clear, s2 at 10:45 is not (d2 left at 10:40).
    with pytest.raises(OwnOutcomeKnownError) as caught:
        frame(store, route_flights(predict_before="15m"))
    assert (caught.value.count, caught.value.rows, caught.value.example) == (1, 5, "s2")
    # The fix names the lead already set, not a suggestion of another one that may be no earlier (the flight trial:
    # predict_before 30m, and a flight that left 47 minutes early, was told "e.g. 30m").
    assert "training.predict_before is 15m" in str(caught.value) and "e.g. 30m" not in str(caught.value)


def test_allowed_they_are_kept_flagged_and_counted(store: Path) -> None:
    allowed = frame(store, route_flights(allow=True))
    assert allowed.column("event_id").to_pylist() == ["s1", "s2", "s3", "s4", "s5"]
    assert allowed.column("own_outcome_known").to_pylist() == [True, True, False, False, False]
    assert own_outcome_metrics(allowed) == {OWN_OUTCOME_METRIC: 2.0}


def test_a_table_of_past_requests_is_checked_by_its_id_column(store: Path) -> None:
    """Requests logged by id: r2 was asked at 10:45, after d2 (10:40) named it; r1 at 09:40, before d1 (09:50)."""
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE asked (request_id VARCHAR, requested_at TIMESTAMP, route_id BIGINT)")
        con.execute("""INSERT INTO asked VALUES
            ('s1', '2026-11-02 09:40', 1), ('s2', '2026-11-02 10:45', 2), ('s3', '2026-11-02 11:55', 1)""")
    raw = route_flights().model_dump()
    raw["training"] = {"spine": {"table": "asked", "time_column": "requested_at", "id_column": "request_id"}}
    with pytest.raises(OwnOutcomeKnownError) as caught:
        frame(store, UseCase.model_validate(raw), "request_id")
    assert (caught.value.count, caught.value.rows, caught.value.example) == (1, 3, "s2")
    # Such a table holds its own prediction times (predict_before must be 0s): the fix does not send one there.
    assert "out of 'asked'" in str(caught.value) and "predict_before" not in str(caught.value)
    # Without an id the table's rows cannot be checked: the frame says so by having no flag column.
    raw["training"]["spine"] = {"table": "asked", "time_column": "requested_at", "label_column": "late"}
    assert not checks_own_outcome(UseCase.model_validate(raw))


def test_an_event_field_label_is_not_checked() -> None:
    raw = route_flights().model_dump()
    raw["label"] = {"name": "late", "description": "Left late.", "kind": "binary", "available_after": "12h"}
    raw["label"]["event_field"] = "late"
    raw["training"] = {}
    assert checks_own_outcome(route_flights())
    assert not checks_own_outcome(UseCase.model_validate(raw))


TRAINERS = '''
from migrate.batch.training import TrainedModel
from sklearn.dummy import DummyClassifier


def silent(usecase, offline_path, as_of, *, online=False):
    """Trains on allowed rows without saying how many."""
    return TrainedModel(DummyClassifier().fit([[0.0], [1.0]], [0, 1]), ["late_7d"], {"auc": 0.5}, (as_of, as_of))
'''


def test_a_trainer_that_allows_them_must_count_them(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "own_outcome_trainers.py").write_text(TRAINERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "own_outcome_trainers", raising=False)
    settings = get_settings(state_dir=tmp_path / "state", offline_store=store)
    with pytest.raises(ConfigError, match=f"returned no metric '{OWN_OUTCOME_METRIC}'") as caught:
        train(route_flights(allow=True, trainer="own_outcome_trainers:silent"), settings, END)
    assert "own_outcome_metrics(frame)" in str(caught.value)
