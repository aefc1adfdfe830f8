"""The daily batch features of the delivery example, computed in DuckDB from deliveries strictly before ``as_of``.

One row per restaurant per day end (``as_of``) for every restaurant that existed by then: the last day's and the
last week's delivery times (mean, 90th percentile), order counts, preparation time and distance. A restaurant
without deliveries in a window gets NULL means (the trees route them as missing) and a zero count. Means are
rounded to 4 decimals so that the order DuckDB sums in cannot change a stored value.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from migrate.examples.skeleton.features import build_daily_table

__all__ = ["FEATURES_TABLE", "build_daily_features"]

FEATURES_TABLE = "eta_features_daily"

# After the day ends (``days``): one row per restaurant and day end, over that restaurant's last week of deliveries.
_QUERY = """pairs AS (
    SELECT r.restaurant_id, d.as_of FROM restaurants r JOIN days d ON r.created_at < d.as_of
)
SELECT p.restaurant_id, p.as_of,
       round(avg(e.delivery_minutes) FILTER (WHERE e.event_time >= p.as_of - INTERVAL 1 DAY), 4) AS mean_delivery_1d,
       round(quantile_cont(e.delivery_minutes, 0.9) FILTER (WHERE e.event_time >= p.as_of - INTERVAL 1 DAY), 4)
           AS p90_delivery_1d,
       round(avg(e.delivery_minutes), 4) AS mean_delivery_7d,
       round(quantile_cont(e.delivery_minutes, 0.9), 4) AS p90_delivery_7d,
       CAST(count(e.event_id) FILTER (WHERE e.event_time >= p.as_of - INTERVAL 1 DAY) AS DOUBLE) AS orders_1d,
       CAST(count(e.event_id) AS DOUBLE) AS orders_7d,
       round(avg(e.prep_minutes), 4) AS mean_prep_7d,
       round(avg(e.distance_km), 4) AS mean_distance_7d
FROM pairs p
LEFT JOIN delivery_events e
    ON e.restaurant_id = p.restaurant_id AND e.event_time < p.as_of AND e.event_time >= p.as_of - INTERVAL 7 DAY
GROUP BY p.restaurant_id, p.as_of
ORDER BY p.as_of, p.restaurant_id
"""


def build_daily_features(con: duckdb.DuckDBPyConnection, first_as_of: datetime, last_as_of: datetime) -> None:
    """(Re)build ``eta_features_daily`` for every day end from `first_as_of` to `last_as_of` (inclusive)."""
    build_daily_table(con, FEATURES_TABLE, _QUERY, first_as_of, last_as_of)
