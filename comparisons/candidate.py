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
from comparisons.comparison import paired_evidence
from comparisons.shadow_rows import Window, load
from comparisons.verdict import Verdict, decide, primary_metric
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
    # The comparison's "batch" side is the live model here, its "live" side the candidate.
    evidence = paired_evidence(
        metric_name,
        acc,
        cover,
        lat,
        checked.paths["live"],
        confidence=policy.confidence,
        fallback_rate=0.0,  # a candidate in shadow serves nobody: nothing falls back
    )
    return CandidateVerdict(
        usecase=usecase.name,
        live_version=rows.model_versions.get("batch"),
        candidate_version=rows.model_versions.get("live"),
        requests=cover.requests,
        verdict=decide(policy, evidence),
    )
