"""The serving clock: wall time by default, a replayed day's time when configured."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from migrate.settings import get_settings
from online.serving.clock import clock_of

pytestmark = pytest.mark.unit


def test_wall_clock_by_default() -> None:
    now = clock_of(get_settings())()
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5 and now.tzinfo is not None


def test_simulated_clock_runs_from_its_start_at_its_speed() -> None:
    start = datetime(2026, 11, 14, 2, 0, tzinfo=UTC)
    settings = get_settings(clock_start=start, clock_wall=time.time() - 10, clock_speed=60)
    now = clock_of(settings)()
    assert start + timedelta(minutes=10) <= now < start + timedelta(minutes=15)


def test_before_its_day_begins_a_simulated_clock_reads_its_start() -> None:
    """A rehearsal's services start before its day: their clock stands at the start until the anchor (it read hours
    before it at 1,200×, and the stream refused the warm-up's history as timed in its future)."""
    start = datetime(2026, 11, 14, 2, 0, tzinfo=UTC)
    settings = get_settings(clock_start=start, clock_wall=time.time() + 45, clock_speed=1200)
    assert clock_of(settings)() == start
