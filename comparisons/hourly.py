"""Every headline number per hour of request time, for the report's plots and for anyone charting them.

Per-hour percentiles are DuckDB's ``approx_quantile`` (a t-digest): cheap at any size and close enough for a plot;
the window's own percentiles elsewhere are exact.
"""

from __future__ import annotations

from datetime import datetime

from comparisons.stats import Result
from comparisons.window import Rows

__all__ = ["Hour", "measure"]


class Hour(Result):
    """One hour of requests (UTC, by its start)."""

    hour: datetime
    requests: int
    batch_share: float
    live_share: float
    miss_share: float
    batch_age_p50_s: float | None
    batch_age_p95_s: float | None
    live_age_p50_s: float | None
    live_age_p95_s: float | None
    mean_abs_delta: float | None
    flip_share: float | None
    disagreement_share: float | None
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    live_p50_ms: float | None
    live_p99_ms: float | None
    batch_error_rate: float
    live_error_rate: float
    fallback_rate: float
    labeled: int
    unlabeled: int
    pending: int


def measure(rows: Rows, threshold: float, disagreement_threshold: float) -> list[Hour]:
    """One `Hour` per hour that has requests, in time order."""
    paired = "bp IS NOT NULL AND op IS NOT NULL"
    query = f"""
        SELECT hour, count(*), avg(CAST(bp IS NOT NULL AS DOUBLE)), avg(CAST(op IS NOT NULL AS DOUBLE)),
               avg(CAST(miss AS DOUBLE)),
               approx_quantile(batch_age, 0.5) FILTER (WHERE bp IS NOT NULL),
               approx_quantile(batch_age, 0.95) FILTER (WHERE bp IS NOT NULL),
               approx_quantile(online_age, 0.5) FILTER (WHERE op IS NOT NULL),
               approx_quantile(online_age, 0.95) FILTER (WHERE op IS NOT NULL),
               avg(abs(op - bp)) FILTER (WHERE {paired}),
               avg(CAST((bp >= {threshold}) != (op >= {threshold}) AS DOUBLE)) FILTER (WHERE {paired}),
               avg(CAST(abs(op - bp) > {disagreement_threshold} AS DOUBLE)) FILTER (WHERE {paired}),
               approx_quantile(batch_ms, 0.5), approx_quantile(batch_ms, 0.99),
               approx_quantile(online_ms, 0.5), approx_quantile(online_ms, 0.99),
               avg(CAST(batch_err AS DOUBLE)), avg(CAST(online_err AS DOUBLE)),
               avg(CAST(served = 2 AS DOUBLE)),
               count(*) FILTER (WHERE label_state = 'labeled'), count(*) FILTER (WHERE label_state = 'unlabeled'),
               count(*) FILTER (WHERE label_state = 'pending')
        FROM s GROUP BY hour ORDER BY hour
    """
    names = list(Hour.model_fields)
    return [Hour(**dict(zip(names, values, strict=True))) for values in rows.con.execute(query).fetchall()]
