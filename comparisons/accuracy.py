"""Accuracy of both paths on the same labeled requests, with paired bootstrap intervals of live − batch.

Only requests whose label window has closed and that found a label count (see `comparisons.shadow_rows`), and only
those both paths answered: the comparison is paired. Binary labels: ROC AUC, log loss, Brier score; regression:
MAE, RMSE. ``improvement`` is live − batch turned so that positive means the live path is better (−Δ for losses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from comparisons.bootstrap import HIGHER_IS_BETTER, METRICS, metric, paired_intervals
from comparisons.shadow_rows import Rows
from comparisons.stats import Result

__all__ = ["Accuracy", "Calibration", "HourScores", "Score", "measure"]

FloatArray = npt.NDArray[np.float64]
CURVE_POINTS = 200
CURVE_PAIRS = 200_000  # ROC curves are drawn from at most this many labeled pairs (a fixed random subset)
HOUR_PAIRS = 50_000  # per-hour AUC uses at most this many labeled pairs of the hour
SAMPLE_PAIRS = 1_000_000  # AUC, ROC and calibration use at most this many labeled pairs (hash-chosen)
SEED = 7


class Score(Result):
    """One metric on both paths, live − batch with its interval, and the same turned into an improvement."""

    metric: str
    batch: float | None
    live: float | None
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float
    higher_is_better: bool
    improvement: float | None = None
    improvement_low: float | None = None
    improvement_high: float | None = None
    resamples: int = 0
    pairs_resampled: int = 0


class Calibration(Result):
    """Per bin of predicted value: how many requests, mean prediction and mean label."""

    count: list[int]
    predicted: list[float | None]
    observed: list[float | None]


class HourScores(Result):
    """The metrics of one hour's labeled pairs, per path."""

    hour: datetime
    pairs: int
    batch: dict[str, float | None]
    live: dict[str, float | None]


class Accuracy(Result):
    """Labeled counts, the scores per metric, ROC curves and calibration per path, and per-hour scores."""

    kind: str
    labeled: int
    pairs: int
    unlabeled: int
    pending: int
    label_watermark: datetime | None
    invalid_labels: int = Field(
        default=0,
        description="Label values in the window's label files that cannot be the use case's label (NaN or "
        "±infinity; for a binary label, anything but 0 and 1), or without an event time: left out of the join, so "
        "a request they would have labeled takes the next label of its window, or counts as unlabeled or pending.",
    )
    scores: list[Score]
    roc: dict[str, dict[str, list[float]]]
    calibration: dict[str, Calibration]
    hourly: list[HourScores]

    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.metric == name), None)


def _roc(p: FloatArray, y: FloatArray) -> dict[str, list[float]]:
    positives, negatives = float(y.sum()), float(y.size - y.sum())
    if positives == 0 or negatives == 0:
        return {"fpr": [], "tpr": []}
    order = np.argsort(-p, kind="stable")
    scores, labels = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # the last row of each distinct score
    tpr = np.r_[0.0, np.cumsum(labels)[last] / positives]
    fpr = np.r_[0.0, np.cumsum(1 - labels)[last] / negatives]
    pick = np.unique(np.linspace(0, fpr.size - 1, min(CURVE_POINTS, fpr.size)).astype(int))
    return {"fpr": [float(v) for v in fpr[pick]], "tpr": [float(v) for v in tpr[pick]]}


def _calibration(p: FloatArray, y: FloatArray, edges: FloatArray) -> Calibration:
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, edges.size - 2)
    bins = edges.size - 1
    count = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    return Calibration(
        count=[int(c) for c in count],
        predicted=[float(s / c) if c else None for s, c in zip(sum_p, count, strict=True)],
        observed=[float(s / c) if c else None for s, c in zip(sum_y, count, strict=True)],
    )


def _subset(n: int, cap: int, rng: np.random.Generator) -> npt.NDArray[np.int64] | slice:
    return slice(None) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


# Each an aggregate over the rows its ``{where}`` filter keeps.
_LOSSES = {
    "log_loss": "avg(-({y} * ln(least(greatest({p}, 1e-15), 1 - 1e-15)) "
    "+ (1 - {y}) * ln(1 - least(greatest({p}, 1e-15), 1 - 1e-15)))) {where}",
    "brier": "avg(({p} - {y}) ^ 2) {where}",
    "mae": "avg(abs({p} - {y})) {where}",
    "rmse": "sqrt(avg(({p} - {y}) ^ 2) {where})",
}
_PAIRED = "label_state = 'labeled' AND bp IS NOT NULL AND op IS NOT NULL"


