"""The skeleton both examples share: days and cutoffs, new entities, the table writer and the trainer's checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from migrate.batch.offline_store import open_offline
from migrate.errors import UseCaseError
from migrate.examples.delivery_eta.training import train as train_eta
from migrate.examples.skeleton.generator import SimulatedDays, append_events, insert_rows, write_tables
from migrate.examples.skeleton.simulation import day_starts, last_batch_cutoff, pick_new, start64, weekend
from migrate.usecase import UseCase

START = datetime(2026, 11, 1, tzinfo=UTC)  # a Sunday


def test_day_starts_and_weekends_follow_the_calendar() -> None:
    starts = list(day_starts(START, 9))
    expected = [START + timedelta(days=d) for d in range(9)]
    assert starts == [np.datetime64(d.replace(tzinfo=None), "us") for d in expected]
    assert [weekend(s) for s in starts] == [d.weekday() >= 5 for d in expected]
    assert start64(START) == np.datetime64("2026-11-01T00:00:00.000000")


def test_last_batch_cutoff_is_two_in_the_morning_of_the_final_day() -> None:
    assert last_batch_cutoff(START, 14) == datetime(2026, 11, 14, 2, tzinfo=UTC)
    assert SimulatedDays(days=3).last_batch_cutoff == datetime(2026, 11, 3, 2, tzinfo=UTC)
    assert SimulatedDays(days=3).end == datetime(2026, 11, 4, tzinfo=UTC)


@pytest.mark.parametrize(("n", "share", "count"), [(40, 0.05, 2), (400, 0.03, 12), (10, 0.001, 1), (10, 0.0, 0)])
def test_pick_new_marks_a_share_with_one_draw(n: int, share: float, count: int) -> None:
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    is_new = pick_new(rng, n, share)
    assert is_new.dtype == np.bool_ and is_new.size == n and int(is_new.sum()) == count
    # The same entities and the same generator state as one draw without replacement: later draws stay put.
    chosen = twin.choice(n, size=count, replace=False)
    assert sorted(np.flatnonzero(is_new)) == sorted(chosen)
    assert rng.random() == twin.random()


class _Windowed(SimulatedDays):
    STEP_DIVIDES: ClassVar[tuple[int, str]] = (30, "30 (the window)")


def test_config_checks_start_and_step() -> None:
    assert SimulatedDays(start=datetime(2026, 11, 2)).start == datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(ValidationError, match="midnight UTC"):
        SimulatedDays(start=datetime(2026, 11, 2, 1, tzinfo=UTC))
    with pytest.raises(ValidationError, match=r"step_minutes=7 must divide a day \(1440 minutes\)"):
        SimulatedDays(step_minutes=7)
    assert _Windowed(step_minutes=15).step_minutes == 15
    with pytest.raises(ValidationError, match=r"step_minutes=20 must divide 30 \(the window\)"):
        _Windowed(step_minutes=20)  # divides a day, not the subclass's window


def _days() -> Iterator[pa.Table]:
    t0 = datetime(2026, 11, 1)
    yield pa.table({"event_time": [t0, t0 + timedelta(hours=1)], "value": [1.5, 2.5]})
    yield pa.table({"event_time": [t0 + timedelta(days=1)], "value": [3.5]})


def test_append_events_numbers_ids_across_days() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (event_id VARCHAR, event_time TIMESTAMP, value DOUBLE)")
    con.execute("CREATE TABLE dim (k BIGINT, name VARCHAR)")
    append_events(con, "ev", "x", _days())
    insert_rows(con, "dim", pa.table({"k": [7], "name": ["seven"]}))
    assert con.sql("SELECT event_id, value FROM ev ORDER BY event_id").fetchall() == [
        ("x-0000000000", 1.5),
        ("x-0000000001", 2.5),
        ("x-0000000002", 3.5),
    ]
    assert con.sql("SELECT * FROM dim").fetchall() == [(7, "seven")]


def _write_events(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE OR REPLACE TABLE ev (event_id VARCHAR, event_time TIMESTAMP, value DOUBLE)")
    append_events(con, "ev", "x", _days())
    return 4


def test_write_tables_counts_what_it_wrote_and_rolls_back_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "offline.duckdb"
    written = write_tables(path, _write_events, ["ev"], "ev")
    assert written.rows == {"ev": 3} and written.new_entities == 4
    assert written.first_event == datetime(2026, 11, 1, tzinfo=UTC)
    assert written.last_event == datetime(2026, 11, 2, tzinfo=UTC)

    def fail(con: duckdb.DuckDBPyConnection) -> int:
        con.execute("DELETE FROM ev")
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_tables(path, fail, ["ev"], "ev")
    con = open_offline(path)
    try:
        assert con.sql("SELECT count(*) FROM ev").fetchall() == [(3,)]  # the failed run left no trace
    finally:
        con.close()


def test_a_trainer_refuses_another_label_kind(usecase: UseCase, tmp_path: Path) -> None:
    # The unit tests' use case is item availability (binary); the delivery trainer fits a regressor.
    with pytest.raises(UseCaseError, match=r"label\.kind") as caught:
        train_eta(usecase, tmp_path / "unused.duckdb", START)
    assert "fits a regressor; use kind: regression" in str(caught.value)
