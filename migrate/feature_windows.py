"""Real-time window features: the one piece of code that both the stream processor and training run.

Per entity, events fall into buckets of ``resolution`` (1 minute by default) by **event time**. A window feature
of length W is evaluated at the entity's newest event time T over the buckets ``(bucket(T) - W, bucket(T)]``.
A ``minutes_since`` feature stores the event time of the last matching event, and becomes minutes only when it
is read (``since_minutes``): at request time when serving, at the label's time when training — so its age is
what the model sees in both. Buckets older than the longest window are evicted as the newest time moves on, so
an entity's state stays bounded however many events it has.

The stream processor applies events in offset order; training applies the same events in event-time order per
entity, reading the features *before* each labelled event: what the store held at that instant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.usecase import RealtimeFeatures, parse_duration

__all__ = ["WindowSpec", "WindowState", "since_minutes", "training_features"]

NAN = math.nan


@dataclass(frozen=True)
class _Feature:
    name: str
    aggregation: str
    group: int  # index of its accumulator group
    buckets: int  # window length in buckets (0 for minutes_since)


@dataclass(frozen=True)
class _Group:
    field: str | None
    where: tuple[tuple[str, Any], ...]


class WindowSpec:
    """The compiled feature declarations of one use case: accumulator groups shared by features."""

    def __init__(self, declared: RealtimeFeatures) -> None:
        self.resolution_s = parse_duration(declared.resolution).total_seconds()
        groups: list[_Group] = []
        since: list[_Group] = []
        features: list[_Feature] = []
        for feature in declared.features:
            group = _Group(feature.field, tuple(sorted(feature.where.items())))
            pool = since if feature.aggregation == "minutes_since" else groups
            if group not in pool:
                pool.append(group)
            window_s = 0.0 if feature.window is None else parse_duration(feature.window).total_seconds()
            features.append(
                _Feature(feature.name, feature.aggregation, pool.index(group), int(window_s // self.resolution_s))
            )
        self.groups = tuple(groups)
        self.since = tuple(since)
        self.features = tuple(features)
        self.names = [f.name for f in features]
        self.since_names = frozenset(f.name for f in features if f.aggregation == "minutes_since")
        self.span = max((f.buckets for f in features), default=1)  # buckets kept behind the newest
        # Flattened for WindowState.add, the per-event hot path.
        self.since_plan = tuple(enumerate(group.where for group in self.since))
        self.group_plan = tuple((group.field, group.where) for group in self.groups)
        self.empty_bucket: list[Any] = [0.0, 0.0, None, None] * len(self.groups)

    def new_state(self) -> WindowState:
        return WindowState(self)


class WindowState:
    """One entity's window state: its newest event time, bucket accumulators and last matching times.

    A bucket's accumulators are one flat list, four slots per group: count, sum, min, max (min and max None until
    a value arrives), so a new bucket is one allocation and a snapshot is JSON as it stands.
    """

    __slots__ = ("buckets", "last_match", "newest", "spec")

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.newest = -math.inf  # event time (epoch seconds) of the newest event applied
        self.buckets: dict[int, list[Any]] = {}
        self.last_match: list[float] = [NAN] * len(spec.since)

    def add(self, event_time_s: float, event: Mapping[str, Any]) -> None:
        """Apply one event (already validated); late events update only what their time still reaches.

        The stream's hot path (one call per event): plain loops, no generators, eviction only when the newest
        bucket moves.
        """
        spec = self.spec
        bucket = math.floor(event_time_s / spec.resolution_s)
        reachable = True
        if event_time_s > self.newest:
            previous = math.floor(self.newest / spec.resolution_s) if self.buckets else None
            self.newest = event_time_s
            if previous is not None and bucket > previous:
                oldest_kept = bucket - spec.span
                for stale in [b for b in self.buckets if b <= oldest_kept]:
                    del self.buckets[stale]
        elif bucket <= math.floor(self.newest / spec.resolution_s) - spec.span:
            reachable = False  # older than every window: it can no longer change a window value
        last_match = self.last_match
        for index, where in spec.since_plan:
            for name, value in where:
                if event.get(name) != value:
                    break
            else:
                if not event_time_s <= last_match[index]:
                    last_match[index] = event_time_s
        if not reachable:
            return
        acc = self.buckets.get(bucket)
        if acc is None:
            acc = self.buckets[bucket] = spec.empty_bucket.copy()
        base = 0
        for field, where in spec.group_plan:
            for name, value in where:
                if event.get(name) != value:
                    break
            else:
                if field is None:
                    acc[base] += 1.0
                else:
                    raw = event.get(field)
                    if raw is not None:
                        number = float(raw)
                        acc[base] += 1.0
                        acc[base + 1] += number
                        low = acc[base + 2]
                        if low is None or number < low:
                            acc[base + 2] = number
                        high = acc[base + 3]
                        if high is None or number > high:
                            acc[base + 3] = number
            base += 4

    def values(self) -> list[float]:
        """The feature values at the newest event time, in declared order (minutes_since: the last match time)."""
        spec = self.spec
        newest_bucket = math.floor(self.newest / spec.resolution_s) if self.buckets else 0
        items = sorted(self.buckets.items())  # bucket order, however events arrived
        out: list[float] = []
        for feature in spec.features:
            if feature.aggregation == "minutes_since":
                out.append(self.last_match[feature.group])
                continue
            first = newest_bucket - feature.buckets
            base = 4 * feature.group
            n = total = 0.0
            low: float | None = None
            high: float | None = None
            for bucket, acc in items:
                if bucket > first:
                    n += acc[base]
                    total += acc[base + 1]
                    value = acc[base + 2]
                    if value is not None and (low is None or value < low):
                        low = value
                    value = acc[base + 3]
                    if value is not None and (high is None or value > high):
                        high = value
            out.append(_aggregate(feature.aggregation, n, total, low, high))
        return out

    def to_json(self) -> list[Any]:
        """A JSON-able snapshot (the stream checkpoint stores it); floats survive orjson exactly (NaN → null)."""
        newest = None if self.newest == -math.inf else self.newest
        return [newest, self.last_match, list(self.buckets.items())]

    @classmethod
    def from_json(cls, spec: WindowSpec, data: Sequence[Any]) -> WindowState:
        state = cls(spec)
        newest, since, buckets = data
        state.newest = -math.inf if newest is None else float(newest)
        state.last_match = [NAN if v is None else float(v) for v in since]
        state.buckets = {int(b): list(acc) for b, acc in buckets}
        return state


def _aggregate(kind: str, n: float, total: float, low: float | None, high: float | None) -> float:
    if kind == "count":
        return n
    if kind == "sum":
        return total
    if n == 0:
        return NAN
    if kind == "mean":
        return total / n
    chosen = low if kind == "min" else high
    return NAN if chosen is None else chosen


def since_minutes(stored: float | None, at_s: float) -> float:
    """A stored ``minutes_since`` value (event time of the last match) as minutes before `at_s`."""
    if stored is None or math.isnan(stored):
        return NAN
    return (at_s - stored) / 60.0


def epoch_s(moment: datetime) -> float:
    """Aware or naive-UTC datetime → epoch seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def training_features(
    spec: WindowSpec,
    keys: Iterable[tuple[Any, ...]],
    times_s: npt.NDArray[np.float64],
    events: Sequence[Mapping[str, Any]],
) -> npt.NDArray[np.float64]:
    """Per event, the features the store held just before it (minutes_since as minutes at its time).

    `keys`, `times_s` and `events` are aligned and sorted by entity, then event time, then event id: the order
    the producer publishes in, so the stream processor saw each entity's events in this order too.
    """
    out = np.full((len(times_s), len(spec.features)), NAN, dtype=np.float64)
    since_columns = [i for i, f in enumerate(spec.features) if f.aggregation == "minutes_since"]
    state: WindowState | None = None
    previous: tuple[Any, ...] | None = None
    for row, (key, event) in enumerate(zip(keys, events, strict=True)):
        if key != previous:
            state, previous = spec.new_state(), key
        assert state is not None
        at = float(times_s[row])
        if state.buckets or state.newest != -math.inf:
            out[row] = state.values()
            for column in since_columns:
                out[row, column] = since_minutes(out[row, column], at)
        state.add(at, event)
    return out
