"""Data intervals follow Airflow's CronDataIntervalTimetable for manual runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from migrate.batch.schedule import interval_ending
from migrate.batch.steps import Interval

pytestmark = pytest.mark.unit


def test_interval_ends_at_latest_tick() -> None:
    interval = interval_ending("0 2 * * *", datetime(2026, 11, 14, 9, 30, tzinfo=UTC))
    assert interval == Interval(datetime(2026, 11, 13, 2, tzinfo=UTC), datetime(2026, 11, 14, 2, tzinfo=UTC))
    assert interval.key == "20261114T020000Z"


def test_exactly_on_a_tick_is_that_tick() -> None:
    interval = interval_ending("0 2 * * *", datetime(2026, 11, 14, 2, tzinfo=UTC))
    assert interval.end == datetime(2026, 11, 14, 2, tzinfo=UTC)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        interval_ending("0 2 * * *", datetime(2026, 11, 14, 2))
