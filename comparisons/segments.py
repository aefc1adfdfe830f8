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
        counts = con.execute(
            "SELECT coalesce(seg, '(none)') AS g, count(*) AS n FROM s GROUP BY g ORDER BY n DESC, g"
        ).fetchall()
        named = [g for g, _ in counts[:SEGMENTS]]
        for name in [*named, *(["(others)"] if len(counts) > SEGMENTS else [])]:
            where = (
                "coalesce(seg, '(none)') NOT IN (SELECT unnest($named))"
                if name == "(others)"
                else "coalesce(seg, '(none)') = $name"
            )
            params = {"named": named} if name == "(others)" else {"name": name}
            requests, misses = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE miss) FROM s WHERE {where}", params
            ).fetchall()[0]
            pairs = con.execute(
                f"SELECT bp, op, label FROM s WHERE {where} AND label_state = 'labeled' AND bp IS NOT NULL "
                "AND op IS NOT NULL",
                params,
            ).fetchnumpy()
            label = np.asarray(pairs["label"], dtype=np.float64)
            segments.append(
                Segment(
                    segment=name,
                    requests=int(requests),
                    miss_share=share(int(misses), int(requests)),
                    pairs=int(label.size),
                    batch=metric(metric_name, np.asarray(pairs["bp"], dtype=np.float64), label),
                    live=metric(metric_name, np.asarray(pairs["op"], dtype=np.float64), label),
                )
            )
    return Segments(column=column, metric=metric_name, segments=segments, psi=psi(batch, live), psi_pairs=batch.size)
