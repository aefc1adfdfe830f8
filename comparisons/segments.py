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
SAMPLE_PAIRS = 1_000_000  # labeled pairs the per-segment metrics read at most (hash-chosen)
_PAIRED = "label_state = 'labeled' AND bp IS NOT NULL AND op IS NOT NULL"
_FLOOR = 1e-4


class Segment(Result):
    """One segment's requests, misses, labeled pairs and the verdict's metric per path."""

    segment: str
    requests: int
    miss_share: float | None
    pairs: int  # labeled pairs read (all of them below SAMPLE_PAIRS overall)
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


def _psi_sql(rows: Rows) -> tuple[float | None, int]:
    """`psi` in SQL over every paired request (only the bins' counts leave DuckDB)."""
    both = "bp IS NOT NULL AND op IS NOT NULL"
    found = rows.con.execute(
        f"SELECT count(*), quantile_cont(bp, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) FROM s WHERE {both}"
    ).fetchall()[0]
    pairs, edges = int(found[0]), sorted(set(found[1] or []))
    if not pairs:
        return None, 0

    # The bin of a value: how many inner edges lie at or below it (as np.searchsorted(..., side="right")), i.e. the
    # first edge above it, the edges being sorted. One CASE stops at that edge (a sum of one comparison per edge
    # cost ~0.5 s more CPU per 10M rows); NaN, above every edge in DuckDB's order, falls in the last bin either way.
    def binned(column: str) -> str:
        branches = " ".join(f"WHEN {column} < {edge!r} THEN {index}" for index, edge in enumerate(edges))
        return f"CASE {branches} ELSE {len(edges)} END" if edges else "0"

    # One pass: the count per pair of bins, each path's counts summed from them (whole numbers: exact).
    counts = rows.con.execute(
        f"SELECT {binned('bp')} AS b, {binned('op')} AS o, count(*) FROM s WHERE {both} GROUP BY ALL"
    ).fetchall()
    totals = {"batch": np.zeros(len(edges) + 1, dtype=np.int64), "live": np.zeros(len(edges) + 1, dtype=np.int64)}
    for batch_bin, live_bin, count in counts:
        totals["batch"][int(batch_bin)] += int(count)
        totals["live"][int(live_bin)] += int(count)
    shares = {path: total / pairs for path, total in totals.items()}
    expected, actual = np.maximum(shares["batch"], _FLOOR), np.maximum(shares["live"], _FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected))), pairs


def measure(rows: Rows, metric_name: str) -> Segments:
    """The breakdown by the declared segment, and the PSI of the paired predictions. Each segment's metric uses
    at most ``SAMPLE_PAIRS`` labeled pairs overall (a fixed hash-chosen subset, as the accuracy's AUC does)."""
    con = rows.con
    drift, paired = _psi_sql(rows)
    column = rows.usecase.cutover_policy.segment
    segments: list[Segment] = []
    if column is not None:
        typed = any(key.name == column and key.type == "int" for key in rows.usecase.entity.keys)
        # An integer key is grouped and joined as it is, and only the segments' names are cast to text (a
        # distinct integer is a distinct name, NULL is '(none)'): casting every row's key cost seconds at scale.
        value = (
            f"k_{column}" if typed else "coalesce(" + (f"k_{column}" if column in rows.keys else "seg") + ", '(none)')"
        )
        # One pass ranks the segments; the labeled pairs come back with the rank as a small integer.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE segment_rank AS
            WITH counted AS (
                SELECT {value} AS v, count(*) AS n, count(*) FILTER (WHERE miss) AS m FROM s GROUP BY v
            ), named AS (SELECT v, coalesce(CAST(v AS VARCHAR), '(none)') AS g, n, m FROM counted)
            SELECT v, g, n, m, least(row_number() OVER (ORDER BY n DESC, g), {SEGMENTS + 1}) AS r FROM named
        """)
        counts = con.execute(f"""
            SELECT r, CASE WHEN r <= {SEGMENTS} THEN any_value(g) ELSE '(others)' END, sum(n), sum(m)
            FROM segment_rank GROUP BY r ORDER BY r
        """).fetchall()
        labeled = int(con.execute(f"SELECT count(*) FROM s WHERE {_PAIRED}").fetchall()[0][0])
        sample = "" if labeled <= SAMPLE_PAIRS else f"AND s.h % {-(-labeled // SAMPLE_PAIRS)} = 0"
        pairs = con.execute(f"""
            SELECT g.r, s.bp, s.op, s.label FROM s JOIN segment_rank g ON {value} IS NOT DISTINCT FROM g.v
            WHERE {_PAIRED} {sample}
        """).fetchnumpy()
        rank = np.asarray(pairs["r"], dtype=np.int64)
        for r, name, requests, misses in counts:
            chosen = rank == int(r)
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
    return Segments(column=column, metric=metric_name, segments=segments, psi=drift, psi_pairs=paired)
