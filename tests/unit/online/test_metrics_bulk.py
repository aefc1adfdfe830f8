"""`observe_many`: one write per bucket must give what prometheus-client's own ``observe`` per sample gives, on
hostile values too (NaN, ±inf, values exactly on a bound), in one process and in multiprocess mode."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from online.serving.metrics import MULTIPROC_ENV, ServingMetrics, UseCaseSeries, exposition, observe_many

pytestmark = pytest.mark.unit

_BOUNDS = (1.0, 10.0, 60.0, 300.0)
_ROOT = Path(__file__).resolve().parents[3]


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("age_seconds", "Ages.", ["group"], buckets=_BOUNDS, registry=registry)


def _same(
    bulk: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    one: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    magnitude: float = 0.0,
) -> None:
    """Equal samples; a sum equal up to the rounding of adding the same values in another grouping. That error is
    bounded by n·2⁻⁵³ of the values' magnitudes (`magnitude`, `_magnitude`), not of the sum itself: values of
    opposite signs near 1e307 leave a sum far smaller than they are, off by their own rounding (hypothesis found
    -4.987122748e300 against -4.987122743e300)."""
    assert bulk.keys() == one.keys()
    for key, value in one.items():
        if key[0].endswith("_sum"):
            assert (math.isnan(value) and math.isnan(bulk[key])) or bulk[key] == pytest.approx(
                value, rel=1e-9, abs=1e-12 * magnitude, nan_ok=True
            )
        else:
            assert bulk[key] == value, key


_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64, min_value=None, max_value=None),
    st.sampled_from([*_BOUNDS, 0.0, -0.0, math.inf, -math.inf, math.nan, math.nextafter(10.0, math.inf)]),
)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(_VALUES, max_size=40), max_size=5))
def test_bulk_observe_gives_the_librarys_buckets_count_and_sum(batches: list[list[float]]) -> None:
    reg_one, one = _histogram()
    reg_bulk, bulk = _histogram()
    one_child, bulk_child = one.labels("g"), bulk.labels("g")
    for batch in batches:
        for value in batch:
            one_child.observe(value)
        observe_many(bulk_child, batch)
    _same(_samples(generate_latest(reg_bulk)), _samples(generate_latest(reg_one)), _magnitude(batches))


def _magnitude(batches: list[list[float]]) -> float:
    """The sum of the finite values' magnitudes, at most the largest float: no running sum that stayed finite
    exceeded it, so it bounds the rounding error of each addition (over 2⁵³)."""
    return min(sum(abs(value) for batch in batches for value in batch if math.isfinite(value)), sys.float_info.max)


def test_a_batch_whose_sum_overflows_in_its_grouping_gives_the_librarys_finite_sum() -> None:
    """Found by the test above (hypothesis): one value at a time, the running sum of these stays finite
    (9.85e307 first, then the negatives); a batch of the last five sums to -1.89e308, past the largest float, and
    made the histogram's sum -inf where the library's is -4.74e307."""
    values = [9.852801732358158e307, -3.2631453225022405e307, -9.252676902234174e307, -6.432951292098565e307]
    values += [1.3069652702496191e299, 4.3528849334927723e307]
    reg_one, one = _histogram()
    reg_bulk, bulk = _histogram()
    for value in values:
        one.labels("g").observe(value)
    observe_many(bulk.labels("g"), values[:1])
    observe_many(bulk.labels("g"), values[1:])
    by_one, by_bulk = _samples(generate_latest(reg_one)), _samples(generate_latest(reg_bulk))
    key = ("age_seconds_sum", (("group", "g"),))
    assert math.isfinite(by_one[key]) and by_bulk[key] == by_one[key]
    _same(by_bulk, by_one, _magnitude([values]))


def test_a_sum_that_overflows_one_by_one_overflows_in_a_batch_too() -> None:
    """The other way round: the library's running sum 1e308 + 1e308 overflows to inf (and stays there), where the
    batch [1e308, -1e308] sums to 0 and would have left 1e308."""
    reg_one, one = _histogram()
    reg_bulk, bulk = _histogram()
    for value in (1e308, 1e308, -1e308):
        one.labels("g").observe(value)
    observe_many(bulk.labels("g"), [1e308])
    observe_many(bulk.labels("g"), [1e308, -1e308])
    key = ("age_seconds_sum", (("group", "g"),))
    assert _samples(generate_latest(reg_bulk))[key] == _samples(generate_latest(reg_one))[key] == math.inf


def test_bulk_observe_by_hand() -> None:
    registry, histogram = _histogram()
    observe_many(histogram.labels("g"), [0.5, 1.0, 1.5, 60.0, 61.0, 1e9, math.inf])
    samples = _samples(generate_latest(registry))

    def bucket(le: str) -> float:
        return samples[("age_seconds_bucket", (("group", "g"), ("le", le)))]

    # cumulative: le=1 holds 0.5 and 1.0 (a value on a bound is in it), le=60 adds 1.5 and 60.0
    assert [bucket(le) for le in ("1.0", "10.0", "60.0", "300.0", "+Inf")] == [2, 3, 4, 5, 7]
    assert samples[("age_seconds_count", (("group", "g"),))] == 7
    assert samples[("age_seconds_sum", (("group", "g"),))] == math.inf


def test_the_series_observes_each_groups_ages_in_its_own_child() -> None:
    registry = CollectorRegistry()
    series = UseCaseSeries(ServingMetrics(registry), "uc")
    series.feature_ages({"stream": [0.5, 20.0], "lookup": [90_000.0]})
    series.feature_ages({"stream": [2.0], "empty": []})
    samples = _samples(generate_latest(registry))
    stream = (("group", "stream"), ("usecase", "uc"))
    assert samples[("migrate_feature_age_seconds_count", stream)] == 3
    assert samples[("migrate_feature_age_seconds_sum", stream)] == 22.5
    assert samples[("migrate_feature_age_seconds_bucket", (("group", "stream"), ("le", "1.0"), ("usecase", "uc")))] == 1
    assert samples[("migrate_feature_age_seconds_count", (("group", "lookup"), ("usecase", "uc")))] == 1
    assert samples[("migrate_feature_age_seconds_count", (("group", "empty"), ("usecase", "uc")))] == 0


_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from online.serving.metrics import ServingMetrics, UseCaseSeries
series = UseCaseSeries(ServingMetrics(CollectorRegistry()), "uc")
series.feature_ages({"stream": [float(v) for v in sys.argv[1:]]})
"""


def test_bulk_observe_adds_up_across_workers_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for values in (["0.5", "5", "7"], ["100", "0.25"]):
        env = {MULTIPROC_ENV: str(tmp_path), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", _WORKER, *values], env=env, check=True, timeout=120, cwd=_ROOT)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    samples = _samples(exposition(CollectorRegistry()))
    stream = (("group", "stream"), ("usecase", "uc"))
    assert samples[("migrate_feature_age_seconds_count", stream)] == 5
    assert samples[("migrate_feature_age_seconds_sum", stream)] == pytest.approx(112.75)
    assert samples[("migrate_feature_age_seconds_bucket", (("group", "stream"), ("le", "1.0"), ("usecase", "uc")))] == 2
    assert (
        samples[("migrate_feature_age_seconds_bucket", (("group", "stream"), ("le", "10.0"), ("usecase", "uc")))] == 4
    )
