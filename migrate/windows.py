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
_N, _SUM, _MIN, _MAX = 0, 1, 2, 3


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
            buckets = 0 if feature.window is None else int(parse_duration(feature.window).total_seconds() // 1)
            features.append(
                _Feature(
                    feature.name,
                    feature.aggregation,
                    pool.index(group),
                    int(buckets // self.resolution_s) if buckets else 0,
                )
            )
        self.groups = tuple(groups)
        self.since = tuple(since)
        self.features = tuple(features)
        self.names = [f.name for f in features]
        self.since_names = frozenset(f.name for f in features if f.aggregation == "minutes_since")
        self.span = max((f.buckets for f in features), default=1)  # buckets kept behind the newest
        # Flattened for WindowState.add, the per-event hot path.
        self.since_plan = tuple(enumerate(group.where for group in self.since))
        self.group_fields = tuple(group.field for group in self.groups)
        self.group_wheres = tuple(group.where for group in self.groups)

    def bucket(self, event_time_s: float) -> int:
        return math.floor(event_time_s / self.resolution_s)

    def new_state(self) -> WindowState:
        return WindowState(self)


class WindowState:
    """One entity's window state: its newest event time, bucket accumulators and last matching times."""

    __slots__ = ("buckets", "last_match", "newest", "spec")

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.newest = -math.inf  # event time (epoch seconds) of the newest event applied
        self.buckets: dict[int, list[list[float]]] = {}
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
        accumulators = self.buckets.get(bucket)
        if accumulators is None:
            accumulators = self.buckets[bucket] = [[0.0, 0.0, math.inf, -math.inf] for _ in spec.groups]
        for acc, field, where in zip(accumulators, spec.group_fields, spec.group_wheres, strict=True):
            for name, value in where:
                if event.get(name) != value:
                    break
            else:
                if field is None:
                    acc[0] += 1.0
                    continue
                raw = event.get(field)
                if raw is None:
                    continue
                number = float(raw)
                acc[0] += 1.0
                acc[1] += number
                acc[2] = min(acc[2], number)
                acc[3] = max(acc[3], number)

    def values(self) -> list[float]:
        """The feature values at the newest event time, in declared order (minutes_since: the last match time)."""
        spec = self.spec
        newest_bucket = spec.bucket(self.newest) if self.buckets else 0
        out: list[float] = []
        for feature in spec.features:
            if feature.aggregation == "minutes_since":
                out.append(self.last_match[feature.group])
                continue
            first = newest_bucket - feature.buckets
            n = total = 0.0
            low, high = math.inf, -math.inf
            for bucket, accumulators in self.buckets.items():
                if bucket > first:
                    acc = accumulators[feature.group]
                    n += acc[_N]
                    total += acc[_SUM]
                    low = min(low, acc[_MIN])
                    high = max(high, acc[_MAX])
            out.append(_aggregate(feature.aggregation, n, total, low, high))
        return out

    def to_json(self) -> list[Any]:
        """A JSON-able snapshot (the stream checkpoint stores it); floats survive orjson exactly."""
        since = [None if math.isnan(v) else v for v in self.last_match]
        newest = None if self.newest == -math.inf else self.newest
        return [
            newest,
            since,
            [[b, [[a[0], a[1], _finite(a[2]), _finite(a[3])] for a in acc]] for b, acc in self.buckets.items()],
        ]

    @classmethod
    def from_json(cls, spec: WindowSpec, data: Sequence[Any]) -> WindowState:
        state = cls(spec)
        newest, since, buckets = data
        state.newest = -math.inf if newest is None else float(newest)
        state.last_match = [NAN if v is None else float(v) for v in since]
        state.buckets = {
            int(b): [[a[0], a[1], math.inf if a[2] is None else a[2], -math.inf if a[3] is None else a[3]] for a in acc]
            for b, acc in buckets
        }
        return state


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _aggregate(kind: str, n: float, total: float, low: float, high: float) -> float:
    if kind == "count":
        return n
    if kind == "sum":
        return total
    if n == 0:
        return NAN
    if kind == "mean":
        return total / n
    return low if kind == "min" else high


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
