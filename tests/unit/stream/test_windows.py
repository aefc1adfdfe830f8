"""The window code, by hand: buckets, windows at the request's instant, decay, lateness, eviction, minutes_since,
snapshots, partial states merged, training at prediction times."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.feature_windows import Replay, WindowSpec, WindowState, evaluate, features_at
from migrate.usecase import RealtimeFeatures

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0 - (1_700_000_000.0 % 60)  # a minute boundary


def spec(**extra: Any) -> WindowSpec:
    declared = RealtimeFeatures.model_validate(
        {
            "event_table": "events",
            "event_time_column": "event_time",
            "features": [
                {"name": "rate_30m", "aggregation": "mean", "field": "found", "window": "30m"},
                {"name": "n_30m", "aggregation": "count", "window": "30m"},
                {"name": "n_120m", "aggregation": "count", "window": "120m"},
                {"name": "amount_sum_10m", "aggregation": "sum", "field": "amount", "window": "10m"},
                {"name": "amount_max_10m", "aggregation": "max", "field": "amount", "window": "10m"},
                {"name": "amount_min_10m", "aggregation": "min", "field": "amount", "window": "10m"},
                {"name": "since_miss", "aggregation": "minutes_since", "where": {"found": False}},
            ],
            **extra,
        }
    )
    return WindowSpec(declared.resolution, declared.features)


def values(state: WindowState, at: float | None = None) -> dict[str, float]:
    """The features at `at` (default: the state's newest event, as a request at that instant sees them)."""
    return dict(zip(state.spec.names, state.values_at(state.newest if at is None else at), strict=True))


def ev(found: bool, amount: float = 1.0) -> dict[str, Any]:
    return {"found": found, "amount": amount}


def test_window_values_by_hand() -> None:
    state = spec().new_state()
    state.add(T0, ev(True, 5))  # bucket 0
    state.add(T0 + 60 * 5, ev(False, 2))  # bucket 5
    state.add(T0 + 60 * 29 + 30, ev(True, 7))  # bucket 29
    got = values(state)
    assert got["n_30m"] == 3 and got["n_120m"] == 3
    assert got["rate_30m"] == pytest.approx(2 / 3)
    # 10m window at bucket 29: buckets 20..29 → only the 7
    assert (got["amount_sum_10m"], got["amount_max_10m"], got["amount_min_10m"]) == (7, 7, 7)
    assert got["since_miss"] == pytest.approx((60 * 29 + 30 - 300) / 60)  # minutes before the instant asked
    assert values(state, T0 + 60 * 35)["since_miss"] == pytest.approx(30.0)
    state.add(T0 + 60 * 30, ev(True, 1))  # bucket 30: bucket 0 leaves the 30m window
    got = values(state)
    assert got["n_30m"] == 3 and got["n_120m"] == 4
    assert got["rate_30m"] == pytest.approx(2 / 3)  # buckets 1..30: miss, found, found


def test_empty_windows_are_zero_counts_and_missing_rates() -> None:
    state = spec().new_state()
    state.add(T0, ev(True))
    state.add(T0 + 3600 * 3, ev(True))  # three hours later: only itself is left
    got = values(state)
    assert got["n_120m"] == 1 and got["rate_30m"] == 1.0
    assert math.isnan(got["since_miss"])  # never missed
    assert len(state.buckets) == 1  # older buckets evicted as the newest time moved on


def test_late_event_counts_where_its_window_still_reaches_and_order_does_not_matter() -> None:
    in_order, shuffled = spec().new_state(), spec().new_state()
    times = [T0, T0 + 600, T0 + 1200, T0 + 1500, T0 + 1790]
    for t in times:
        in_order.add(t, ev(t != T0 + 600))
    for t in [times[0], times[2], times[4], times[1], times[3]]:
        shuffled.add(t, ev(t != T0 + 600))
    at = T0 + 1800
    assert np.array_equal(np.array(in_order.values_at(at)), np.array(shuffled.values_at(at)), equal_nan=True)
    # A late event older than every window changes no window (but still counts for minutes_since).
    state = spec().new_state()
    state.add(T0 + 3 * 3600, ev(True))
    state.add(T0, ev(False))
    got = values(state)
    assert got["n_120m"] == 1 and got["since_miss"] == pytest.approx(180.0)


def test_windows_decay_at_the_request_instant_without_new_events() -> None:
    state = spec().new_state()
    state.add(T0, ev(True, 5))
    state.add(T0 + 60 * 20, ev(False, 3))
    assert values(state, T0 + 60 * 25)["n_30m"] == 2
    later = values(state, T0 + 60 * 45)  # bucket 0 has left the 30m window; bucket 20 has not
    assert later["n_30m"] == 1 and later["rate_30m"] == 0.0 and later["n_120m"] == 2
    assert math.isnan(later["amount_max_10m"])  # no event in the last 10 minutes: missing, not the old max
    day_later = values(state, T0 + 86_400)
    assert day_later["n_30m"] == 0 and day_later["n_120m"] == 0 and math.isnan(day_later["rate_30m"])
    assert day_later["since_miss"] == pytest.approx((86_400 - 1200) / 60)  # keeps growing


def test_a_window_covers_the_buckets_ending_with_the_one_of_the_instant() -> None:
    state = spec().new_state()
    state.add(T0 + 59, ev(True))  # bucket 0 (its last second)
    # At T0 + 30 min + 0 s the 30m window is buckets 1..30: bucket 0 is out even though 29 min 1 s passed.
    assert values(state, T0 + 1800)["n_30m"] == 0
    assert values(state, T0 + 1799.999)["n_30m"] == 1
    # An event timed after the instant (a clock ahead of the request's) is not counted at that instant.
    state.add(T0 + 600, ev(False))
    assert values(state, T0 + 300)["n_30m"] == 1 and values(state, T0 + 300)["since_miss"] == 0.0


def test_partial_states_merge_to_the_state_of_all_events() -> None:
    s = spec()
    whole, parts = s.new_state(), [s.new_state(), s.new_state(), s.new_state()]
    for i in range(40):
        when, event = T0 + i * 53.0, ev(i % 4 == 0, amount=float(i % 7))
        whole.add(when, event)
        parts[i % 3].add(when, event)
    at = T0 + 40 * 53.0
    merged = evaluate(s, [p.to_json() for p in parts], at)
    assert np.array_equal(np.array(merged), np.array(whole.values_at(at)), equal_nan=True)
    assert np.array_equal(np.array(evaluate(s, [whole.to_json()], at)), np.array(whole.values_at(at)), equal_nan=True)
    assert evaluate(s, [], at)[s.names.index("n_30m")] == 0 and math.isnan(evaluate(s, [], at)[0])


def test_one_stored_state_evaluates_as_its_events_do_whatever_its_buckets_order() -> None:
    """Serving evaluates one partition's state as read back from Redis (JSON: [bucket, accumulators] lists, in the
    order the stream kept them): late events put its buckets out of order, and the answer must not move."""
    s = spec()
    state = s.new_state()
    times = [T0 + 600.0, T0 + 30.0, T0 + 420.0, T0 + 90.0, T0 + 610.0, T0 + 300.0, T0 + 5.0]
    for i, when in enumerate(times):
        state.add(when, ev(i % 3 == 0, amount=float((i * 5) % 7) - 2.5))
    stored = orjson.loads(orjson.dumps(state.to_json()))
    assert [b for b, _ in stored[2]] != sorted(b for b, _ in stored[2])  # the case under test: unsorted buckets
    for at in (T0 + 611.0, T0 + 700.0, T0 + 1_300.0):
        expected = np.array(state.values_at(at))
        assert np.array_equal(np.array(evaluate(s, [stored], at)), expected, equal_nan=True)
        empty = orjson.loads(orjson.dumps(s.new_state().to_json()))
        assert np.array_equal(np.array(evaluate(s, [stored, empty], at)), expected, equal_nan=True)


def test_snapshot_round_trip_is_exact() -> None:
    s = spec()
    state = s.new_state()
    for i in range(50):
        state.add(T0 + i * 37.3, ev(i % 3 == 0, amount=i * 0.1))
    again = WindowState.from_json(s, state.to_json())
    at = T0 + 1900
    assert np.array_equal(np.array(again.values_at(at)), np.array(state.values_at(at)), equal_nan=True)
    again.add(T0 + 2000, ev(False, 0.3))
    state.add(T0 + 2000, ev(False, 0.3))
    assert np.array_equal(np.array(again.values_at(at + 200)), np.array(state.values_at(at + 200)), equal_nan=True)


def test_training_features_use_only_events_strictly_before_each_prediction_time() -> None:
    s = spec()
    key = (1, 2)
    rows = [ev(True), ev(False), ev(True)]
    times = np.array([T0, T0 + 60, T0 + 180])
    asked = [key, key, key, key, (9, 9)]
    at = np.array([T0, T0 + 60, T0 + 180, T0 + 3 * 3600, T0 + 60])
    out = features_at(s, [key, key, key], times, rows, at_keys=asked, at_times_s=at)
    names = s.names
    assert out[0, names.index("n_30m")] == 0 and math.isnan(out[0, names.index("rate_30m")])  # nothing before
    assert out[1, names.index("n_30m")] == 1  # the event at T0 + 60 itself is not seen at T0 + 60
    assert out[2, names.index("n_30m")] == 2 and out[2, names.index("rate_30m")] == 0.5
    assert out[2, names.index("since_miss")] == pytest.approx(2.0)  # minutes at the prediction time
    assert out[3, names.index("n_120m")] == 0 and out[3, names.index("since_miss")] == pytest.approx(179.0)
    assert out[4, names.index("n_30m")] == 0  # another key starts empty
    # The same as a request at those instants over a state fed with the earlier events (the serving function).
    state = s.new_state()
    state.add(T0, rows[0])
    state.add(T0 + 60, rows[1])
    assert np.array_equal(out[2], np.array(state.values_at(T0 + 180)), equal_nan=True)


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a window"):
        RealtimeFeatures.model_validate(
            {"event_table": "e", "event_time_column": "t", "features": [{"name": "n", "aggregation": "count"}]}
        )
    with pytest.raises(ValueError, match="not a multiple"):
        RealtimeFeatures.model_validate(
            {
                "event_table": "e",
                "event_time_column": "t",
                "resolution": "2m",
                "features": [{"name": "n", "aggregation": "count", "window": "3m"}],
            }
        )


def test_a_replay_asked_call_after_call_answers_as_a_fresh_state_per_instant() -> None:
    """Each key's state carries over between calls (a backtest's days); an instant earlier than one already asked
    replays the key from its start. Checked against a fresh state fed by hand for every instant."""
    s = spec()
    keys = [(1, 2), (1, 2), (3, 4), (1, 2), (3, 4), (1, 2)]
    rows = [ev(True), ev(False, 0.2), ev(True), ev(False, 0.9), ev(False, 0.4), ev(True)]
    times = np.array([T0, T0 + 60, T0 + 90, T0 + 600, T0 + 700, T0 + 4000])
    replay = Replay(s, keys, times, rows)
    calls = [  # day after day, then back in time
        ([(1, 2), (3, 4)], [T0 + 30, T0 + 95]),
        ([(1, 2), (3, 4), (1, 2)], [T0 + 650, T0 + 3600, T0 + 5000]),
        ([(1, 2), (9, 9)], [T0 + 61, T0 + 61]),
    ]
    for asked, at in calls:
        out = replay.values(asked, np.array(at, dtype=np.float64))
        for row, (key, instant) in enumerate(zip(asked, at, strict=True)):
            state = s.new_state()
            for k, t, event in zip(keys, times, rows, strict=True):
                if k == key and t < instant:
                    state.add(float(t), event)
            assert np.array_equal(out[row], np.array(state.values_at(instant)), equal_nan=True), (key, instant)


# --- the per-fetch update (`WindowState.add_columns`) against `add` one event at a time, on hostile input -------

_AMOUNTS = st.one_of(
    st.none(),
    st.floats(),  # NaN, ±inf, -0.0, subnormals, ±1.8e308
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(10**400),  # float() overflows: both must raise at the same event, leaving the same states
    st.just("1.5"),  # a string float() reads
    st.booleans(),
)
_EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # key: few, so events of one key repeat within a fetch
        st.one_of(  # time: out of order, duplicates, late by more than every window, far ahead
            st.sampled_from([0.0, 59.999, 60.0, 1799.0, 1800.0, 7200.0, -7200.0]),
            st.floats(min_value=-5 * 3600, max_value=5 * 3600, allow_nan=False),
        ),
        st.sampled_from([True, False, None, 0, "false"]),  # found: `where` compares with !=, missing reads None
        _AMOUNTS,
        st.sampled_from(["e1", "e1", "e2"]),  # duplicate ids: the windows count each event given
    ),
    max_size=40,
)


