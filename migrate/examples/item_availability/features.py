"""The daily batch features of the example, computed in DuckDB from scan events strictly before ``as_of``.

Each scan is counted in the bucket of the day it happened, labelled by that day's end (``as_of``), so a row at
``as_of`` only sees events with ``event_time < as_of``. Counts are summed as integers and divided last, which
keeps the result bit-identical however DuckDB parallelises the sums.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from migrate.examples.skeleton.features import build_daily_table

__all__ = ["FEATURES_TABLE", "build_daily_features"]

FEATURES_TABLE = "item_features_daily"

# After the day ends (``days``): per-day counts, then each listed item's day and week beside its store's and its
# product's week.
_QUERY = """daily AS (
    SELECT store_id, product_id,
           CAST(date_trunc('day', event_time) AS TIMESTAMP) + INTERVAL 1 DAY AS as_of,
           count(*) AS n, count(*) FILTER (WHERE found) AS f
    FROM scan_events
    GROUP BY ALL
), item AS (
    SELECT sp.store_id, sp.product_id, d.as_of,
           coalesce(daily.n, 0) AS n1, coalesce(daily.f, 0) AS f1,
           sum(coalesce(daily.n, 0)) OVER week AS n7, sum(coalesce(daily.f, 0)) OVER week AS f7
    FROM store_products sp
    JOIN days d ON sp.listed_at < d.as_of
    LEFT JOIN daily ON daily.store_id = sp.store_id AND daily.product_id = sp.product_id AND daily.as_of = d.as_of
    WINDOW week AS (PARTITION BY sp.store_id, sp.product_id ORDER BY d.as_of
                    RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW)
), store_week AS (
    SELECT s.store_id, d.as_of,
           sum(coalesce(sd.n, 0)) OVER week AS n7, sum(coalesce(sd.f, 0)) OVER week AS f7
    FROM stores s CROSS JOIN days d
    LEFT JOIN (SELECT store_id, as_of, sum(n) AS n, sum(f) AS f FROM daily GROUP BY ALL) sd
        ON sd.store_id = s.store_id AND sd.as_of = d.as_of
    WINDOW week AS (PARTITION BY s.store_id ORDER BY d.as_of RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW)
), product_week AS (
    SELECT p.product_id, d.as_of,
           sum(coalesce(pd.n, 0)) OVER week AS n7, sum(coalesce(pd.f, 0)) OVER week AS f7
    FROM products p CROSS JOIN days d
    LEFT JOIN (SELECT product_id, as_of, sum(n) AS n, sum(f) AS f FROM daily GROUP BY ALL) pd
        ON pd.product_id = p.product_id AND pd.as_of = d.as_of
    WINDOW week AS (PARTITION BY p.product_id ORDER BY d.as_of RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW)
)
SELECT i.store_id, i.product_id, i.as_of,
       CASE WHEN i.n1 > 0 THEN i.f1 / i.n1 END AS found_rate_1d,
       CAST(i.n1 AS DOUBLE) AS scans_1d,
       CASE WHEN i.n7 > 0 THEN i.f7 / i.n7 END AS found_rate_7d,
       CAST(i.n7 AS DOUBLE) AS scans_7d,
       CASE WHEN sw.n7 > 0 THEN sw.f7 / sw.n7 END AS store_found_rate_7d,
       CASE WHEN pw.n7 > 0 THEN pw.f7 / pw.n7 END AS product_found_rate_7d,
       p.popularity,
       (epoch_us(i.as_of) - epoch_us(p.listed_at)) / 86400e6 AS product_age_days
FROM item i
JOIN store_week sw ON sw.store_id = i.store_id AND sw.as_of = i.as_of
JOIN product_week pw ON pw.product_id = i.product_id AND pw.as_of = i.as_of
JOIN products p ON p.product_id = i.product_id
ORDER BY i.as_of, i.store_id, i.product_id
"""


def build_daily_features(con: duckdb.DuckDBPyConnection, first_as_of: datetime, last_as_of: datetime) -> None:
    """(Re)build ``item_features_daily`` for every day end from `first_as_of` to `last_as_of` (inclusive)."""
    build_daily_table(con, FEATURES_TABLE, _QUERY, first_as_of, last_as_of)
