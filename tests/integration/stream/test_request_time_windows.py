"""Windows at the request's instant, checked against the offline point-in-time value computed by hand.

Sparse entities (a few events each, days apart) go through the real stream processor, Kafka and Redis; a request
at a random instant — right after the stream's last event or days later — reads the window states in one round
trip and evaluates them. Each value must equal, bit for bit, the value counted from the raw events strictly
before that instant, and the training path's value for a prediction at that instant. A group keyed by the store
(fed by every partition, merged at read time) is checked the same way; then again after kill -9s of the processor.
A hypothesis property test does the same over random event sequences, partitions and instants without services.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import Stream
from test_stream_kill import finish, positions, spawn, wait_for

from migrate.feature_windows import WindowSpec, evaluate, features_at, groups_of
from migrate.usecase import RealtimeFeatures, UseCase
from online.stream.processor import StreamProcessor

pytestmark = pytest.mark.integration

STORE_GROUP = {
    "name": "store",
    "key": ["store_id"],
    "features": [
        {"name": "store_scans_30m", "aggregation": "count", "window": "30m"},
        {"name": "store_found_rate_60m", "aggregation": "mean", "field": "found", "window": "60m"},
        {"name": "store_minutes_since_miss", "aggregation": "minutes_since", "where": {"found": False}},
    ],
}


def with_store_group(usecase: UseCase) -> UseCase:
    raw = usecase.model_dump()
    raw["realtime_features"]["groups"] = [STORE_GROUP]
    return UseCase.model_validate(raw)


def sparse(history: list[dict[str, Any]], entities: int = 60, seed: int = 11) -> list[dict[str, Any]]:
    """A few events of some entities, hours to days apart (most requests come long after an entity's last)."""
    rng = random.Random(seed)
    keys = sorted({(e["store_id"], e["product_id"]) for e in history})
    chosen = set(rng.sample(keys, min(entities, len(keys))))
    mine = [e for e in history if (e["store_id"], e["product_id"]) in chosen]
    return [e for e in mine if rng.random() < 0.08]


def by_hand(usecase: UseCase, events: list[dict[str, Any]], entity: tuple[int, int], at: datetime) -> list[float]:
    """Every real-time feature of `entity` at `at`, counted from the raw events strictly before it."""
    at_s = at.timestamp()
    last = math.floor(at_s / 60)
    values: list[float] = []
    for group in groups_of(usecase):
        column = ("store_id", "product_id") if group.is_entity else tuple(group.key)
        wanted = entity if group.is_entity else (entity[0],)
        mine = [e for e in events if tuple(e[c] for c in column) == wanted and e["event_time"].timestamp() < at_s]
        declared = [f.model_dump() for f in group_features(usecase, group.name)]
        for feature in declared:
            if feature["aggregation"] == "minutes_since":
                misses = [e["event_time"].timestamp() for e in mine if not e["found"]]
                values.append((at_s - max(misses)) / 60.0 if misses else math.nan)
                continue
            width = int(feature["window"][:-1]) * (60 if feature["window"].endswith("h") else 1)
            inside = [e for e in mine if last - width < math.floor(e["event_time"].timestamp() / 60) <= last]
            if feature["aggregation"] == "count":
                values.append(float(len(inside)))
            else:  # mean of found
                values.append(sum(float(e["found"]) for e in inside) / len(inside) if inside else math.nan)
    return values


def group_features(usecase: UseCase, name: str) -> list[Any]:
    declared = usecase.realtime_features
    assert declared is not None
    return declared.features if name == "entity" else next(g.features for g in declared.groups if g.name == name)


def served(stream: Stream, usecase: UseCase, entities: list[tuple[int, int]], at: datetime) -> list[list[float]]:
    states = stream.states(entities)
    return [
        [v for g in groups_of(usecase) for v in evaluate(g.spec, states[g.name][i], at.timestamp())]
        for i in range(len(entities))
    ]


def trained(usecase: UseCase, events: list[dict[str, Any]], entities: list[tuple[int, int]], at: datetime) -> Any:
    ordered = sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
    times = np.array([e["event_time"].timestamp() for e in ordered])
    blocks = []
    for group in groups_of(usecase):
        column = ("store_id", "product_id") if group.is_entity else tuple(group.key)
        keys = [tuple(e[c] for c in column) for e in ordered]
        asked = [k if group.is_entity else (k[0],) for k in entities]
        at_s = np.full(len(entities), at.timestamp())
        blocks.append(features_at(group.spec, keys, times, ordered, at_keys=asked, at_times_s=at_s))
    return np.hstack(blocks)


def identical(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def check(stream: Stream, usecase: UseCase, events: list[dict[str, Any]], rng: random.Random) -> int:
    entities = sorted({(e["store_id"], e["product_id"]) for e in events})
    end = max(e["event_time"] for e in events)
    instants = [end + timedelta(seconds=1)] + [end + timedelta(seconds=rng.uniform(1, 3 * 86_400)) for _ in range(5)]
    compared = nonzero = 0
    for at in instants:
        live = served(stream, usecase, entities, at)
        offline = trained(usecase, events, entities, at)
        for i, entity in enumerate(entities):
            expected = by_hand(usecase, events, entity, at)
            assert identical(live[i], expected), (entity, at, live[i], expected)
            assert identical(list(offline[i]), expected), (entity, at, list(offline[i]), expected)
            compared += 1
            nonzero += any(v > 0 for v in expected if not math.isnan(v))
    assert nonzero > 0, "every window was empty: the check compared nothing but zeros"
    return compared


def test_served_windows_equal_the_point_in_time_values_by_hand(stream: Stream) -> None:
    usecase = with_store_group(stream.usecase)
    stream.usecase = usecase
    events = sparse(stream.events)
    assert stream.publish(events) == len(events)
    report = StreamProcessor(stream.settings, usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url).run(
        until_caught_up=True, max_seconds=120
    )
    assert report.events == len(events) and report.dead_letters == 0
    assert check(stream, usecase, events, random.Random(3)) >= 150
    # Long after: every count is 0 and every rate missing, whatever each entity's last event was.
    far = max(e["event_time"] for e in events) + timedelta(days=30)
    names = [n for g in groups_of(usecase) for n in g.spec.names]
    for values in served(stream, usecase, sorted({(e["store_id"], e["product_id"]) for e in events}), far):
        window = dict(zip(names, values, strict=True))
        assert window["scans_30m"] == 0 and window["store_scans_30m"] == 0 and math.isnan(window["found_rate_30m"])


def test_the_same_after_kill_9_and_restart_of_the_processor(stream: Stream, tmp_path: Path) -> None:
    usecase = with_store_group(stream.usecase)
    stream.usecase = usecase
    events = sparse(stream.events, entities=80, seed=5)
    stream.publish(events)
    log = tmp_path / "workers.log"
    rng = random.Random(20261130)
    kills = 0
    for _ in range(4):
        before = positions(stream)
        worker = spawn(stream, log, delay_s=0.01, usecase=usecase)
        if not wait_for(lambda before=before: positions(stream) != before, worker, 90, log):
            break
        worker.kill()
        worker.wait(timeout=10)
        kills += 1
    assert kills >= 2, f"only {kills} kills landed mid-stream"
    finish(stream, log, usecase=usecase)
    assert sum(int(o) for o in positions(stream).values()) == len(events)
    assert check(stream, usecase, events, rng) >= 150


# --- the property, without services -----------------------------------------------------------------------------

PROPERTY_FEATURES = RealtimeFeatures.model_validate(
    {
        "event_table": "e",
        "event_time_column": "t",
        "features": [
            {"name": "n_10m", "aggregation": "count", "window": "10m"},
            {"name": "sum_30m", "aggregation": "sum", "field": "x", "window": "30m"},
            {"name": "mean_30m", "aggregation": "mean", "field": "x", "window": "30m"},
            {"name": "min_60m", "aggregation": "min", "field": "x", "window": "60m"},
            {"name": "max_60m", "aggregation": "max", "field": "x", "window": "60m"},
            {"name": "n_flag_5m", "aggregation": "count", "window": "5m", "where": {"flag": True}},
            {"name": "since_flag", "aggregation": "minutes_since", "where": {"flag": True}},
        ],
    }
)
SPEC = WindowSpec(PROPERTY_FEATURES.resolution, PROPERTY_FEATURES.features)


def brute(events: list[tuple[float, int, bool]], at_s: float) -> list[float]:
    """The features at `at_s` from their definitions over the events strictly before it."""
    last = math.floor(at_s / 60)
    seen = [e for e in events if e[0] < at_s]

    def within(minutes: int) -> list[tuple[float, int, bool]]:
        return [e for e in seen if last - minutes < math.floor(e[0] / 60) <= last]

    xs30, xs60 = [float(e[1]) for e in within(30)], [float(e[1]) for e in within(60)]
    flags = [e[0] for e in seen if e[2]]
    return [
        float(len(within(10))),
        float(sum(xs30)),
        sum(xs30) / len(xs30) if xs30 else math.nan,
        min(xs60) if xs60 else math.nan,
        max(xs60) if xs60 else math.nan,
        float(sum(1 for e in within(5) if e[2])),
        max(0.0, (at_s - max(flags)) / 60.0) if flags else math.nan,
    ]


EVENT = st.tuples(st.integers(0, 6 * 3600), st.integers(-50, 50), st.booleans(), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(EVENT, max_size=60), offsets=st.lists(st.integers(0, 12 * 3600), min_size=1, max_size=4))
def test_property_served_equals_offline_for_any_events_partitions_and_instants(
    events: list[tuple[int, int, bool, int]], offsets: list[int]
) -> None:
    base = 1_790_000_000.0
    stamped = sorted((base + t, x, flag, p) for t, x, flag, p in events)
    partials = [SPEC.new_state() for _ in range(4)]
    for when, x, flag, p in stamped:  # one partial state per partition, as the processors keep them
        partials[p].add(when, {"x": x, "flag": flag})
    newest = max((e[0] for e in stamped), default=base)
    raw = [(e[0], e[1], e[2]) for e in stamped]
    blobs = [orjson.loads(orjson.dumps(s.to_json())) for s in partials if s.newest != -math.inf]  # through Redis
    for offset in offsets:
        at = newest + offset + 0.5
        assert identical(evaluate(SPEC, blobs, at), brute(raw, at))
    # Training: any instant, from the events strictly before it (the stream need not have passed it).
    asked = [base + o for o in offsets]
    keys = [("k",)] * len(stamped)
    out = features_at(
        SPEC,
        keys,
        np.array([e[0] for e in stamped]),
        [{"x": e[1], "flag": e[2]} for e in stamped],
        at_keys=[("k",)] * len(asked),
        at_times_s=np.array(asked),
    )
    for row, at in enumerate(asked):
        assert identical(list(out[row]), brute(raw, at))
