"""Where live wins and where it loses: the comparison per segment (``cutover_policy.segment``: an entity key or a
context value such as the store or the merchant), and how far the live path's prediction distribution moved from
the batch path's (population stability index).

**PSI** over requests both paths answered: ten bins at the deciles of the batch predictions (ties merged),
``Σ (live_i − batch_i) · ln(live_i / batch_i)`` over the bins' shares, each share floored at 1e-4. Read as usual:
below 0.1 the distributions match, 0.1–0.25 they moved, above 0.25 they moved a lot — expected when live sees
what batch cannot, a warning when it should not.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from comparisons.bootstrap import metric
from comparisons.shadow_rows import Rows
from comparisons.stats import Result, share

__all__ = ["SEGMENTS", "Segment", "Segments", "measure", "psi"]

SEGMENTS = 12  # the busiest segments are listed; the rest are summed as one
_FLOOR = 1e-4


class Segment(Result):
    """One segment's requests, misses, labeled pairs and the verdict's metric per path."""

    segment: str
    requests: int
    miss_share: float | None
    pairs: int
    batch: float | None
    live: float | None


class Segments(Result):
    """The breakdown (when a segment is declared) and the PSI of live vs batch predictions."""

    column: str | None
    metric: str
    segments: list[Segment]
    psi: float | None
    psi_pairs: int


def psi(batch: npt.NDArray[np.float64], live: npt.NDArray[np.float64]) -> float | None:
    """Population stability index of `live` against `batch` (see the module docstring); None without data."""
    if batch.size == 0 or live.size == 0:
        return None
    edges = np.unique(np.quantile(batch, np.linspace(0, 1, 11)))
    if edges.size < 2:
        return 0.0 if np.all(live == edges[0]) else None
    inner = edges[1:-1]
    expected = np.bincount(np.searchsorted(inner, batch, side="right"), minlength=inner.size + 1) / batch.size
    actual = np.bincount(np.searchsorted(inner, live, side="right"), minlength=inner.size + 1) / live.size
    expected, actual = np.maximum(expected, _FLOOR), np.maximum(actual, _FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def measure(rows: Rows, metric_name: str) -> Segments:
    """The breakdown by the declared segment, and the PSI of the paired predictions."""
    con = rows.con
    arrays = con.execute("SELECT bp, op FROM s WHERE bp IS NOT NULL AND op IS NOT NULL").fetchnumpy()
    batch, live = (np.asarray(arrays[c], dtype=np.float64) for c in ("bp", "op"))
    column = rows.usecase.cutover_policy.segment
    segments: list[Segment] = []
    if column is not None:
        value = f"CAST(k_{column} AS VARCHAR)" if column in rows.keys else "seg"
        # One pass for the counts, one fetch of the labeled pairs: each segment's metric is computed from them.
        counts = con.execute(f"""
            WITH counted AS (
                SELECT coalesce({value}, '(none)') AS g, count(*) AS n, count(*) FILTER (WHERE miss) AS m
                FROM s GROUP BY g
            ), ranked AS (SELECT *, row_number() OVER (ORDER BY n DESC, g) AS r FROM counted)
            SELECT CASE WHEN r <= {SEGMENTS} THEN g ELSE '(others)' END AS name, sum(n), sum(m)
            FROM ranked GROUP BY name ORDER BY min(r)
        """).fetchall()
        pairs = con.execute(f"""
            SELECT coalesce({value}, '(none)') AS g, bp, op, label FROM s
            WHERE label_state = 'labeled' AND bp IS NOT NULL AND op IS NOT NULL
        """).fetchnumpy()
        names = [name for name, _, _ in counts]
        group = np.asarray(pairs["g"], dtype=object)
        group = np.where(np.isin(group, names), group, "(others)")
        for name, requests, misses in counts:
            chosen = group == name
            label = np.asarray(pairs["label"], dtype=np.float64)[chosen]
            segments.append(
                Segment(
                    segment=str(name),
                    requests=int(requests),
                    miss_share=share(int(misses), int(requests)),
                    pairs=int(label.size),
                    batch=metric(metric_name, np.asarray(pairs["bp"], dtype=np.float64)[chosen], label),
                    live=metric(metric_name, np.asarray(pairs["op"], dtype=np.float64)[chosen], label),
                )
            )
    return Segments(column=column, metric=metric_name, segments=segments, psi=psi(batch, live), psi_pairs=batch.size)
