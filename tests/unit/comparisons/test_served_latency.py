"""The latency measures split each path's latency by where it was timed, checked against the rule computed by hand
in numpy on random shadow logs: a path's latency is served where the serving worker asked it on the request (the
lookup table for ``batch`` and ``batch_fallback``, the online path for ``online`` and ``batch_fallback``), else it
is the shadow comparison's background call."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
from comparison_fixtures import USECASE, record, write_shadow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comparisons import hourly, latency
from comparisons.shadow_rows import Window, load
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

_MS = st.one_of(st.none(), st.floats(min_value=0.05, max_value=5_000, allow_nan=False))
_ROW = st.tuples(st.sampled_from(["batch", "online", "batch_fallback"]), _MS, _MS, st.floats(0, 170))
_ON_REQUEST = {"batch": ("batch", "batch_fallback"), "live": ("online", "batch_fallback")}


def _expected(values: list[float]) -> tuple[int, float | None, float | None, float | None]:
    if not values:
        return 0, None, None, None
    array = np.asarray(values)
    return len(values), float(np.quantile(array, 0.5)), float(np.quantile(array, 0.99)), float(array.max())


def _same(found: Any, expected: tuple[int, float | None, float | None, float | None]) -> None:
    if not expected[0]:
        assert (found.n, found.p50, found.p99, found.max) == expected
    else:
        assert (found.n, found.p50, found.p99, found.max) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=60))
def test_served_and_background_latencies_as_by_hand(
    settings: Settings, usecase: UseCase, rows: list[tuple[str, float | None, float | None, float]]
) -> None:
    shutil.rmtree(settings.shadow_dir / USECASE, ignore_errors=True)
    records = [
        record(n, minutes, product=n, served=served, batch_ms=batch_ms, online_ms=online_ms)  # type: ignore[arg-type]
        for n, (served, batch_ms, online_ms, minutes) in enumerate(rows)
    ]
    write_shadow(settings, records)
    loaded = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        result = latency.measure(loaded)
        for side, timed, column in (("batch", result.batch, 1), ("live", result.live, 2)):
            served = [row[column] for row in rows if row[0] in _ON_REQUEST[side] and row[column] is not None]
            background = [row[column] for row in rows if row[0] not in _ON_REQUEST[side] and row[column] is not None]
            _same(timed.latency_ms, _expected(served))
            _same(timed.background_ms, _expected(background))
            assert sum(result.histogram.counts.get(side, [])) == len(served)
            assert sum(result.histogram.counts.get(f"{side} (background)", [])) == len(background)
        # The hourly table's live p99 reads the served answers of its hour only.
        for hour in hourly.measure(loaded, 0.5, 0.05):
            in_hour = [
                row[2]
                for row, r in zip(rows, records, strict=True)
                if row[0] in _ON_REQUEST["live"]
                and row[2] is not None
                and r.request_time.replace(minute=0, second=0, microsecond=0) == hour.hour
            ]
            assert hour.live_p99_ms == (None if not in_hour else pytest.approx(float(np.quantile(in_hour, 0.99))))
    finally:
        loaded.con.close()
