"""The verdict: the use case's cutover policy applied to the comparison's evidence → promote, hold or rollback.

A pure function of the policy and the numbers, so it can be tested on synthetic evidence with known truth.

* **rollback** when a live guardrail is breached: error rate above ``max_error_rate``, p99 latency above
  ``max_p99_latency_ms``, fallback rate above ``max_fallback_rate``, or — with at least ``min_labeled_samples``
  labeled pairs — accuracy *significantly* worse than batch by more than ``max_accuracy_loss`` (the whole
  confidence interval of the improvement lies below ``−max_accuracy_loss``).
  The p99 latency is that of the answers the live path served, measured on the request by the serving worker. At
  stage shadow it serves none (its answers are computed by the shadow comparison, in the background): that
  guardrail is then judged from canary on, by the serving worker's guardrail with the same limit, and neither holds
  nor rolls back the shadow's verdict.
* **hold** when the evidence is not enough yet: fewer labeled pairs than ``min_labeled_samples`` (never promote
  without them), the live path answers fewer requests than ``min_coverage``, the primary metric is undefined, or
  its interval reaches below ``−max_accuracy_loss`` (a loss beyond tolerance cannot be ruled out), or the live
  path's features differ from their offline point-in-time values on more than ``max_feature_skew`` of the sampled
  answers for some feature (whatever the labels say: the live answers are not those of the model that was judged
  offline).
* **promote** otherwise: enough labels, the interval's lower bound of the improvement ≥ ``−max_accuracy_loss``,
  and every guardrail passes.

The verdict recommends; people (or ``auto_promote``) act on it through the cutover flags.
"""

from __future__ import annotations

from typing import Literal

from comparisons.stats import Result
from migrate.errors import PolicyMismatchError
from migrate.usecase import CutoverPolicy

__all__ = ["Check", "Evidence", "Verdict", "decide", "primary_metric"]

Decision = Literal["promote", "hold", "rollback"]


class Evidence(Result):
    """The numbers the verdict reads, copied from the comparison so the verdict can be shown on its own."""

    requests: int
    labeled_pairs: int
    metric: str
    higher_is_better: bool
    batch_value: float | None = None
    live_value: float | None = None
    improvement: float | None = None
    improvement_low: float | None = None
    improvement_high: float | None = None
    confidence: float
    live_share: float | None = None
    live_error_rate: float | None = None
    live_p99_ms: float | None = None  # over the answers the live path served (measured on the request)
    # How many answers the live path served with a latency (None: not counted, evidence from before it was); 0 at
    # stage shadow, where the live path answers only in the background: its p99 latency is judged from canary on.
    live_served: int | None = None
    live_background_p99_ms: float | None = None  # the shadow comparison's calls: background, never a served latency
    fallback_rate: float | None = None
    disagreement_share: float | None = None
    noise_flip_share: float | None = None
    live_flip_share: float | None = None
    backtest: bool = False  # answers from history (`migrate backtest`): no live latency, errors or fallbacks
    loss_metric: str | None = None  # brier (binary) or mae (regression): the live path against the baseline
    live_loss: float | None = None
    baseline_loss: float | None = None
    live_calibration_error: float | None = None
    live_holdout: float | None = None  # the online model's primary metric at training
    live_offline_gap: float | None = None  # how much better that holdout looked than the shadow
    feature_skew_share: float | None = None  # the most skewed feature's share of the sampled live answers
    feature_skew_feature: str | None = None  # that feature
    feature_skew_sampled: int = 0  # the live answers sampled (0: the check could not run, see the report)


class Check(Result):
    """One rule of the policy: the value seen, the limit, and whether it passed (None: could not be judged)."""

    name: str
    passed: bool | None
    value: float | None
    limit: float | None  # None: no limit is known yet (the baseline's loss before any labeled pair)
    detail: str


class Verdict(Result):
    """The decision, its reasons (decisive ones first), every check, and the evidence."""

    decision: Decision
    reasons: list[str]
    checks: list[Check]
    evidence: Evidence
    auto_promote: bool


def primary_metric(policy: CutoverPolicy, kind: str) -> str:
    """The metric the verdict judges on: the policy's, else AUC (binary) or MAE (regression)."""
    allowed = {"binary": ("auc", "log_loss", "brier"), "regression": ("mae", "rmse")}[kind]
    chosen = policy.primary_metric or allowed[0]
    if chosen not in allowed:
        raise PolicyMismatchError(
            f"cutover_policy.primary_metric {chosen!r} does not apply to a {kind} label",
            fix=f"use one of {list(allowed)} in the use case's cutover_policy",
        )
    return chosen


