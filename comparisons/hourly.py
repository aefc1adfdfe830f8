"""Every headline number per hour of request time, for the report's plots and for anyone charting them.

Per-hour percentiles are exact (``quantile_cont``, as everywhere else), each column's two percentiles from one
collection of its values: in DuckDB that is cheaper than the ``approx_quantile`` t-digest it replaced. Live data
ages come from table ``ages`` (a hash-chosen sample beyond ``data_ages.AGE_SAMPLE`` rows, see
`comparisons.data_ages`).
"""

from __future__ import annotations

from datetime import datetime

from comparisons.shadow_rows import Rows
from comparisons.stats import Result

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
    # Served latencies: measured by the serving worker on the request (`Rows.served_latency`); none for the live path
    # at stage shadow, where it answers in the background.
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
    # The aggregates over a subset of the rows (both paths answered; the batch path answered) read it through a
    # WHERE of their own: as FILTERs of the one pass over every row they cost ~0.2 s more CPU per 10M rows. A share
    # is a count over the count of rows (each flag is never NULL), the same quotient as the mean of the flag cast to
    # DOUBLE (its sum is that whole count), without a cast and a floating sum per row: ~0.2 s less CPU per 10M rows.
    query = f"""
        WITH live_age AS (
            SELECT hour, quantile_cont(online_age, [0.5, 0.95]) AS q FROM ages WHERE answered GROUP BY hour
        ), batch_age AS (
            SELECT hour, quantile_cont(batch_age, [0.5, 0.95]) AS q FROM s WHERE bp IS NOT NULL GROUP BY hour
        ), paired AS (
            SELECT hour, avg(abs(op - bp)) AS mean_abs_delta,
                   count_if((bp >= {threshold}) != (op >= {threshold})) / count(*) AS flips,
                   count_if(abs(op - bp) > {disagreement_threshold}) / count(*) AS disagree
            FROM s WHERE bp IS NOT NULL AND op IS NOT NULL GROUP BY hour
        ), by_hour AS (
            SELECT hour, count(*) AS requests, count(bp) / count(*) AS batch_share,
                   count(op) / count(*) AS live_share, count_if(miss) / count(*) AS miss_share,
                   quantile_cont(CASE WHEN {rows.served_latency("batch")} THEN batch_ms END, [0.5, 0.99]) AS batch_ms,
                   quantile_cont(CASE WHEN {rows.served_latency("live")} THEN online_ms END, [0.5, 0.99]) AS live_ms,
                   count_if(batch_err) / count(*) AS batch_err, count_if(online_err) / count(*) AS live_err,
                   count_if(served = 2) / count(*) AS fallback,
                   count(*) FILTER (WHERE label_state = 'labeled') AS labeled,
                   count(*) FILTER (WHERE label_state = 'unlabeled') AS unlabeled,
                   count(*) FILTER (WHERE label_state = 'pending') AS pending
            FROM s GROUP BY hour
        )
        SELECT h.hour, requests, batch_share, live_share, miss_share, b.q[1], b.q[2], a.q[1], a.q[2],
               mean_abs_delta, flips, disagree, batch_ms[1], batch_ms[2], live_ms[1], live_ms[2], batch_err, live_err,
               fallback, labeled, unlabeled, pending
        FROM by_hour h LEFT JOIN live_age a ON h.hour = a.hour LEFT JOIN batch_age b ON h.hour = b.hour
             LEFT JOIN paired p ON h.hour = p.hour
        ORDER BY h.hour
    """
    names = list(Hour.model_fields)
    return [Hour(**dict(zip(names, values, strict=True))) for values in rows.con.execute(query).fetchall()]
