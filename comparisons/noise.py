"""The noise floor: how much the batch path already disagrees with itself from one version to the next.

The two newest kept versions of the lookup table, joined on their keys: mean and 95th percentile of
|Δ|, the share of decisions that flip at the threshold, and the rank correlation. The live path is judged against
this churn, not against zero: its 95th percentile |Δ| becomes the threshold beyond which a live prediction
*disagrees* with batch. With one version only, the floor is unknown and the policy's ``disagreement_threshold``
is used instead.
"""

from __future__ import annotations

import duckdb
import numpy as np

from comparisons.stats import Distribution, Result, quantile_sql, rank_correlation, share

__all__ = ["NoiseFloor", "measure", "unknown"]


class NoiseFloor(Result):
    """Batch vs batch: the previous and the active lookup version on the keys they share."""

    known: bool
    reason: str = ""
    previous_version: int | None = None
    active_version: int | None = None
    pairs: int = 0
    abs_delta: Distribution = Distribution(n=0)
    mean_abs_delta: float | None = None
    flip_share: float | None = None
    rank_correlation: float | None = None


def unknown(reason: str, active_version: int | None = None) -> NoiseFloor:
    """A noise floor that could not be measured, and why."""
    return NoiseFloor(known=False, reason=reason, active_version=active_version)


def measure(
    con: duckdb.DuckDBPyConnection, keys: tuple[str, ...], threshold: float, previous: int, active: int
) -> NoiseFloor:
    """Compare tables ``lookup_previous`` and ``lookup_active`` (keys + ``prediction``) on their shared keys."""
    joined = f"lookup_active a JOIN lookup_previous p USING ({', '.join(keys)})"
    both = "a.prediction IS NOT NULL AND p.prediction IS NOT NULL"
    row = con.execute(f"""
        SELECT count(*), avg(abs(a.prediction - p.prediction)),
               count(*) FILTER (WHERE (a.prediction >= {threshold}) != (p.prediction >= {threshold})),
               {quantile_sql("abs(a.prediction - p.prediction)")}
        FROM {joined} WHERE {both}
    """).fetchall()[0]
    assert row is not None
    pairs, spread = int(row[0]), row[3:]
    if pairs == 0:
        return unknown(f"versions {previous} and {active} share no key", active)
    arrays = con.execute(f"SELECT a.prediction AS a, p.prediction AS p FROM {joined} WHERE {both}").fetchnumpy()
    return NoiseFloor(
        known=True,
        previous_version=previous,
        active_version=active,
        pairs=pairs,
        abs_delta=Distribution.from_row(spread),
        mean_abs_delta=float(row[1]),
        flip_share=share(int(row[2]), pairs),
        rank_correlation=rank_correlation(np.asarray(arrays["a"], np.float64), np.asarray(arrays["p"], np.float64)),
    )
