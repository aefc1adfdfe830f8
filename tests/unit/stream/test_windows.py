"""The window code, by hand: buckets, windows, lateness, eviction, minutes_since, snapshots, training order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from migrate.feature_windows import WindowSpec, WindowState, since_minutes, training_features
from migrate.usecase import RealtimeFeatures

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0 - (1_700_000_000.0 % 60)  # a minute boundary


def spec(**extra: Any) -> WindowSpec:
    return WindowSpec(
        RealtimeFeatures.model_validate(
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
    )


def values(state: WindowState) -> dict[str, float]:
    return dict(zip(state.spec.names, state.values(), strict=True))


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
    assert got["since_miss"] == T0 + 300  # stored as the event time of the last miss
    assert since_minutes(got["since_miss"], T0 + 60 * 35) == pytest.approx(30.0)
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
    assert in_order.values() == shuffled.values() or np.allclose(in_order.values(), shuffled.values(), equal_nan=True)
    # A late event older than every window changes no window (but still counts for minutes_since).
    state = spec().new_state()
    state.add(T0 + 3 * 3600, ev(True))
    state.add(T0, ev(False))
    got = values(state)
    assert got["n_120m"] == 1 and got["since_miss"] == T0


def test_snapshot_round_trip_is_exact() -> None:
    s = spec()
    state = s.new_state()
    for i in range(50):
        state.add(T0 + i * 37.3, ev(i % 3 == 0, amount=i * 0.1))
    again = WindowState.from_json(s, state.to_json())
    assert np.array_equal(np.array(again.values()), np.array(state.values()), equal_nan=True)
    again.add(T0 + 2000, ev(False, 0.3))
    state.add(T0 + 2000, ev(False, 0.3))
    assert np.array_equal(np.array(again.values()), np.array(state.values()), equal_nan=True)


def test_training_features_are_the_state_just_before_each_event() -> None:
    s = spec()
    key = (1, 2)
    rows = [ev(True), ev(False), ev(True)]
    times = np.array([T0, T0 + 60, T0 + 180])
    out = training_features(s, [key, key, key], times, rows)
    assert np.isnan(out[0]).all()  # nothing known before the first event
    names = s.names
    assert out[1, names.index("n_30m")] == 1 and out[2, names.index("n_30m")] == 2
    assert out[2, names.index("rate_30m")] == 0.5
    assert out[2, names.index("since_miss")] == pytest.approx(2.0)  # minutes at the event's time
    # A new entity starts fresh.
    out = training_features(s, [key, (9, 9)], np.array([T0, T0 + 60]), [ev(False), ev(True)])
    assert np.isnan(out[1]).all()


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