def _fetch_spec() -> WindowSpec:
    """Counts, a mean, sum/min/max of a number, minutes_since, and a sum under a `where`."""
    declared = RealtimeFeatures.model_validate(
        {
            "event_table": "events",
            "event_time_column": "event_time",
            "features": [
                {"name": "rate_30m", "aggregation": "mean", "field": "found", "window": "30m"},
                {"name": "n_120m", "aggregation": "count", "window": "120m"},
                {"name": "amount_sum_10m", "aggregation": "sum", "field": "amount", "window": "10m"},
                {"name": "amount_max_10m", "aggregation": "max", "field": "amount", "window": "10m"},
                {"name": "amount_min_10m", "aggregation": "min", "field": "amount", "window": "10m"},
                {"name": "since_miss", "aggregation": "minutes_since", "where": {"found": False}},
                {"name": "n_miss_30m", "aggregation": "count", "window": "30m", "where": {"found": False}},
                {
                    "name": "miss_sum_10m",
                    "aggregation": "sum",
                    "field": "amount",
                    "window": "10m",
                    "where": {"found": False},
                },
            ],
        }
    )
    return WindowSpec(declared.resolution, declared.features)


@given(before=_EVENTS, fetch=_EVENTS, drop_amount=st.booleans(), swept=st.booleans())
@settings(max_examples=400, deadline=None)
def test_a_fetch_applied_by_columns_equals_its_events_applied_one_by_one(
    before: list[tuple[Any, ...]], fetch: list[tuple[Any, ...]], drop_amount: bool, swept: bool
) -> None:
    s = _fetch_spec()
    one, columnar = {k: s.new_state() for k in range(4)}, {k: s.new_state() for k in range(4)}
    narrow = {k: s.new_state() for k in range(4)}  # given only the columns the spec reads (`WindowSpec.fields`)
    for states in (one, columnar, narrow):  # the same history first, so eviction and lateness have something to act on
        for key, t, found, amount, _ in before:
            with contextlib.suppress(OverflowError, ValueError):
                states[key].add(T0 + t, {"found": found, "amount": amount})
        if swept:  # as StreamProcessor.sweep leaves a state: no buckets, its newest time kept
            states[0].buckets = {}
    failed: type[BaseException] | None = None
    for key, t, found, amount, event_id in fetch:
        try:
            one[key].add(T0 + t, {"found": found, "amount": amount, "event_id": event_id})
        except (OverflowError, ValueError) as exc:  # a number too big for a float; a string where a number is read
            failed = type(exc)
            break
    columns: dict[str, list[Any]] = {
        "found": [e[2] for e in fetch],
        "amount": [e[3] for e in fetch],
        "event_id": [e[4] for e in fetch],
    }
    if drop_amount and all(e[3] is None for e in fetch):
        del columns["amount"]  # a column nobody carries reads as None, as a missing field does in `add`
    for states, passed in ((columnar, columns), (narrow, {f: c for f, c in columns.items() if f in s.fields})):
        try:
            WindowState.add_columns([states[e[0]] for e in fetch], [T0 + e[1] for e in fetch], passed)
        except (OverflowError, ValueError) as exc:
            assert failed is type(exc)
        else:
            assert failed is None
    for key in range(4):  # repr: NaN, -0.0 and None told apart, and the buckets' order too
        assert repr(columnar[key].to_json()) == repr(one[key].to_json())
        assert repr(narrow[key].to_json()) == repr(one[key].to_json())


def test_a_spec_reads_the_fields_its_features_aggregate_or_test() -> None:
    assert _fetch_spec().fields == {"found", "amount"}


def test_a_fetch_with_a_non_finite_time_raises_as_add_does() -> None:
    s = spec()
    for bad in (math.nan, math.inf):
        one, columnar = s.new_state(), s.new_state()
        one.add(T0, ev(True))
        with pytest.raises((ValueError, OverflowError)) as by_one:
            one.add(bad, ev(True))
        with pytest.raises(type(by_one.value)):
            WindowState.add_columns([columnar, columnar], [T0, bad], {"found": [True, True], "amount": [1.0, 1.0]})
        assert repr(columnar.to_json()) == repr(one.to_json())
