"""Checks beyond the paired interval: is each path better than a trivial baseline, is it calibrated, and does its
shadow metric match the holdout metric recorded when its model was trained?

* **Baseline** (binary): the Brier score of a constant at the labeled pairs' base rate, ``ȳ(1 − ȳ)``, against each
  path's Brier score. (Regression): the MAE of each entity's mean label over its *other* labeled pairs (leave one
  out; the overall mean for an entity seen once), against each path's MAE. A path that does not beat it has
  learned nothing the base rate does not know.
* **Calibration** (binary): the expected calibration error, ``Σ n_b |mean prediction_b − mean label_b| / n`` over the
  ten bins of `comparisons.accuracy.Calibration` (whose counts the report shows).
* **Offline vs shadow**: the primary metric of the model version that answered most labeled pairs, as recorded in
  its artifact manifest at training (its holdout), against the same metric in the shadow. A holdout far better than
  the shadow is the signature of leakage (features that saw the label) or of training/serving skew.
"""

from __future__ import annotations

import logging

import numpy as np

from comparisons.accuracy import Accuracy, Calibration
from comparisons.bootstrap import HIGHER_IS_BETTER
from comparisons.shadow_rows import Rows
from comparisons.stats import Result
from migrate.artifact import ArtifactStore, Role
from migrate.errors import ArtifactError
from migrate.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Baselines", "PathCheck", "expected_calibration_error", "measure"]

_PAIRED = "label_state = 'labeled' AND bp IS NOT NULL AND op IS NOT NULL"


class PathCheck(Result):
    """One path against its trivial baseline, its calibration, and its model's holdout."""

    path: str
    loss_metric: str  # brier (binary) or mae (regression)
    loss: float | None
    baseline_loss: float | None
    beats_baseline: bool | None
    calibration_error: float | None = None  # binary only
    model_version: str | None = None
    holdout: float | None = None  # the primary metric at training, from the artifact manifest
    shadow: float | None = None  # the same metric on the labeled pairs
    offline_gap: float | None = None  # how much better the holdout looked (absolute; a share of shadow for losses)


class Baselines(Result):
    """The baseline every path must beat, and each path's checks."""

    baseline: str  # what the trivial baseline is, in words
    paths: dict[str, PathCheck]


def expected_calibration_error(calibration: Calibration) -> float | None:
    """``Σ n_b |predicted_b − observed_b| / n`` over the non-empty bins; None without any."""
    total = sum(calibration.count)
    if not total:
        return None
    gaps = [
        n * abs(p - o)
        for n, p, o in zip(calibration.count, calibration.predicted, calibration.observed, strict=True)
        if n and p is not None and o is not None
    ]
    return float(sum(gaps) / total)


def _gap(metric: str, holdout: float | None, shadow: float | None) -> float | None:
    if holdout is None or shadow is None:
        return None
    if HIGHER_IS_BETTER[metric]:
        return holdout - shadow
    return (shadow - holdout) / shadow if shadow > 0 else None


def _holdout(settings: Settings, usecase: str, role: Role, version: str | None, metric: str) -> float | None:
    if version is None:
        return None
    try:
        infos = ArtifactStore(settings.artifacts_dir, settings.project_dir).list(usecase, role)
    except ArtifactError as exc:  # a corrupt manifest leaves the check unjudged, and says so in the log
        log.warning("holdout metrics of %s unavailable: %s", usecase, exc.what)
        return None
    value = next((info.metrics.get(metric) for info in infos if info.version == version), None)
    return None if value is None or not np.isfinite(value) else float(value)


def measure(rows: Rows, accuracy: Accuracy, settings: Settings, metric: str) -> Baselines:
    """Both paths against the baseline, their calibration, and their holdout metric against the shadow."""
    con, binary = rows.con, rows.usecase.label.kind == "binary"
    if binary:
        loss_metric = "brier"
        found = con.execute(f"SELECT avg(label), count(*) FROM s WHERE {_PAIRED}").fetchall()[0]
        rate = found[0]
        baseline = None if rate is None else float(rate) * (1.0 - float(rate))
        words = "a constant at the base rate of the labeled pairs (its Brier score ȳ(1 − ȳ))"
    else:
        loss_metric = "mae"
        keys = rows.key_columns
        found = con.execute(f"""
            WITH p AS (SELECT {keys}, label FROM s WHERE {_PAIRED}),
                 e AS (SELECT {keys}, sum(label) AS total, count(*) AS n FROM p GROUP BY ALL),
                 overall AS (SELECT avg(label) AS mean FROM p)
            SELECT avg(abs(p.label - CASE WHEN e.n > 1 THEN (e.total - p.label) / (e.n - 1) ELSE overall.mean END))
            FROM p JOIN e USING ({keys}) CROSS JOIN overall
        """).fetchall()[0]
        baseline = None if found[0] is None else float(found[0])
        words = "each entity's mean label over its other labeled requests (the overall mean for one seen once)"
    versions = rows.model_versions
    score, loss = accuracy.score(metric), accuracy.score(loss_metric)
    paths = {}
    for path, role in (("batch", "batch"), ("live", "online")):
        value = None if loss is None else (loss.batch if path == "batch" else loss.live)
        shadow = None if score is None else (score.batch if path == "batch" else score.live)
        version = versions.get(path)
        holdout = _holdout(settings, rows.usecase.name, role, version, metric)  # type: ignore[arg-type]
        paths[path] = PathCheck(
            path=path,
            loss_metric=loss_metric,
            loss=value,
            baseline_loss=baseline,
            beats_baseline=None if value is None or baseline is None else value < baseline,
            calibration_error=expected_calibration_error(accuracy.calibration[path]) if binary else None,
            model_version=version,
            holdout=holdout,
            shadow=shadow,
            offline_gap=_gap(metric, holdout, shadow),
        )
    return Baselines(baseline=words, paths=paths)