def _totals(
    rows: Rows, names: tuple[str, ...]
) -> tuple[tuple[int, int, int, int], dict[str, tuple[Any, Any]], dict[Any, dict[str, Any]]]:
    """(labeled, pairs, unlabeled, pending) over table ``s``, and the loss metrics on every labeled pair, overall
    and per hour, as (batch, live) per metric (the metrics SQL computes exactly; AUC is not one).

    The losses read the labeled pairs alone (a WHERE, not a FILTER per aggregate: the losses' logarithms were
    then computed for every row and the pairs' condition evaluated once per aggregate, ~0.4 s more CPU per 10M
    rows); the label states are counted in a pass of their own, grouped."""
    losses = [n for n in names if n in _LOSSES]
    columns = "".join(f", {_LOSSES[n].format(p=path, y='label', where='')}" for n in losses for path in ("bp", "op"))
    # Grouped by state, not three FILTERs (each compares every row's state as text): ~0.05 s of CPU against ~0.17.
    states = dict(rows.con.execute("SELECT label_state, count(*) FROM s GROUP BY ALL").fetchall())
    labeled, unlabeled, pending = (states.get(state, 0) for state in ("labeled", "unlabeled", "pending"))
    found = rows.con.execute(f"""
        SELECT GROUPING(hour) AS overall, hour, count(*) {columns}
        FROM s WHERE {_PAIRED} GROUP BY GROUPING SETS ((), (hour))
    """).fetchall()
    pairs = 0
    exact: dict[str, tuple[Any, Any]] = {n: (None, None) for n in losses}
    hourly: dict[Any, dict[str, Any]] = {}
    for overall, hour, count, *values in found:
        scores = {n: (values[2 * i], values[2 * i + 1]) for i, n in enumerate(losses)}
        if overall:
            pairs, exact = int(count), scores
        else:  # only hours with labeled pairs have a row, as a query over them alone gives
            hourly[hour] = scores
    return (int(labeled), pairs, int(unlabeled), int(pending)), exact, hourly


def measure(rows: Rows, confidence: float) -> Accuracy:
    """Scores over the window's labeled pairs; every metric is None when there are none.

    Losses (log loss, Brier, MAE, RMSE) are exact over every labeled pair. AUC, ROC and calibration use at most
    ``SAMPLE_PAIRS`` pairs (a fixed hash-chosen subset; all of them below that), and the intervals are scaled to
    the full count (see `comparisons.bootstrap`).
    """
    con = rows.con
    kind = rows.usecase.label.kind
    names = METRICS[kind]
    (labeled, pairs, unlabeled, pending), exact, exact_hourly = _totals(rows, names)
    sample = "" if pairs <= SAMPLE_PAIRS else f"AND h % {-(-pairs // SAMPLE_PAIRS)} = 0"
    arrays = con.execute(f"SELECT bp, op, label, hour FROM s WHERE {_PAIRED} {sample}").fetchnumpy()
    batch = np.asarray(arrays["bp"], dtype=np.float64)
    live = np.asarray(arrays["op"], dtype=np.float64)
    label = np.asarray(arrays["label"], dtype=np.float64)
    hours = np.asarray(arrays["hour"]).astype("datetime64[us]").astype(np.int64)
    # The metrics SQL does not compute (AUC) on the arrays, once: the interval's estimate and the score share it.
    exact |= {n: (metric(n, batch, label), metric(n, live, label)) for n in names if n not in exact}
    intervals = paired_intervals(names, batch, live, label, confidence=confidence, population=pairs, exact=exact)
    scores = []
    for name in names:
        higher = HIGHER_IS_BETTER[name]
        b, lv = exact[name]
        score = Score(metric=name, batch=b, live=lv, confidence=confidence, higher_is_better=higher)
        found = intervals[name]
        if found is not None:
            sign = 1.0 if higher else -1.0
            low, high = sorted((sign * found.low, sign * found.high))
            score = score.model_copy(
                update={
                    "delta": found.delta,
                    "low": found.low,
                    "high": found.high,
                    "improvement": sign * found.delta,
                    "improvement_low": low,
                    "improvement_high": high,
                    "resamples": found.resamples,
                    "pairs_resampled": found.pairs_resampled,
                }
            )
        scores.append(score)
    rng = np.random.default_rng(SEED)
    pick = _subset(label.size, CURVE_PAIRS, rng)
    if kind == "binary":
        roc = {"batch": _roc(batch[pick], label[pick]), "live": _roc(live[pick], label[pick])}
        edges = np.linspace(0.0, 1.0, 11)
    else:
        roc = {}
        both = np.concatenate((batch, live))
        edges = np.unique(np.quantile(both, np.linspace(0, 1, 11))) if both.size else np.array([0.0, 1.0])
        edges = edges if edges.size > 1 else np.array([edges[0], edges[0] + 1.0])
    calibration = {"batch": _calibration(batch, label, edges), "live": _calibration(live, label, edges)}
    hourly = []
    by_hour = {round(h.timestamp() * 1_000_000): v for h, v in exact_hourly.items()}
    for hour in np.unique(hours):
        members = np.flatnonzero(hours == hour)
        chosen = members[_subset(members.size, HOUR_PAIRS, rng)]
        known = by_hour.get(int(hour), {})
        values = {
            n: known[n]
            if n in known
            else (metric(n, batch[chosen], label[chosen]), metric(n, live[chosen], label[chosen]))
            for n in names
        }
        hourly.append(
            HourScores(
                hour=datetime.fromtimestamp(int(hour) / 1e6, tz=UTC),
                pairs=int(members.size),
                batch={n: values[n][0] for n in names},
                live={n: values[n][1] for n in names},
            )
        )
    return Accuracy(
        kind=kind,
        labeled=labeled,
        pairs=pairs,
        unlabeled=unlabeled,
        pending=pending,
        label_watermark=rows.label_watermark,
        invalid_labels=rows.invalid_labels,
        scores=scores,
        roc=roc,
        calibration=calibration,
        hourly=hourly,
    )
