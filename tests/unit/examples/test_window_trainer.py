"""The examples' trainer holds out the last day whose labels are all in: with ``label.from_event`` the training
frame keeps a prediction only once its label window closed, so the holdout ends ``available_after`` before as_of.
Every count is made by hand over the rows written, not by the toolkit's SQL."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pytest
from sklearn.dummy import DummyClassifier

from migrate.batch.offline_store import labels_closed
from migrate.cli.scaffold import render
from migrate.errors import OfflineStoreError, OwnOutcomeKnownError, UseCaseError
from migrate.examples.skeleton.training import WindowTrainer
from tests.unit.route_flights import create_route_tables, route_flights

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 11, 11, tzinfo=UTC)
FIRST_DAY = datetime(2026, 11, 1)  # naive UTC, as the offline store holds it: as_of - 10 days
HOURS = (14, 2, 20, 9, 5, 17)  # a day of three flights has one at night, two in the afternoon

Flight = tuple[str, datetime, int, bool, timedelta]  # id, scheduled time, route, late, departure - scheduled


def schedule(days: range, *, early_every: int = 0, per_hour: int = 1) -> list[Flight]:
    """Day d holds flights at 3 + d % 4 hours (`per_hour` each, a minute apart); every third leaves 40 minutes late,
    the others 5 minutes after their time, except every `early_every`-th (not late), which leaves 10 minutes early."""
    flights: list[Flight] = []
    for day in days:
        for hour in HOURS[: 3 + day % 4]:
            for minute in range(per_hour):
                n = len(flights)
                late = n % 3 == 0
                early = early_every > 0 and not late and n % early_every == 1
                delay = timedelta(minutes=40 if late else -10 if early else 5)
                at = FIRST_DAY + timedelta(days=day, hours=hour, minutes=minute)
                flights.append((f"f{n:04d}", at, 1 + n % 2, late, delay))
    return flights


def write_store(path: Path, flights: list[Flight]) -> Path:
    with duckdb.connect(str(path)) as con:
        create_route_tables(con)
        con.execute("INSERT INTO route_daily VALUES (1, '2026-10-31', 0.2), (2, '2026-10-31', 0.4)")
        for ident, at, route, late, delay in flights:
            # The scheduled event names itself, as a request carries its own id; the departure names it.
            con.execute("INSERT INTO flight_events VALUES (?, ?, ?, 'scheduled', NULL, ?)", [ident, at, route, ident])
            con.execute(
                "INSERT INTO flight_events VALUES (?, ?, ?, 'departed', ?, ?)",
                [f"d{ident}", at + delay, route, late, ident],
            )
    return path


def _shortfall(labels: npt.NDArray[Any]) -> str | None:
    return None if np.unique(labels).size == 2 else ", not both classes"


def _measure(_: Any, x: Any, y: npt.NDArray[Any], y_train: npt.NDArray[Any]) -> dict[str, float]:
    return {"holdout_late": float(y.sum())}


TRAINER = WindowTrainer("binary", "flights", lambda: DummyClassifier(strategy="prior"), _shortfall, _measure)


def test_a_label_closing_a_day_later_holds_out_the_day_before_it_closes(tmp_path: Path) -> None:
    flights = schedule(range(10))  # 1-10 November; those of the 10th are still open at as_of (11th, midnight)
    usecase = route_flights("1d")
    trained = TRAINER.train(usecase, write_store(tmp_path / "offline.duckdb", flights), AS_OF)
    closed, split = AS_OF - timedelta(days=1), AS_OF - timedelta(days=2)
    assert labels_closed(usecase, AS_OF) == closed
    naive_split, naive_closed = split.replace(tzinfo=None), closed.replace(tzinfo=None)
    held = [f for f in flights if naive_split <= f[1] < naive_closed]
    trained_on = [f for f in flights if f[1] < naive_split]
    assert len(held) == 3 + 8 % 4 and len(trained_on) == sum(3 + d % 4 for d in range(8))
    assert trained.metrics["n_test"] == len(held)
    assert trained.metrics["n_train"] == len(trained_on)
    assert trained.metrics["holdout_late"] == sum(f[3] for f in held)
    assert trained.trained_on == (AS_OF - timedelta(days=10), split)
    # Nobody left before being predicted: checked, and counted as none.
    assert trained.metrics["own_outcome_known_rows"] == 0


def test_a_half_day_label_holds_out_the_full_day_before_it_closes(tmp_path: Path) -> None:
    flights = schedule(range(10))
    trained = TRAINER.train(route_flights("12h"), write_store(tmp_path / "offline.duckdb", flights), AS_OF)
    lo, hi = datetime(2026, 11, 9, 12), datetime(2026, 11, 10, 12)  # [closed - 1 day, closed), closed = as_of - 12h
    # The 9th's 14h and 20h, the 10th's 2h and 9h; a holdout of the day before as_of would hold only the latter two.
    assert trained.metrics["n_test"] == sum(1 for f in flights if lo <= f[1] < hi) == 4


def test_an_empty_holdout_names_the_window_that_was_empty(tmp_path: Path) -> None:
    flights = [f for f in schedule(range(10)) if f[1].day != 9]  # nothing on the day before the labels close
    with pytest.raises(OfflineStoreError, match="holdout window") as caught:
        TRAINER.train(route_flights("1d"), write_store(tmp_path / "offline.duckdb", flights), AS_OF)
    assert "2026-11-09T00:00:00+00:00 - 2026-11-10T00:00:00+00:00" in str(caught.value)
    assert "has 0 labelled flights" in str(caught.value)
    assert "labels close 1d before as_of" in str(caught.value)


def test_a_label_closing_after_the_whole_window_is_refused_naming_available_after(tmp_path: Path) -> None:
    with pytest.raises(UseCaseError, match=r"label\.available_after: is 9d") as caught:
        TRAINER.train(route_flights("9d"), write_store(tmp_path / "offline.duckdb", schedule(range(10))), AS_OF)
    assert "under 9 days" in str(caught.value)


def test_flights_that_left_before_their_prediction_are_refused_or_counted(tmp_path: Path) -> None:
    flights = schedule(range(10), early_every=4)
    path = write_store(tmp_path / "offline.duckdb", flights)
    # By hand: the flights in the training frame (scheduled by the time labels close) that left before their time.
    in_frame = [f for f in flights if f[1] <= (AS_OF - timedelta(days=1)).replace(tzinfo=None)]
    early = [f for f in in_frame if f[4] < timedelta(0)]
    assert early and len(early) < len(in_frame)
    with pytest.raises(OwnOutcomeKnownError) as caught:
        TRAINER.train(route_flights("1d"), path, AS_OF)
    first = min(early, key=lambda f: f[1])[0]  # the example named is the earliest such prediction
    assert (caught.value.count, caught.value.rows, caught.value.example) == (len(early), len(in_frame), first)
    allowed = TRAINER.train(route_flights("1d", allow=True), path, AS_OF)
    assert allowed.metrics["own_outcome_known_rows"] == len(early)


def test_the_trainer_migrate_init_writes_holds_out_the_same_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated trainer (the flight trial's), rendered and imported as a team's package would be."""
    package = tmp_path / "packages" / "flights_trial"
    for path, text in render("flights_trial", "binary", tmp_path / "usecases" / "flights_trial.yaml", package).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(package.parent))
    generated = importlib.import_module("flights_trial.training")
    flights = schedule(range(10), per_hour=8)  # the generated trainer wants 20 rows a part
    trained = generated.train(route_flights("1d"), write_store(tmp_path / "offline.duckdb", flights), AS_OF)
    lo, hi = datetime(2026, 11, 9), datetime(2026, 11, 10)
    assert trained.metrics["n_test"] == sum(1 for f in flights if lo <= f[1] < hi) == 3 * 8
    assert trained.metrics["n_train"] == sum(1 for f in flights if f[1] < lo)
    assert trained.metrics["own_outcome_known_rows"] == 0
    assert trained.trained_on == (AS_OF - timedelta(days=10), AS_OF - timedelta(days=2))
