"""The frame of the examples' daily batch features: one query over the day ends from a first to a last ``as_of``."""

from __future__ import annotations

from datetime import datetime

import duckdb

from migrate.batch.offline_store import utc_naive

__all__ = ["build_daily_table"]

# Every day end (midnight UTC, naive) from $first to $last inclusive, as ``days(as_of)``.
_DAY_ENDS = """days AS (
    SELECT CAST(as_of AS TIMESTAMP) AS as_of
    FROM generate_series(CAST($first AS TIMESTAMP), CAST($last AS TIMESTAMP), INTERVAL 1 DAY) AS t(as_of)
)"""


def build_daily_table(
    con: duckdb.DuckDBPyConnection, table: str, query: str, first_as_of: datetime, last_as_of: datetime
) -> None:
    """(Re)build `table` as `query` (the CTEs after ``days`` and the final SELECT) over the day ends from
    `first_as_of` to `last_as_of`."""
    sql = f"CREATE OR REPLACE TABLE {table} AS\nWITH {_DAY_ENDS}, {query}"
    con.execute(sql, {"first": utc_naive(first_as_of), "last": utc_naive(last_as_of)})
