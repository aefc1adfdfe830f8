"""Real-time window features: the one piece of code that the stream processor, serving and training run.

Per group key (the entity, or another key such as a store or a merchant), events fall into buckets of
``resolution`` (1 minute by default) by **event time**; the stream processor keeps the buckets, serving and
training evaluate them. A window feature of length W is evaluated **at the instant t of the request** (serving)
or of the prediction (training) over the W / resolution buckets ending with the one that holds t:
``(bucket(t) - W, bucket(t)]``. So a window decays as time passes without events (a count reaches 0, a mean
becomes missing), whatever the entity's last event was. A ``minutes_since`` feature keeps the event time of the
last matching event and is read as minutes before t. Buckets older than the longest window behind the newest
event are evicted, so a key's state stays bounded however many events it has.

State is mergeable: each Kafka partition keeps its own partial state of a key (a key other than the entity's
is fed by every partition), and `evaluate` combines the partials (counts and sums add, minima and maxima
compare) before evaluating, so the result equals one state fed with every event.

Training applies the events strictly before each prediction time and evaluates at that time with the same
`WindowState.values_at`: what serving would have answered at that instant.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.realtime_schema import ENTITY_GROUP, MAIN_STREAM
from migrate.usecase import RealtimeFeature, UseCase, parse_duration

__all__ = [
    "ENTITY_GROUP",
    "Group",
    "Replay",
    "WindowSpec",
    "WindowState",
    "evaluate",
    "features_at",
    "groups_of",
    "merge",
    "required_event_fields",
    "since_minutes",
    "warm_up",
]

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

    def __init__(self, resolution: str, declared: Sequence[RealtimeFeature]) -> None:
        self.resolution_s = parse_duration(resolution).total_seconds()
        groups: list[_Group] = []
        since: list[_Group] = []
        features: list[_Feature] = []
        for feature in declared:
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
        # The event fields an update reads (values and `where` tests); any other field cannot change a state.
        self.fields = frozenset(
            {g.field for g in self.groups if g.field is not None}
            | {name for g in (*self.groups, *self.since) for name, _ in g.where}
        )

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

    @staticmethod
    def add_columns(
        states: Sequence[WindowState], times_s: Sequence[float], columns: Mapping[str, Sequence[Any]]
    ) -> None:
        """Apply event i to ``states[i]`` for every i in order (a state may come many times): exactly
        ``states[i].add(times_s[i], {name: column[i] for name, column in columns.items()})`` one by one, but with the
        `where` tests and the values read per column, once per fetch. The states share one spec.

        The stream's hot path per fetch (tests/unit/stream/test_windows.py holds it equal to `add` on hostile input).
        A column missing reads as None, as `add` reads a missing field.
        """
        if not states:
            return
        spec = states[0].spec
        n = len(times_s)
        res, span, floor = spec.resolution_s, spec.span, math.floor
        nothing: list[Any] = [None] * n

        def misses(where: tuple[tuple[str, Any], ...]) -> list[bool] | None:
            """Per event, whether it fails `where` (None: no event does)."""
            out: list[bool] | None = None
            for name, value in where:
                miss = [got != value for got in columns.get(name, nothing)]
                out = miss if out is None else [a or b for a, b in zip(out, miss, strict=True)]
            return out

        since = [(index, misses(where)) for index, where in spec.since_plan]
        plan = [
            (4 * base, misses(where), None if field is None else columns.get(field, nothing))
            for base, (field, where) in enumerate(spec.group_plan)
        ]
        empty = spec.empty_bucket
        for i in range(n):
            state = states[i]
            time_s = times_s[i]
            bucket = floor(time_s / res)
            reachable = True
            newest = state.newest
            if time_s > newest:
                state.newest = time_s
                kept = state.buckets
                if kept and bucket > floor(newest / res):
                    oldest_kept = bucket - span
                    for stale in list(kept):  # a loop, not a comprehension: no function object per event (3.11)
                        if stale <= oldest_kept:
                            del kept[stale]
            elif bucket <= floor(newest / res) - span:
                reachable = False
            if since:
                last_match = state.last_match
                for index, miss in since:
                    if (miss is None or not miss[i]) and not time_s <= last_match[index]:
                        last_match[index] = time_s
            if not reachable:
                continue
            acc = state.buckets.get(bucket)
            if acc is None:
                acc = state.buckets[bucket] = empty.copy()
            for base, miss, values in plan:
                if miss is not None and miss[i]:
                    continue
                if values is None:
                    acc[base] += 1.0
                    continue
                raw = values[i]
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

    def values_at(self, at_s: float) -> list[float]:
        """The feature values at instant `at_s`, in declared order (minutes_since: minutes before `at_s`)."""
        return _evaluate(self.spec, self.buckets.items(), self.last_match, at_s)

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


_EXTREMES = frozenset({"min", "max"})


def _evaluate(
    spec: WindowSpec, buckets: Iterable[tuple[int, list[Any]]], last_match: Sequence[float], at_s: float
) -> list[float]:
    """Every feature at `at_s` from bucket accumulators and last-match times: the one evaluation of windows."""
    last = math.floor(at_s / spec.resolution_s)
    items = sorted(buckets)  # bucket order, however events arrived: sums add up in one order everywhere
    out: list[float] = []
    for feature in spec.features:
        if feature.aggregation == "minutes_since":
            out.append(since_minutes(last_match[feature.group], at_s))
            continue
        first = last - feature.buckets
        base = 4 * feature.group
        n = total = 0.0
        low: float | None = None
        high: float | None = None
        if feature.aggregation not in _EXTREMES:  # count, sum, mean: the bucket's extremes are not read
            for bucket, acc in items:
                if first < bucket <= last:
                    n += acc[base]
                    total += acc[base + 1]
            out.append(_aggregate(feature.aggregation, n, total, low, high))
            continue
        for bucket, acc in items:
            if first < bucket <= last:
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


def merge(spec: WindowSpec, partials: Sequence[Sequence[Any]]) -> tuple[dict[int, list[Any]], list[float]]:
    """One key's partial states (``WindowState.to_json``, one per partition) combined: buckets and last matches
    (`evaluate` reads a single partition's state as it is)."""
    merged: dict[int, list[Any]] = {}
    last_match = [NAN] * len(spec.since)
    for _, since, buckets in partials:
        for index, value in enumerate(since):
            if value is not None and not value <= last_match[index]:
                last_match[index] = float(value)
        for bucket, acc in buckets:
            into = merged.get(int(bucket))
            if into is None:
                merged[int(bucket)] = list(acc)
                continue
            for base in range(0, len(acc), 4):
                into[base] += acc[base]
                into[base + 1] += acc[base + 1]
                for slot, better in ((base + 2, operator.lt), (base + 3, operator.gt)):
                    value = acc[slot]
                    if value is not None and (into[slot] is None or better(value, into[slot])):
                        into[slot] = value
    return merged, last_match


def evaluate(spec: WindowSpec, partials: Sequence[Sequence[Any]], at_s: float) -> list[float]:
    """The features of one key at `at_s` from its partial states (none: the key has no event yet)."""
    if not partials:
        return _evaluate(spec, (), [NAN] * len(spec.since), at_s)
    if len(partials) == 1:  # one partition's state (the common case): its [bucket, accumulators] pairs as they are
        _, since, pairs = partials[0]
        return _evaluate(spec, pairs, [NAN if v is None else float(v) for v in since], at_s)
    buckets, last_match = merge(spec, partials)
    return _evaluate(spec, buckets.items(), last_match, at_s)


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
    """A ``minutes_since`` state (event time of the last match) as minutes before `at_s`; 0 for a later match."""
    if stored is None or math.isnan(stored):
        return NAN
    return max(0.0, (at_s - stored) / 60.0)


def epoch_s(moment: datetime) -> float:
    """Aware or naive-UTC datetime → epoch seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Replay:
    """Events of one group applied in order and evaluated at asked instants, the state of each key kept between
    calls: a backtest asks day after day and each key's events are applied once, not once per day.

    Events are applied in the order given (sort them by event time, then id: the order a key's partition saw
    them); the answer for an instant is `WindowState.values_at` after every event of the key strictly before it,
    the function serving evaluates. An instant earlier than one already asked for its key replays that key from
    its first event, so any order of calls gives the same answers.
    """

    def __init__(
        self,
        spec: WindowSpec,
        event_keys: Sequence[tuple[Any, ...]],
        event_times_s: npt.NDArray[np.float64],
        events: Sequence[Mapping[str, Any]],
    ) -> None:
        self.spec = spec
        self._times = event_times_s
        self._events = events
        self._by_key: dict[tuple[Any, ...], list[int]] = {}
        for row, key in enumerate(event_keys):
            self._by_key.setdefault(key, []).append(row)
        self._states: dict[tuple[Any, ...], tuple[WindowState, int, float]] = {}  # key → state, applied, last asked
        self._empty = spec.new_state()

    def values(
        self, at_keys: Sequence[tuple[Any, ...]], at_times_s: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Per (key, instant) asked, the features from that key's events strictly before the instant."""
        spec, times, events = self.spec, self._times, self._events
        out = np.full((len(at_keys), len(spec.features)), NAN, dtype=np.float64)
        asked: dict[tuple[Any, ...], list[int]] = {}
        for row, key in enumerate(at_keys):
            asked.setdefault(key, []).append(row)
        for key, rows in asked.items():
            rows.sort(key=lambda r: at_times_s[r])
            mine = self._by_key.get(key)
            if not mine:
                for row in rows:
                    out[row] = self._empty.values_at(float(at_times_s[row]))
                continue
            state, applied, last = self._states.get(key) or (spec.new_state(), 0, -math.inf)
            if float(at_times_s[rows[0]]) < last:
                state, applied = spec.new_state(), 0  # asked earlier than before: replay the key from its start
            for row in rows:
                at = float(at_times_s[row])
                while applied < len(mine) and times[mine[applied]] < at:
                    state.add(float(times[mine[applied]]), events[mine[applied]])
                    applied += 1
                out[row] = state.values_at(at)
            self._states[key] = (state, applied, float(at_times_s[rows[-1]]))
        return out


def features_at(
    spec: WindowSpec,
    event_keys: Sequence[tuple[Any, ...]],
    event_times_s: npt.NDArray[np.float64],
    events: Sequence[Mapping[str, Any]],
    *,
    at_keys: Sequence[tuple[Any, ...]],
    at_times_s: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Per (key, instant) asked, the features from that key's events strictly before the instant (one `Replay`)."""
    return Replay(spec, event_keys, event_times_s, events).values(at_keys, at_times_s)


@dataclass(frozen=True)
class Group:
    """Real-time features kept per value of `key`: the entity's own group, or one keyed by other columns, fed by
    the event stream `stream` (``main``, or a declared further stream)."""

    name: str
    key: tuple[str, ...]
    spec: WindowSpec
    stream: str = MAIN_STREAM

    @property
    def is_entity(self) -> bool:
        return self.name == ENTITY_GROUP


def groups_of(usecase: UseCase) -> list[Group]:
    """The use case's real-time feature groups: the entity's first (possibly empty), then the main stream's, then
    each further stream's, in the order of `RealtimeFeatures.all_features`."""
    declared = usecase.realtime_features
    if declared is None:
        return []
    out = [Group(ENTITY_GROUP, tuple(usecase.entity.key_names), WindowSpec(declared.resolution, declared.features))]
    for group in declared.groups:
        out.append(Group(group.name, tuple(group.key), WindowSpec(declared.resolution, group.features)))
    for stream in declared.streams:
        for group in stream.groups:
            spec = WindowSpec(declared.resolution, group.features)
            out.append(Group(group.name, tuple(group.key), spec, stream.name))
    return out


def required_event_fields(usecase: UseCase, stream: str = MAIN_STREAM) -> frozenset[str]:
    """The fields an event of `stream` cannot do without: its time and id, the entity key (main stream) and the key
    columns of the feature groups it feeds. Any other declared field may be null: it reads as None (a count still
    counts the event, a sum, mean, min or max over the field skips it, a filter on it does not match). The stream
    dead-letters an event without one of these (online/stream/event_schema.py); the event history leaves it out
    and counts it (migrate/batch/event_history.py): one rule for both."""
    declared = usecase.realtime_features
    if declared is None:
        return frozenset()
    _, time_field, events = declared.source(stream)
    if events is None:
        return frozenset()
    keys = set(usecase.entity.key_names) if stream == MAIN_STREAM else set()
    grouped = {c for g in groups_of(usecase) if g.stream == stream for c in g.key}
    wanted = {*keys, time_field, events.id_field, *grouped}
    return frozenset(name for name in events.fields if name in wanted)


def warm_up(usecase: UseCase) -> timedelta:
    """How long before an instant the main stream's events must be replayed for every window to be full at it: the
    longest window plus the allowed lateness. A ``minutes_since`` reaches further back, to its key's last match
    (`migrate.batch.event_history.warm_up_events` adds it)."""
    reach = max((g.spec.span * g.spec.resolution_s for g in groups_of(usecase)), default=0.0)
    declared = usecase.realtime_features
    events = declared.events if declared is not None else None
    lateness = 0.0 if events is None else parse_duration(events.allowed_lateness).total_seconds()
    return timedelta(seconds=reach + lateness)
