"""The serving clock: the kernel's (migrate/clock.py), which the stream processor shares."""

from __future__ import annotations

from migrate.clock import Clock, clock_of

__all__ = ["Clock", "clock_of"]
