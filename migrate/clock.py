"""The clock of serving and the stream processor: the wall clock, or a simulated one that replays a past day at a
speed-up (demos, drills).

With ``MIGRATE_CLOCK_START`` (a simulated instant), ``MIGRATE_CLOCK_WALL`` (the Unix time it corresponds to) and
``MIGRATE_CLOCK_SPEED``, request times run from that instant, ``speed`` times faster than the wall: the same
mapping ``migrate events replay`` paces events with, so request times, feature event times and label times of a
replayed day line up. Before ``MIGRATE_CLOCK_WALL`` the simulated day has not begun: its clock reads its start.
(It read as far before the start as the wall was before the anchor, ×speed: at 1,200×, 45 s of head start put the
clock 15 hours back, so the stream processor refused the history a rehearsal warms its windows up with as timed in
its future, unless each event waited for its instant, in the last seconds before the day.) Production leaves them
unset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from migrate.settings import Settings

__all__ = ["Clock", "clock_of"]

Clock = Callable[[], datetime]


def _wall() -> datetime:
    return datetime.now(UTC)


def clock_of(settings: Settings) -> Clock:
    """The settings' clock: `datetime.now(UTC)` unless a simulated start is set."""
    start, wall, speed = settings.clock_start, settings.clock_wall, settings.clock_speed
    if start is None:
        return _wall
    anchor = time.time() if wall is None else wall

    def simulated() -> datetime:
        return start + timedelta(seconds=max(0.0, time.time() - anchor) * speed)

    return simulated
