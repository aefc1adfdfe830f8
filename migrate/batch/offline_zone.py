"""Timestamps without a zone in the offline store, read in the use case's zone (``offline_time_zone``).

Data nobody here wrote often keeps local wall-clock times in plain ``TIMESTAMP`` columns (a flight's scheduled
departure, a shop's opening hours). Every read of the offline store treats a naive timestamp as UTC (the module
docstring of migrate/batch/offline_store.py), so a use case declares the zone those times are in, and `localize`
shadows each of its tables on a connection with a temporary view of the same name whose ``TIMESTAMP`` columns are
read as wall-clock times in that zone and turned into UTC. Every query after it, point-in-time joins, windows,
snapshots and replays alike, then reads UTC through the one code path it always had. ``TIMESTAMPTZ`` columns
carry their own instant and are left alone.

A wall-clock time the zone skips (spring forward) or repeats (fall back) is read as DuckDB's ``timezone()`` reads
it (ICU): the repeated hour as its first occurrence. Data whose rows are in several zones (one per airport) needs
its times converted when it is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from migrate.batch.sql_names import quote as _quote
from migrate.usecase import UseCase

__all__ = ["localize", "table_sql"]


def table_sql(con: duckdb.DuckDBPyConnection, usecase: UseCase, table: str, *, catalog: str) -> str:
    """The SQL that reads `table` of `catalog` (an ATTACHed offline store, or the connection's own database) with
    its naive timestamps in the use case's ``offline_time_zone``: the table itself in UTC or without such a column,
    else a subquery turning them into UTC."""
    zone = usecase.offline_time_zone
    qualified = f"{_quote(catalog)}.main.{_quote(table)}"
    if zone == "UTC":
        return qualified
    naive = [
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = 'main' AND table_name = ? AND data_type = 'TIMESTAMP' "
            "ORDER BY ordinal_position",
            [catalog, table],
        ).fetchall()
    ]
    if not naive:
        return qualified
    converted = ", ".join(f"CAST(timezone('{zone}', {_quote(name)}) AS TIMESTAMP) AS {_quote(name)}" for name in naive)
    return f"(SELECT * REPLACE ({converted}) FROM {qualified})"


def localize(con: duckdb.DuckDBPyConnection, usecase: UseCase, *, also: Sequence[str] = ()) -> None:
    """Read the use case's tables on `con` (a connection to the offline store) with their naive timestamps in
    ``usecase.offline_time_zone``: each table holding a ``TIMESTAMP`` column is shadowed by a temporary view of its
    name (`table_sql`); nothing to do in UTC. A table the store lacks is left to the query that reads it (and to
    its error, which names the table and the fix). `also`: more tables read in the same zone (a table of past
    requests named on the command line). Idempotent: a second call replaces the views."""
    if usecase.offline_time_zone == "UTC":
        return
    catalog = con.execute("SELECT current_database()").fetchall()[0][0]
    for table in dict.fromkeys([*usecase.offline_tables, *also]):
        source = table_sql(con, usecase, table, catalog=catalog)
        if source.startswith("("):
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(table)} AS SELECT * FROM {source}")