def _fmt(value: float | None, digits: int = 3) -> str:
    """One precision for every metric in a verdict (the report uses the same)."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 10**-digits:
        return f"{value:.1e}"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _guardrails(policy: CutoverPolicy, e: Evidence) -> list[Check]:
    def upper(name: str, value: float | None, limit: float, what: str) -> Check:
        if e.backtest:  # answers from history carry no live errors, latency or fallbacks
            return Check(name=name, passed=None, value=None, limit=limit, detail=f"{what}: judged on live traffic")
        passed = None if value is None else value <= limit
        return Check(name=name, passed=passed, value=value, limit=limit, detail=f"{what} {_fmt(value)} (≤ {limit:g})")

    latency = upper("live_p99_latency_ms", e.live_p99_ms, policy.max_p99_latency_ms, "live p99 latency (ms)")
    if _latency_at_canary(e):
        background = f"{_fmt(e.live_background_p99_ms)} ms" if e.live_background_p99_ms is not None else "n/a"
        latency = latency.model_copy(
            update={
                "detail": f"live p99 latency (ms): the live path served no answer in the window, so none was "
                f"measured; it is judged from canary on, where the serving guardrail rolls back above "
                f"{policy.max_p99_latency_ms:g} ms (the shadow comparison's background calls: p99 {background}, "
                "not a served latency)"
            }
        )
    return [
        upper("live_error_rate", e.live_error_rate, policy.max_error_rate, "live error rate"),
        latency,
        upper("fallback_rate", e.fallback_rate, policy.max_fallback_rate, "fallback rate"),
    ]


def _latency_at_canary(e: Evidence) -> bool:
    """The live path served nothing in a window of live traffic (stage shadow): its answers were computed in the
    background, whose latency says nothing of a served one. Its latency is then judged where it first serves, at
    canary, by the serving worker's guardrail on every request (the same ``max_p99_latency_ms``); the verdict
    neither holds nor rolls back for it."""
    return not e.backtest and e.requests > 0 and e.live_served == 0


def _model_checks(policy: CutoverPolicy, e: Evidence, enough: bool) -> list[Check]:
    """The live model against a trivial baseline, its calibration, and its holdout against its shadow: judged
    only on enough labeled pairs (a failure holds the cutover, with its reason)."""

    def judged(passed: bool | None) -> bool | None:
        return passed if enough else None

    loss = e.loss_metric or "loss"
    baseline = Check(
        name="beats_baseline",
        passed=judged(None if e.live_loss is None or e.baseline_loss is None else e.live_loss < e.baseline_loss),
        value=e.live_loss,
        limit=e.baseline_loss,
        detail=f"the live path is no better than a trivial baseline: {loss} {_fmt(e.live_loss)} vs "
        f"{_fmt(e.baseline_loss)} (must be lower)",
    )
    if baseline.passed is not False:
        baseline = baseline.model_copy(
            update={"detail": f"live {loss} {_fmt(e.live_loss)} vs trivial baseline {_fmt(e.baseline_loss)}"}
        )
    checks = [baseline]
    if e.live_calibration_error is not None or e.loss_metric == "brier":
        ece = e.live_calibration_error
        calibrated = judged(None if ece is None else ece <= policy.max_calibration_error)
        word = "live predictions are miscalibrated: " if calibrated is False else ""
        checks.append(
            Check(
                name="calibration",
                passed=calibrated,
                value=ece,
                limit=policy.max_calibration_error,
                detail=f"{word}expected calibration error {_fmt(ece)} (≤ {policy.max_calibration_error:g})",
            )
        )
    gap = e.live_offline_gap
    consistent = judged(None if gap is None else gap <= policy.max_offline_gap)
    word = "suspected leakage or training/serving skew: " if consistent is False else ""
    checks.append(
        Check(
            name="offline_consistency",
            passed=consistent,
            value=gap,
            limit=policy.max_offline_gap,
            detail=f"{word}the online model's holdout {e.metric} {_fmt(e.live_holdout)} at training vs "
            f"{_fmt(e.live_value)} in shadow, gap {_fmt(gap)} (≤ max_offline_gap {policy.max_offline_gap:g})",
        )
    )
    return checks


def _feature_skew(policy: CutoverPolicy, e: Evidence) -> Check:
    """The live features against their offline point-in-time values (comparisons/skew.py): judged without labels,
    on every sampled answer; not judged when the offline values could not be read (the report says why)."""
    limit = policy.max_feature_skew
    if e.feature_skew_share is None:
        return Check(
            name="feature_skew", passed=None, value=None, limit=limit, detail="feature skew not measured (see report)"
        )
    passed = e.feature_skew_share <= limit
    word = "" if passed else "live features differ from their offline point-in-time values: "
    sampled = f"{e.feature_skew_sampled:,} sampled live answers (≤ max_feature_skew {limit:.0%})"
    if e.feature_skew_feature is None:
        detail = f"no feature differs or is missing on one side in any of {sampled}"
    else:
        share = _pct(e.feature_skew_share)
        detail = f"{word}{e.feature_skew_feature} differs or is missing on one side in {share} of {sampled}"
    return Check(name="feature_skew", passed=passed, value=e.feature_skew_share, limit=limit, detail=detail)


def decide(policy: CutoverPolicy, e: Evidence) -> Verdict:
    """Apply ``policy`` to the evidence ``e`` (see the module docstring for the rules)."""
    tolerance = -policy.max_accuracy_loss
    level = f"{e.confidence:.0%}"
    checks = _guardrails(policy, e)
    enough = e.labeled_pairs >= policy.min_labeled_samples
    checks.append(
        Check(
            name="labeled_samples",
            passed=enough,
            value=float(e.labeled_pairs),
            limit=float(policy.min_labeled_samples),
            detail=f"{e.labeled_pairs:,} labeled pairs (≥ {policy.min_labeled_samples:,})",
        )
    )
    coverage_ok = None if e.live_share is None else e.live_share >= policy.min_coverage
    checks.append(
        Check(
            name="live_coverage",
            passed=coverage_ok,
            value=e.live_share,
            limit=policy.min_coverage,
            detail=f"live path answered {_pct(e.live_share)} of requests (≥ {policy.min_coverage:.0%})",
        )
    )
    interval = f"[{_fmt(e.improvement_low)}, {_fmt(e.improvement_high)}]"
    accuracy_ok = None if e.improvement_low is None else e.improvement_low >= tolerance
    checks.append(
        Check(
            name="accuracy",
            passed=accuracy_ok,
            value=e.improvement_low,
            limit=tolerance,
            detail=f"{e.metric}: live {_fmt(e.live_value)} vs batch {_fmt(e.batch_value)}, improvement "
            f"{_fmt(e.improvement)} with {level} interval {interval} (lower bound ≥ {tolerance:g})",
        )
    )
    checks += _model_checks(policy, e, enough)
    checks.append(_feature_skew(policy, e))
    rollback: list[str] = [f"guardrail breached: {c.detail}" for c in checks[:3] if c.passed is False]
    if enough and e.improvement_high is not None and e.improvement_high < tolerance:
        rollback.append(
            f"live is significantly worse on {e.metric}: the whole {level} interval of the improvement {interval} "
            f"lies below −max_accuracy_loss = {tolerance:g}"
        )
    if rollback:
        return Verdict(decision="rollback", reasons=rollback, checks=checks, evidence=e, auto_promote=False)
    hold: list[str] = []
    if e.requests == 0:
        hold.append("no shadow traffic in the window")
    if not enough:
        hold.append(
            f"too few labeled samples: {e.labeled_pairs:,} < min_labeled_samples {policy.min_labeled_samples:,}; "
            "never promote without them"
        )
    if not e.backtest:  # a backtest has no live traffic: its guardrails are judged in the live shadow
        deferred = {"live_p99_latency_ms"} if _latency_at_canary(e) else set()
        hold += [
            f"guardrail not measurable: {c.detail}" for c in checks[:3] if c.passed is None and c.name not in deferred
        ]
    if coverage_ok is False:
        hold.append(f"live coverage too low: {checks[4].detail}")
    elif coverage_ok is None:
        hold.append("live coverage unknown: no request in the window")
    if enough and accuracy_ok is None:
        hold.append(f"{e.metric} is undefined on the labeled pairs (one class only?)")
    elif enough and accuracy_ok is False:
        hold.append(
            f"a loss beyond tolerance cannot be ruled out: the {level} interval of the {e.metric} improvement "
            f"{interval} reaches below −max_accuracy_loss = {tolerance:g}"
        )
    for check in checks[6:]:
        if check.passed is False:
            hold.append(check.detail)
    if hold:
        return Verdict(decision="hold", reasons=hold, checks=checks, evidence=e, auto_promote=False)
    reasons = [
        f"{e.metric} improvement {_fmt(e.improvement)}, {level} interval {interval}, lower bound ≥ {tolerance:g} "
        f"on {e.labeled_pairs:,} labeled pairs",
    ]
    if e.backtest:
        reasons.append(
            "a backtest from history: errors, latency and fallbacks are judged on live traffic — confirm with a "
            "short live shadow before moving the flag"
        )
        return Verdict(decision="promote", reasons=reasons, checks=checks, evidence=e, auto_promote=False)
    if _latency_at_canary(e):
        reasons.append(
            "every guardrail measured passes: "
            + "; ".join(c.detail for c in checks[:3] if c.passed is not None)
            + f"; the live p99 latency is judged at canary by the serving guardrail (≤ {policy.max_p99_latency_ms:g} "
            "ms): the live path served nothing in the window"
        )
    else:
        reasons.append("every guardrail passes: " + "; ".join(c.detail for c in checks[:3]))
    return Verdict(decision="promote", reasons=reasons, checks=checks, evidence=e, auto_promote=policy.auto_promote)
