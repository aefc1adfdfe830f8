"""The verdict: its rules on evidence made by hand, then end to end on synthetic shadow logs with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from comparison_fixtures import T0, label, record, with_policy, write_shadow

from comparisons import skew
from comparisons.comparison import compare
from comparisons.verdict import Evidence, decide, primary_metric
from migrate.artifact import ArtifactStore
from migrate.errors import PolicyMismatchError
from migrate.settings import Settings
from migrate.usecase import CutoverPolicy, UseCase

pytestmark = pytest.mark.unit

POLICY = CutoverPolicy(
    min_labeled_samples=1000, max_accuracy_loss=0.01, min_coverage=0.98, max_error_rate=0.01, max_p99_latency_ms=25
)


def evidence(**changes: object) -> Evidence:
    base: dict[str, object] = {
        "requests": 5000,
        "labeled_pairs": 4000,
        "metric": "auc",
        "higher_is_better": True,
        "batch_value": 0.80,
        "live_value": 0.85,
        "improvement": 0.05,
        "improvement_low": 0.03,
        "improvement_high": 0.07,
        "confidence": 0.95,
        "live_share": 1.0,
        "live_error_rate": 0.001,
        "live_p99_ms": 12.0,
        "fallback_rate": 0.0,
        "loss_metric": "brier",
        "live_loss": 0.12,
        "baseline_loss": 0.21,
        "live_calibration_error": 0.02,
        "live_holdout": 0.86,
        "live_offline_gap": 0.01,
        "feature_skew_share": 0.01,
        "feature_skew_feature": "found_rate_7d",
        "feature_skew_sampled": 2000,
    }
    return Evidence.model_validate(base | changes)


def test_promote_needs_every_check() -> None:
    verdict = decide(POLICY, evidence())
    assert verdict.decision == "promote"
    assert all(check.passed for check in verdict.checks)


@pytest.mark.parametrize(
    ("changes", "decision", "reason"),
    [
        ({"labeled_pairs": 999}, "hold", "too few labeled samples"),
        ({"improvement_low": -0.02, "improvement_high": 0.01}, "hold", "cannot be ruled out"),
        ({"improvement_low": -0.0099, "improvement_high": 0.01}, "promote", "lower bound"),
        ({"live_share": 0.5}, "hold", "live coverage too low"),
        ({"live_error_rate": 0.02}, "rollback", "live error rate"),
        ({"live_p99_ms": 30.0}, "rollback", "p99 latency"),
        ({"fallback_rate": 0.2}, "rollback", "fallback rate"),
        (
            {"improvement": -0.05, "improvement_low": -0.07, "improvement_high": -0.03},
            "rollback",
            "significantly worse",
        ),
        # significantly worse, but on too few labels: not enough to act on, and never a promote
        ({"labeled_pairs": 10, "improvement_low": -0.07, "improvement_high": -0.03}, "hold", "too few"),
        ({"improvement": None, "improvement_low": None, "improvement_high": None}, "hold", "undefined"),
        ({"live_p99_ms": None}, "hold", "not measurable"),
        ({"live_loss": 0.25}, "hold", "no better than a trivial baseline"),
        ({"live_calibration_error": 0.15}, "hold", "miscalibrated"),
        ({"live_holdout": 0.97, "live_offline_gap": 0.12}, "hold", "suspected leakage or training/serving skew"),
        # Unknown holdout (a pinned model without a manifest) or calibration: not judged, not a hold.
        ({"live_holdout": None, "live_offline_gap": None, "live_calibration_error": None}, "promote", "lower bound"),
        # On too few labels none of them is judged: the hold says why.
        ({"labeled_pairs": 10, "live_calibration_error": 0.5}, "hold", "too few"),
        # Live features off their offline point-in-time values (a lagging stream, say): held, whatever the labels.
        ({"feature_skew_share": 0.25}, "hold", "found_rate_7d differs or is missing on one side in 25.0% of 2,000"),
        ({"labeled_pairs": 10, "feature_skew_share": 0.5}, "hold", "live features differ from their offline"),
        ({"feature_skew_share": 0.1}, "promote", "lower bound"),  # at the limit (max_feature_skew 0.1): passes
        ({"feature_skew_share": None, "feature_skew_sampled": 0}, "promote", "lower bound"),  # not measured
    ],
)
def test_each_rule(changes: dict[str, object], decision: str, reason: str) -> None:
    verdict = decide(POLICY, evidence(**changes))
    assert verdict.decision == decision
    assert any(reason in r for r in verdict.reasons), verdict.reasons


def test_primary_metric_must_fit_the_label() -> None:
    assert primary_metric(CutoverPolicy(), "binary") == "auc"
    assert primary_metric(CutoverPolicy(), "regression") == "mae"
    with pytest.raises(PolicyMismatchError, match="does not apply"):
        primary_metric(CutoverPolicy(primary_metric="auc"), "regression")


def _scenario(
    settings: Settings,
    *,
    batch_noise: float,
    live_noise: float,
    n: int = 3000,
    labeled: int | None = None,
    skewed_share: float = 0.0,
    live_ms: float = 5.0,
    seed: int = 11,
    live_shift: float = 0.0,
    live_version: str = "v1",
    canary_share: float = 0.0,
    background_ms: float | None = None,
) -> None:
    """n requests (one entity each) over 3 h; truth p from a logit; each path = truth logit + its own noise.

    Every request is served by the lookup table at stage shadow (the live path's ``live_ms`` is then the shadow
    comparison's, in the background; ``background_ms`` instead, if given), except ``canary_share`` of them, served
    online at stage canary in ``live_ms``.

    ``skewed_share`` of entities get a feature-skew bug on the live path: their live score is that of another
    entity. Labels arrive 1–50 min after the request; ``labeled`` caps how many requests get one. ``live_shift``
    adds a constant to the live logit: the same ranking (AUC), predictions off the observed rates.
    """
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, n)
    truth = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < truth).astype(float)
    batch = 1 / (1 + np.exp(-(logit + rng.normal(0, batch_noise, n))))
    live = 1 / (1 + np.exp(-(logit + rng.normal(0, live_noise, n) + live_shift)))
    skewed = rng.random(n) < skewed_share
    live = np.where(skewed, rng.permutation(live), live)
    minutes = np.sort(rng.uniform(0, 180, n))
    canary = rng.random(n) < canary_share
    records = [
        record(
            i,
            float(minutes[i]),
            product=i,
            bp=float(batch[i]),
            op=float(live[i]),
            online_ms=live_ms if canary[i] or background_ms is None else background_ms,
            online_model_version=live_version,
            served="online" if canary[i] else "batch",
            stage="canary" if canary[i] else "shadow",
        )
        for i in range(n)
    ]
    count = n if labeled is None else labeled
    labels = [label(float(minutes[i] + rng.uniform(1, 50)), float(y[i]), product=i) for i in range(count)]
    labels.append(label(600, 0.0, store=99, product=99))  # the watermark: every window has closed
    write_shadow(settings, records, labels)


def _decide(settings: Settings, usecase: UseCase, **policy: object) -> tuple[str, list[str]]:
    defaults: dict[str, object] = {"min_labeled_samples": 1000, "max_accuracy_loss": 0.01, "max_p99_latency_ms": 25}
    chosen = with_policy(usecase, **(defaults | policy))
    result = compare(chosen, settings)
    return result.verdict.decision, result.verdict.reasons


def test_live_clearly_better_is_promoted(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=1.5, live_noise=0.3)
    decision, reasons = _decide(settings, usecase)
    assert decision == "promote", reasons


def test_live_clearly_worse_is_rolled_back(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=0.3, live_noise=1.5)
    decision, reasons = _decide(settings, usecase)
    assert decision == "rollback", reasons
    assert any("significantly worse" in r for r in reasons)


def test_no_real_difference_passes_a_tolerance_but_not_zero_tolerance(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=0.5, live_noise=0.5)
    assert _decide(settings, usecase, max_accuracy_loss=0.02)[0] == "promote"
    decision, reasons = _decide(settings, usecase, max_accuracy_loss=0.0)
    assert decision == "hold", reasons
    assert any("cannot be ruled out" in r for r in reasons)


def test_too_few_labels_holds_even_when_live_is_better(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=1.5, live_noise=0.3, labeled=300)
    decision, reasons = _decide(settings, usecase)
    assert decision == "hold", reasons
    assert any("too few labeled samples" in r for r in reasons)


def test_feature_skew_bug_on_the_live_path_is_rolled_back(settings: Settings, usecase: UseCase) -> None:
    # Live would be better, but 40 % of entities get another entity's live score (a join/feature-skew bug).
    _scenario(settings, batch_noise=0.6, live_noise=0.3, skewed_share=0.4)
    decision, reasons = _decide(settings, usecase)
    assert decision == "rollback", reasons


def test_slow_live_path_is_rolled_back_whatever_its_accuracy(settings: Settings, usecase: UseCase) -> None:
    # At canary, a tenth of the requests is served online, each in 40 ms (> max_p99_latency_ms 25).
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_ms=40.0, canary_share=0.1)
    decision, reasons = _decide(settings, usecase)
    assert decision == "rollback" and any("p99 latency (ms) 40.000" in r for r in reasons), reasons


def test_a_slow_background_comparison_at_shadow_is_no_served_latency(settings: Settings, usecase: UseCase) -> None:
    """At stage shadow the live path serves nobody: the 40 ms its answers took are the shadow comparison's calls
    in the background (idle priority, several requests' entities at once), not a latency anyone waited for. The
    verdict neither rolls back nor holds for it: it is judged from canary on, by the serving guardrail."""
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_ms=40.0)
    chosen = with_policy(usecase, min_labeled_samples=1000, max_accuracy_loss=0.01, max_p99_latency_ms=25)
    result = compare(chosen, settings)
    assert result.verdict.decision == "promote", result.verdict.reasons
    check = next(c for c in result.verdict.checks if c.name == "live_p99_latency_ms")
    assert check.passed is None and check.value is None
    assert "judged from canary on" in check.detail and "p99 40.000 ms" in check.detail
    assert any("judged at canary" in r for r in result.verdict.reasons)
    assert result.latency.live.latency_ms.n == 0 and result.latency.live.background_ms.p99 == 40


def test_at_canary_the_live_p99_is_that_of_the_answers_served_online(settings: Settings, usecase: UseCase) -> None:
    """A canary window: the tenth of requests served online took 5 ms on the request; the shadow comparison took
    200 ms for the live answers of the rest (a loaded background process). The guardrail reads the served 5 ms,
    so it passes; both are reported, each under its own name."""
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_ms=5.0, canary_share=0.1, background_ms=200.0)
    chosen = with_policy(usecase, min_labeled_samples=1000, max_accuracy_loss=0.01, max_p99_latency_ms=25)
    result = compare(chosen, settings)
    assert result.verdict.decision == "promote", result.verdict.reasons
    check = next(c for c in result.verdict.checks if c.name == "live_p99_latency_ms")
    assert (check.passed, check.value) == (True, 5.0)
    served, background = result.latency.live.latency_ms, result.latency.live.background_ms
    assert served.n + background.n == 3000 and 200 < served.n < 400  # ~10 % of 3,000 requests
    assert (served.max, background.p50) == (5, 200)
    assert any("every guardrail passes" in r for r in result.verdict.reasons)


def test_without_lookup_store_or_artifacts_the_comparison_says_so(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=1.5, live_noise=0.3, n=500)
    result = compare(usecase, settings)
    assert not result.noise_floor.known and result.noise_floor.reason
    assert result.agreement.disagreement_threshold == usecase.cutover_policy.disagreement_threshold
    assert result.waste.share is None and result.waste.note
    assert not result.explanation.available
    assert "no artifact of live model version(s) ['v1']" in result.explanation.reason
    assert result.explanation.disagreeing_requests > 0


def _online_model(settings: Settings, usecase: UseCase, holdout_auc: float) -> str:
    """An online artifact whose manifest records `holdout_auc` at training; its version, for the records."""
    from sklearn.dummy import DummyClassifier  # noqa: PLC0415 - only these tests need an estimator to save

    estimator = DummyClassifier().fit([[0.0]], [1])
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    return store.save(usecase, estimator, trained_as_of=T0, metrics={"auc": holdout_auc}, role="online").version


def test_a_model_whose_holdout_is_far_above_its_shadow_is_held_as_leaky(settings: Settings, usecase: UseCase) -> None:
    """Live is better than batch beyond doubt, but its holdout said 0.99: offline it saw something it cannot see
    live (the 0.88 offline / 0.64 live story). The same scenario with an honest holdout is promoted."""
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_version=_online_model(settings, usecase, 0.99))
    decision, reasons = _decide(settings, usecase)
    assert decision == "hold" and any("suspected leakage or training/serving skew" in r for r in reasons), reasons
    honest = _online_model(settings, usecase, 0.86)  # this scenario's live AUC is about 0.85
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_version=honest)
    decision, reasons = _decide(settings, usecase)
    assert decision == "promote", reasons
    result = compare(with_policy(usecase, min_labeled_samples=1000, max_p99_latency_ms=25), settings)
    live = result.baselines.paths["live"]
    assert live.model_version == honest and live.holdout == 0.86 and live.offline_gap is not None
    assert abs(live.offline_gap - (0.86 - result.accuracy.score("auc").live)) < 1e-12  # type: ignore[union-attr]


def test_a_miscalibrated_model_is_held_even_when_it_ranks_better(settings: Settings, usecase: UseCase) -> None:
    _scenario(settings, batch_noise=1.5, live_noise=0.3, live_shift=2.5)  # same order, probabilities far too high
    decision, reasons = _decide(settings, usecase)
    assert decision == "hold", reasons
    assert any("miscalibrated" in r for r in reasons) and any("trivial baseline" in r for r in reasons), reasons
    result = compare(with_policy(usecase, min_labeled_samples=1000, max_p99_latency_ms=25), settings)
    live, batch = result.baselines.paths["live"], result.baselines.paths["batch"]
    # By hand: the constant at the base rate ȳ has Brier ȳ(1 − ȳ) on the labeled pairs.
    rate = result.accuracy.calibration["live"]
    labels = sum(o * n for o, n in zip(rate.observed, rate.count, strict=True) if o is not None) / sum(rate.count)
    assert live.baseline_loss is not None and abs(live.baseline_loss - labels * (1 - labels)) < 1e-9
    assert live.beats_baseline is False and batch.beats_baseline is True
    assert live.calibration_error is not None and live.calibration_error > 0.2


def test_the_verdict_reads_the_feature_off_on_the_most_sampled_answers() -> None:
    """Shares over the sampled answers: a mismatch, a value missing live, a value missing offline each count once
    (2 + 3 + 1 of 40 for b; 5 of 40 for a, all mismatches; c none)."""

    def feature(name: str, mismatches: int, online: int, offline: int) -> skew.FeatureSkew:
        return skew.FeatureSkew(
            feature=name,
            kind="real-time",
            compared=40 - online - offline,
            mismatches=mismatches,
            mismatch_rate=None,
            missing_online=online,
            missing_offline=offline,
            missing_rate=None,
        )

    measured = skew.Skew(
        available=True, sampled=40, features=[feature("a", 5, 0, 0), feature("b", 2, 3, 1), feature("c", 0, 0, 0)]
    )
    assert skew.evidence(measured) == {
        "feature_skew_share": 6 / 40,
        "feature_skew_feature": "b",
        "feature_skew_sampled": 40,
    }
    assert skew.evidence(skew.Skew(available=False, reason="no offline store")) == {}
    check = next(c for c in decide(POLICY, evidence(**skew.evidence(measured))).checks if c.name == "feature_skew")
    assert check.passed is False and check.value == 6 / 40 and check.limit == POLICY.max_feature_skew
