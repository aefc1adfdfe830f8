"""Live model against candidate model: the comparator's measures and verdict over the candidate's shadow answers.

Since `migrate models candidate`, every shadow record carries the candidate's answer beside the live model's
(online/serving/shadow_compare.py). `judge` reads those two columns as the comparison's two sides
(`shadow_rows.load(pair="live_candidate")`) and runs the same machinery as the cutover's comparison: the
paired-bootstrap interval of the primary metric's improvement, coverage, errors and p99 latency, the baseline and
calibration checks, and `verdict.decide` under the use case's cutover policy. ``promote`` means: make the
candidate live; ``rollback``: reject it; ``hold``: keep scoring it.
"""

from __future__ import annotations

from pydantic import BaseModel

from comparisons import accuracy, baselines, coverage, latency
from comparisons.shadow_rows import Window, load
from comparisons.verdict import Evidence, Verdict, decide, primary_metric
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["CandidateVerdict", "judge"]


class CandidateVerdict(BaseModel):
    """The verdict on a candidate, with the two versions compared and the window's size."""

    usecase: str
    live_version: str | None
    candidate_version: str | None
    requests: int
    verdict: Verdict


def judge(usecase: UseCase, settings: Settings, window: Window | None = None) -> CandidateVerdict:
    """The cutover policy's verdict on the candidate against the live model over ``window`` (default: all).

    Raises:
        NoShadowDataError: no shadow record in the window carries a candidate's answer.
    """
    policy = usecase.cutover_policy
    metric_name = primary_metric(policy, usecase.label.kind)
    rows = load(
        usecase,
        settings.shadow_dir / usecase.name,
        settings.labels_dir / usecase.name,
        window or Window(),
        pair="live_candidate",
    )
    try:
        cover = coverage.measure(rows, False, False)
        acc = accuracy.measure(rows, policy.confidence)
        checked = baselines.measure(rows, acc, settings, metric_name)
        lat = latency.measure(rows)
    finally:
        rows.con.close()
    score = acc.score(metric_name)
    assert score is not None
    candidate = checked.paths["live"]  # the comparison's "live" side is the candidate here
    evidence = Evidence(
        requests=cover.requests,
        labeled_pairs=acc.pairs,
        metric=metric_name,
        higher_is_better=score.higher_is_better,
        batch_value=score.batch,
        live_value=score.live,
        improvement=score.improvement,
        improvement_low=score.improvement_low,
        improvement_high=score.improvement_high,
        confidence=policy.confidence,
        live_share=cover.live_share,
        live_error_rate=lat.live.error_rate,
        live_p99_ms=lat.live.latency_ms.p99,
        fallback_rate=0.0,  # a candidate in shadow serves nobody: nothing falls back
        loss_metric=candidate.loss_metric,
        live_loss=candidate.loss,
        baseline_loss=candidate.baseline_loss,
        live_calibration_error=candidate.calibration_error,
        live_holdout=candidate.holdout,
        live_offline_gap=candidate.offline_gap,
    )
    return CandidateVerdict(
        usecase=usecase.name,
        live_version=rows.model_versions.get("batch"),
        candidate_version=rows.model_versions.get("live"),
        requests=cover.requests,
        verdict=decide(policy, evidence),
    )
