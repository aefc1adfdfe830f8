"""Agreement: how far the live prediction is from the batch one on the same request, and how often it changes
the decision taken at the use case's threshold."""

from __future__ import annotations

import numpy as np

from comparisons.shadow_rows import Rows
from comparisons.stats import Distribution, Result, quantile_sql, rank_correlation, share

__all__ = ["Agreement", "measure", "sample"]

RANK_PAIRS = 1_000_000  # rank correlation on at most this many pairs (a fixed hash-chosen subset)
SCATTER_POINTS = 3_000


class Agreement(Result):
    """|live − batch| over requests both paths answered, rank correlation, decision flips and disagreements."""

    pairs: int
    abs_delta: Distribution
    mean_abs_delta: float | None
    rank_correlation: float | None
    threshold: float
    flips: int
    flip_share: float | None
    disagreement_threshold: float
    disagreement_basis: str
    disagreements: int
    disagreement_share: float | None


def _sample_filter(rows: Rows, total: int, cap: int) -> str:
    # A hash of the request, not a random draw: the same rows are chosen on every run, in any row order.
    if total <= cap:
        return ""
    step = -(-total // cap)
    return f"AND h % {step} = 0"


def measure(rows: Rows, threshold: float, disagreement_threshold: float, basis: str) -> Agreement:
    """Agreement over the window; a request disagrees when |live − batch| > ``disagreement_threshold``."""
    con = rows.con
    row = con.execute(f"""
        SELECT count(*), avg(abs(op - bp)),
               count(*) FILTER (WHERE (bp >= {threshold}) != (op >= {threshold})),
               count(*) FILTER (WHERE abs(op - bp) > {disagreement_threshold}), {quantile_sql("abs(op - bp)")}
        FROM s WHERE bp IS NOT NULL AND op IS NOT NULL
    """).fetchall()[0]
    assert row is not None
    pairs, mean_abs, flips, disagreements, spread = int(row[0]), row[1], int(row[2]), int(row[3]), row[4:]
    arrays = con.execute(
        f"SELECT bp, op FROM s WHERE bp IS NOT NULL AND op IS NOT NULL {_sample_filter(rows, pairs, RANK_PAIRS)}"
    ).fetchnumpy()
    correlation = rank_correlation(np.asarray(arrays["bp"], np.float64), np.asarray(arrays["op"], np.float64))
    return Agreement(
        pairs=pairs,
        abs_delta=Distribution.from_row(spread),
        mean_abs_delta=None if mean_abs is None else float(mean_abs),
        rank_correlation=correlation,
        threshold=threshold,
        flips=flips,
        flip_share=share(flips, pairs),
        disagreement_threshold=disagreement_threshold,
        disagreement_basis=basis,
        disagreements=disagreements,
        disagreement_share=share(disagreements, pairs),
    )


def sample(rows: Rows, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``SCATTER_POINTS`` (batch, live) pairs for the scatter plot, chosen by hash."""
    arrays = rows.con.execute(
        f"SELECT bp, op FROM s WHERE bp IS NOT NULL AND op IS NOT NULL {_sample_filter(rows, pairs, SCATTER_POINTS)}"
        f" LIMIT {SCATTER_POINTS}"
    ).fetchnumpy()
    return np.asarray(arrays["bp"], np.float64), np.asarray(arrays["op"], np.float64)
