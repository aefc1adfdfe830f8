"""Staleness: how old the data behind each served prediction was, batch path vs live path, on the same requests.

Batch: ``batch_data_age_s`` (request time − the lookup row's ``features_as_of``), over requests the lookup table
answered. Live: the age of the *oldest* feature the online model used (``max`` of ``online_feature_ages_s``), over
requests the live path answered with at least one stored feature. Beyond ``shadow_rows.AGE_SAMPLE`` requests the live
ages come from a hash-chosen 1-in-``live_sampled_every`` subset (parsing their JSON dominates the load otherwise).
"""

from __future__ import annotations

from comparisons.shadow_rows import Rows
from comparisons.stats import Distribution, Histogram, Result, quantile_sql

__all__ = ["AGE_EDGES_S", "Staleness", "measure"]

# Log-spaced bins from 1 s to ~32 days, four per decade; ages below 1 s fall in the first, above in the last.
AGE_EDGES_S = [10 ** (i / 4) for i in range(0, 26)]


class Staleness(Result):
    """Data age in seconds per path, and its histogram (for the report's plot)."""

    batch: Distribution
    live: Distribution
    live_sampled_every: int = 1
    histogram: Histogram


def _bucket(column: str) -> str:
    last = len(AGE_EDGES_S) - 2
    return f"least(greatest(CAST(floor(log10(greatest({column}, 1.0)) * 4) AS INTEGER), 0), {last})"


def measure(rows: Rows) -> Staleness:
    """Staleness of both paths over the window's requests."""
    con = rows.con
    batch = con.execute(f"SELECT {quantile_sql('batch_age')} FROM s WHERE bp IS NOT NULL").fetchall()[0]
    live = con.execute(f"SELECT {quantile_sql('online_age')} FROM ages WHERE answered").fetchall()[0]
    bins = len(AGE_EDGES_S) - 1
    counts = {"batch": [0] * bins, "live": [0] * bins}
    query = f"""
        SELECT 'batch', {_bucket("batch_age")} AS b, count(*) FROM s WHERE bp IS NOT NULL AND batch_age IS NOT NULL
        GROUP BY b
        UNION ALL
        SELECT 'live', {_bucket("online_age")} AS b, count(*) FROM ages WHERE answered AND online_age IS NOT NULL
        GROUP BY b
    """
    for path, bucket, count in con.execute(query).fetchall():
        counts[path][int(bucket)] = int(count)
    edges = [float(e) for e in AGE_EDGES_S]
    return Staleness(
        batch=Distribution.from_row(batch),
        live=Distribution.from_row(live),
        live_sampled_every=rows.age_every,
        histogram=Histogram(edges=edges, counts=counts),
    )
