"""Accuracy metrics against scikit-learn and by hand; the paired bootstrap's interval on known differences."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error, roc_auc_score

from comparisons import bootstrap
from comparisons.bootstrap import metric, paired_intervals
from comparisons.stats import rank_correlation

pytestmark = pytest.mark.unit


def test_auc_by_hand_with_ties() -> None:
    # positives .8 and .4; negatives .4 and .1: pairs (.8>.4) 1, (.8>.1) 1, (.4=.4) ½, (.4>.1) 1 → 3.5 / 4
    p = np.array([0.8, 0.4, 0.4, 0.1])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    assert metric("auc", p, y) == pytest.approx(0.875)
    assert metric("auc", p, np.ones(4)) is None  # one class only
    assert metric("brier", np.array([]), np.array([])) is None


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.3).astype(float)
    p = np.clip(np.round(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, 500), 2), 0.01, 0.99)  # ties included
    assert metric("auc", p, y) == pytest.approx(roc_auc_score(y, p))
    assert metric("log_loss", p, y) == pytest.approx(log_loss(y, p))
    assert metric("brier", p, y) == pytest.approx(brier_score_loss(y, p))
    assert metric("mae", p, y) == pytest.approx(mean_absolute_error(y, p))
    assert metric("rmse", p, y) == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))


def test_identical_paths_give_a_zero_width_interval_at_zero() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.5).astype(float)
    p = rng.random(300)
    found = paired_intervals(("auc", "brier"), p, p.copy(), y, confidence=0.95)
    for interval in found.values():
        assert interval is not None
        assert (interval.delta, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_interval_covers_a_known_improvement_and_excludes_zero() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    y = (rng.random(n) < 0.5).astype(float)
    batch = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    live = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    found = paired_intervals(("auc", "brier"), batch, live, y, confidence=0.95)
    auc, brier = found["auc"], found["brier"]
    assert auc is not None and brier is not None
    assert 0 < auc.low < auc.delta < auc.high
    assert brier.high < 0  # live's Brier is lower: the whole interval of live − batch is negative
    again = paired_intervals(("auc", "brier"), batch, live, y, confidence=0.95)
    assert again == found  # a fixed seed: the same interval every run


def test_subsampled_interval_is_scaled_to_the_full_count() -> None:
    rng = np.random.default_rng(9)
    n = 50_000
    y = (rng.random(n) < 0.5).astype(float)
    batch = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    live = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    full = paired_intervals(("brier",), batch, live, y, confidence=0.9, resamples=300, max_pairs=n)["brier"]
    capped = paired_intervals(("brier",), batch, live, y, confidence=0.9, resamples=300, max_pairs=5_000)["brier"]
    assert full is not None and capped is not None
    assert capped.pairs_resampled == 5_000 and capped.delta == full.delta
    width_full, width_capped = full.high - full.low, capped.high - capped.low
    assert width_capped == pytest.approx(width_full, rel=0.25)  # without the scaling it would be √10 ≈ 3.2× wider


def test_rank_correlation_with_ties_and_constants() -> None:
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert rank_correlation(np.array([1.0, 1.0, 2.0]), np.array([5.0, 5.0, 9.0])) == pytest.approx(1.0)
    assert rank_correlation(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None
    assert rank_correlation(np.array([1.0]), np.array([1.0])) is None


def _average_ranks(values: list[float]) -> list[float]:
    """Ranks by hand: each distinct value's average position (1-based) in the sorted values."""
    ordered = sorted(values)
    first: dict[float, int] = {}
    count: dict[float, int] = {}
    for position, value in enumerate(ordered, start=1):
        first.setdefault(value, position)
        count[value] = count.get(value, 0) + 1
    return [first[v] + (count[v] - 1) / 2 for v in values]


def test_rank_correlation_with_many_ties_matches_ranks_by_hand_in_any_order() -> None:
    # Few distinct values: long runs of ties, where an unstable sort orders the members of a run differently.
    rng = np.random.default_rng(11)
    a = np.round(rng.random(3000), 1)
    b = np.round(a + rng.normal(0, 0.3, 3000), 1)
    ra, rb = np.array(_average_ranks(a.tolist())), np.array(_average_ranks(b.tolist()))
    expected = float(np.corrcoef(ra, rb)[0, 1])
    assert rank_correlation(a, b) == pytest.approx(expected, rel=1e-12)
    order = rng.permutation(a.size)
    assert rank_correlation(a[order], b[order]) == pytest.approx(expected, rel=1e-12)


def test_auc_with_many_ties_matches_scikit_learn_and_ignores_the_order() -> None:
    rng = np.random.default_rng(12)
    y = (rng.random(4000) < 0.4).astype(float)
    p = np.round(np.clip(0.4 + 0.3 * (y - 0.4) + rng.normal(0, 0.25, y.size), 0, 1), 1)  # 11 distinct scores
    auc = metric("auc", p, y)
    assert auc == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    for _ in range(3):  # whole-number sums read at the edges of runs of ties: bit for bit in any row order
        order = rng.permutation(y.size)
        assert metric("auc", p[order], y[order]) == auc
    # The resamples' integer weights: each row of weights as scikit-learn's sample weights.
    weights = rng.integers(0, 4, size=(3, y.size)).astype(np.int32)
    got = bootstrap._FUNCTIONS["auc"](p, y, weights)  # the weighted AUC the paired bootstrap uses
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(roc_auc_score(y, p, sample_weight=row), rel=1e-12)
