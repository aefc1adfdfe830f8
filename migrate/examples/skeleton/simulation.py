"""Scaffolding of the examples' numpy simulators: array types, naive-UTC times, days and the nightly batch cutoff."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = [
    "Bools",
    "Floats",
    "Ints",
    "Strings",
    "Times",
    "day_starts",
    "last_batch_cutoff",
    "pick_new",
    "start64",
    "weekend",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Times = npt.NDArray[np.datetime64]
Strings = npt.NDArray[np.str_]

_DAY = np.timedelta64(1, "D").astype("timedelta64[us]")


def start64(start: datetime) -> np.datetime64:
    """`start` as a naive-UTC numpy time in microseconds (the offline store's TIMESTAMP)."""
    return np.datetime64(start.replace(tzinfo=None), "us")


def last_batch_cutoff(start: datetime, days: int) -> datetime:
    """02:00 UTC of the final simulated day: the last nightly batch run before the simulation ends."""
    return start + timedelta(days=days - 1, hours=2)


def day_starts(start: datetime, days: int) -> Iterator[np.datetime64]:
    """Midnight of each simulated day, in order."""
    t0 = start64(start)
    for day in range(days):
        yield t0 + day * _DAY


def weekend(day_start: np.datetime64) -> bool:
    """Whether the day starting at `day_start` is a Saturday or a Sunday."""
    weekday = (day_start.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    return bool(weekday >= 5)


def pick_new(rng: np.random.Generator, n: int, share: float) -> Bools:
    """Mark `share` of `n` entities (at least one when the share is positive) as new: they appear after the cutoff."""
    n_new = max(1, round(share * n)) if share > 0 else 0
    is_new = np.zeros(n, dtype=bool)
    is_new[rng.choice(n, size=n_new, replace=False)] = True
    return is_new
