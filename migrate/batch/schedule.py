"""Data intervals from a cron schedule, as Airflow's CronDataIntervalTimetable defines them."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from migrate.batch.steps import Interval


def interval_ending(schedule: str, at_or_before: datetime) -> Interval:
    """The latest complete interval whose end is at or before `at_or_before`."""
    if at_or_before.tzinfo is None:
        raise ValueError("at_or_before must be timezone-aware")
    moment = at_or_before.astimezone(UTC)
    itr = croniter(schedule, moment)
    end = moment if croniter.match(schedule, moment) else itr.get_prev(datetime)
    start = croniter(schedule, end).get_prev(datetime)
    return Interval(start.astimezone(UTC), end.astimezone(UTC))
