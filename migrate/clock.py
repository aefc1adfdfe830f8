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

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from migrate.settings import Settings

__all__ = ["SPEED_FILE", "Clock", "clock_of", "record_speed", "recorded_speed"]

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


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


SPEED_FILE = "_clock.json"


def record_speed(shadow_root: Path, speed: float) -> None:
    """Record beside a use case's shadow log that it was written on a simulated clock `speed` times the wall's (a
    rehearsal): a comparison of that log then scales the feature-skew grace by it, as the rehearsal's own did,
    since its stream lagged in wall-clock time. `shadow_root` is ``<shadow_dir>/<usecase>``."""
    shadow_root.mkdir(parents=True, exist_ok=True)
    (shadow_root / SPEED_FILE).write_bytes(orjson.dumps({"speed": speed}))


def recorded_speed(shadow_root: Path) -> float:
    """The clock speed `record_speed` left beside the shadow log; 1 (the wall's) when none did. An unreadable
    record is logged and read as 1: the grace is then the policy's, as it was before records existed."""
    path = shadow_root / SPEED_FILE
    try:
        speed = orjson.loads(path.read_bytes())["speed"]
    except FileNotFoundError:
        return 1.0
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable clock record %s: %s", path, exc)
        return 1.0
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0 < speed < math.inf:
        log.warning("ignoring the clock record %s: its speed %r is not a positive number", path, speed)
        return 1.0
    return float(speed)
