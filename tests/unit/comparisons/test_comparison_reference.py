"""The comparator's figures on a random shadow log of a few hundred requests against a straightforward computation:
the label join, the counts and every metric done again request by request in plain Python (AUC by scikit-learn,
percentiles by NumPy), so the SQL, the sampling and the shared arrays of the fast path cannot drift from them."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from comparison_fixtures import USECASE, label, labels_by_hand, record, write_shadow
from sklearn.metrics import roc_auc_score

from comparisons import accuracy, agreement, explain, staleness
from comparisons.shadow_rows import Window, load
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord

pytestmark = pytest.mark.unit

THRESHOLD, TAU = 0.5, 0.15


def _world(seed: int = 3) -> tuple[list[ShadowRecord], list[LabelRecord]]:
    """~600 requests of 40 entities over three hours (misses, live errors, one duplicate delivery) and labels."""
    rng = np.random.default_rng(seed)
    records, labels = [], []
    for n in range(600):
        store, product = int(rng.integers(1, 5)), int(rng.integers(10, 20))
        minutes = float(rng.uniform(0, 180))
        bp = None if rng.random() < 0.08 else round(float(rng.random()), 6)
        op = None if rng.random() < 0.05 else round(float(rng.random()), 6)
        records.append(
            record(
                n,
                minutes,
                store=store,
                product=product,
                bp=bp,
                op=op,
                batch_age=float(rng.uniform(60, 90_000)),
                ages={"found_rate_1d": float(rng.uniform(1, 5000))} if op is not None else {},
                online_error=None if op is not None else "timeout",
            )
        )
    records.append(records[17])  # a producer retry: counted once
    used: set[tuple[int, int, float]] = set()
    for _ in range(700):
        store, product = int(rng.integers(1, 5)), int(rng.integers(10, 20))
        minutes = round(float(rng.uniform(0, 230)), 3)  # the watermark lands before the last windows close
        if (store, product, minutes) not in used:  # one label per entity and instant: the first is unambiguous
            used.add((store, product, minutes))
            labels.append(label(minutes, float(rng.random() < 0.4), store=store, product=product))
    return records, labels


def test_the_fast_path_equals_a_request_by_request_computation(settings: Settings, usecase: UseCase) -> None:
    records, labels = _world()
    write_shadow(settings, records, labels)
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        got_accuracy = accuracy.measure(rows, confidence=0.9)
        got_agreement = agreement.measure(rows, THRESHOLD, TAU, "test")
        got_staleness = staleness.measure(rows)
        got_explained = explain.measure(rows, usecase, settings, TAU)
    finally:
        rows.con.close()
    joined = labels_by_hand(records, labels, parse_duration(usecase.label.available_after))
    assert rows.rows == len(joined) == 600

    states = [state for _, state, _ in joined]
    assert (got_accuracy.labeled, got_accuracy.unlabeled, got_accuracy.pending) == (
        states.count("labeled"),
        states.count("unlabeled"),
        states.count("pending"),
    )
    pairs = [
        (r, y)
        for r, state, y in joined
        if state == "labeled" and r.batch_prediction is not None and r.online_prediction is not None
    ]
    assert got_accuracy.pairs == len(pairs) > 100

    def scores(subset: list[tuple[ShadowRecord, float | None]]) -> dict[str, tuple[float, float]]:
        y = np.array([v for _, v in subset])
        out = {}
        for path, attribute in (("batch", "batch_prediction"), ("live", "online_prediction")):
            p = np.array([getattr(r, attribute) for r, _ in subset])
            q = np.clip(p, 1e-15, 1 - 1e-15)
            out[path] = (
                float(np.mean((p - y) ** 2)),
                float(np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))),
                float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else math.nan,
            )
        return {name: (out["batch"][i], out["live"][i]) for i, name in enumerate(("brier", "log_loss", "auc"))}

    overall = scores(pairs)
    for name, (batch, live) in overall.items():
        score = got_accuracy.score(name)
        assert score is not None
        assert (score.batch, score.live) == (pytest.approx(batch, rel=1e-9), pytest.approx(live, rel=1e-9)), name
        assert score.delta == pytest.approx(live - batch, rel=1e-9, abs=1e-12), name
        assert score.low is not None and score.high is not None and score.low <= score.delta <= score.high
    for hour in got_accuracy.hourly:
        members = [(r, y) for r, y in pairs if hour.hour <= r.request_time < hour.hour + timedelta(hours=1)]
        assert hour.pairs == len(members)
        for name, (batch, live) in scores(members).items():
            expected = (None if math.isnan(batch) else batch, None if math.isnan(live) else live)
            assert (hour.batch[name], hour.live[name]) == pytest.approx(expected, rel=1e-9), (hour.hour, name)

    both = [r for r, _, _ in joined if r.batch_prediction is not None and r.online_prediction is not None]
    delta = np.array([abs(r.online_prediction - r.batch_prediction) for r in both])
    flips = sum((r.batch_prediction >= THRESHOLD) != (r.online_prediction >= THRESHOLD) for r in both)
    assert got_agreement.pairs == len(both)
    assert got_agreement.mean_abs_delta == pytest.approx(float(delta.mean()), rel=1e-9)
    assert (got_agreement.flips, got_agreement.disagreements) == (flips, int((delta > TAU).sum()))
    p50, p95, p99 = np.percentile(delta, [50, 95, 99])
    got = got_agreement.abs_delta
    assert (got.p50, got.p95, got.p99, got.max) == pytest.approx((p50, p95, p99, delta.max()), rel=1e-9)

    disagreeing = [r for r, d in zip(both, delta, strict=True) if d > TAU]
    assert got_explained.disagreeing_requests == len(disagreeing) > 0
    assert got_explained.disagreeing_entities == len({(r.key["store_id"], r.key["product_id"]) for r in disagreeing})

    answered = [r for r, _, _ in joined if r.online_prediction is not None]
    assert all(group.answers == len(answered) for group in got_staleness.groups)
    ages = np.array([r.batch_data_age_s for r, _, _ in joined if r.batch_prediction is not None])
    assert got_staleness.batch.n == ages.size
    assert (got_staleness.batch.p50, got_staleness.batch.p95) == pytest.approx(tuple(np.percentile(ages, [50, 95])))
