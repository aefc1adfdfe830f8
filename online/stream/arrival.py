"""When an event reached the broker, as far as the stream processor can trust it, and how far a watermark may go.

An event timed more than ``max_future`` after it reached the broker is dead-lettered (``in_future``). The producer's
record timestamp cannot be taken at its word for "reached the broker": a producer whose clock (or timestamp) is a
year ahead would let an event a year ahead in, move the partition's watermark there and make every later event
``too_late``. So: the broker's log-append time when the topic has one, else the record timestamp but never later
than the processor's own clock (the wall clock, or a replayed day's: ``MIGRATE_CLOCK_*``, migrate/clock.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from migrate.clock import clock_of
from migrate.settings import Settings

__all__ = ["LOG_APPEND_TIME", "Arrival"]

log = logging.getLogger(__name__)

LOG_APPEND_TIME = 1  # a record's timestamp_type when the broker, not the producer, stamped it


class Arrival:
    """The processor's clock and what it bounds: the trusted arrival time of a record, a resumed watermark."""

    def __init__(self, settings: Settings, max_future_s: float) -> None:
        clock = clock_of(settings)
        # The wall clock without a datetime per event (the hot path); a simulated one through its mapping.
        self.now_s: Callable[[], float] = time.time if settings.clock_start is None else lambda: clock().timestamp()
        self.max_future_s = max_future_s

    def received_s(self, message: Any) -> float:
        """When `message` reached the broker (epoch seconds): log-append time, else its timestamp capped at now."""
        stamped = float(message.timestamp) / 1000.0
        if message.timestamp_type == LOG_APPEND_TIME and message.timestamp >= 0:
            return stamped
        now = self.now_s()
        return now if message.timestamp < 0 else min(stamped, now)

    def bounded(self, partition: int, watermark: float | None) -> float:
        """A checkpointed watermark, lowered to the clock if it is past the clock plus `max_future`.

        Such a watermark was moved by a future-dated event that an earlier version let in; kept, it would send every
        later event of the partition to the dead-letter topic as `too_late`. Lowered to the clock (not the clock
        plus `max_future`), the events of the last `allowed_lateness` still count.
        """
        if watermark is None:
            return -math.inf
        now = self.now_s()
        if watermark > now + self.max_future_s:
            log.warning(
                "partition %d: checkpointed watermark %.0f is %.0f s ahead of the clock (past max_future); lowered",
                partition,
                watermark,
                watermark - now,
            )
            return now
        return watermark
