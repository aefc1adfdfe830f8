"""Live against candidate, seeded: a truly better candidate gets promote, a worse one rollback, too few labels hold."""

from __future__ import annotations

import numpy as np
import pytest
from comparison_fixtures import label, record, with_policy, write_shadow

from comparisons.candidate import judge
from migrate.errors import NoShadowDataError
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

POLICY: dict[str, object] = {"min_labeled_samples": 1000, "max_accuracy_loss": 0.01, "max_p99_latency_ms": 25}


def _scenario(settings: Settings, *, live_noise: float, candidate_noise: float, n: int = 3000, seed: int = 5) -> None:
    """n requests over 3 h; truth p from a logit; each model = truth logit + its own noise; labels 1–50 min later.

    A few older records without a candidate's answer are in the window too: they are not part of the pair.
    """
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    live = 1 / (1 + np.exp(-(logit + rng.normal(0, live_noise, n))))
    candidate = 1 / (1 + np.exp(-(logit + rng.normal(0, candidate_noise, n))))
    minutes = np.sort(rng.uniform(0, 180, n))
    records = [
        record(i, float(minutes[i]), product=i, bp=0.5, op=float(live[i]), online_model_version="v1").model_copy(
            update={
                "candidate_prediction": float(candidate[i]),
                "candidate_model_version": "v2",
                "candidate_latency_ms": 3.0,
            }
        )
        for i in range(n)
    ]
    records += [record(n + i, 1.0, product=n + i, bp=0.5, op=0.01) for i in range(50)]  # before the candidate
    labels = [label(float(minutes[i] + rng.uniform(1, 50)), float(y[i]), product=i) for i in range(n)]
    labels.append(label(600, 0.0, store=99, product=99))  # the watermark: every window has closed
    write_shadow(settings, records, labels)


def test_a_truly_better_candidate_gets_promote(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, live_noise=1.5, candidate_noise=0.3)
    result = judge(with_policy(usecase, **POLICY), settings)
    assert result.verdict.decision == "promote", result.verdict.reasons
    assert (result.live_version, result.candidate_version, result.requests) == ("v1", "v2", 3000)
    evidence = result.verdict.evidence
    assert evidence.improvement_low is not None and evidence.improvement_low > 0  # the whole interval above zero


def test_a_worse_candidate_gets_rollback(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, live_noise=0.3, candidate_noise=1.5)
    result = judge(with_policy(usecase, **POLICY), settings)
    assert result.verdict.decision == "rollback", result.verdict.reasons
    assert any("significantly worse" in reason for reason in result.verdict.reasons)


def test_an_equal_candidate_with_too_few_labels_holds(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, live_noise=0.5, candidate_noise=0.5, n=400)
    result = judge(with_policy(usecase, **POLICY), settings)
    assert result.verdict.decision == "hold"
    assert any("too few labeled samples" in reason for reason in result.verdict.reasons)


def test_a_log_without_a_candidate_says_how_to_get_one(settings: Settings, usecase: UseCase) -> None:
    write_shadow(settings, [record(1, 1.0)], [label(600, 0.0)])
    with pytest.raises(NoShadowDataError) as caught:
        judge(usecase, settings)
    assert "migrate models candidate" in (caught.value.fix or "")
