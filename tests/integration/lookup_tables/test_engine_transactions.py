"""The engine's transaction recipes on each backend: a single-statement read runs outside a transaction (no
``BEGIN`` / ``COMMIT`` round trips beside it), every other connection inside one, also after such a read."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from lookup_tables.engine import create_engine_for, single_statement_options, write_options

pytestmark = pytest.mark.integration


def _in_transaction(driver: Any) -> bool:
    if isinstance(driver, sqlite3.Connection):
        return driver.in_transaction
    assert isinstance(driver, psycopg.Connection)
    return driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("options", ["default", "single", "write"])
def test_only_a_single_statement_read_runs_outside_a_transaction(sql_url: str, options: str) -> None:
    engine = create_engine_for(sql_url, timeout_s=5.0)
    try:
        for _ in range(2):  # the pooled connection of the first round is checked out again
            with engine.connect() as conn:
                if options == "single":
                    conn.execution_options(**single_statement_options(conn))
                elif options == "write":
                    conn.execution_options(**write_options(conn))
                with conn.begin():
                    assert conn.exec_driver_sql("SELECT 41 + 1").scalar() == 42
                    assert _in_transaction(conn.connection.driver_connection) is (options != "single")
            # Whatever the last checkout asked for, the next plain one is a transaction again.
            with engine.connect() as conn, conn.begin():
                conn.exec_driver_sql("SELECT 1")
                assert _in_transaction(conn.connection.driver_connection)
    finally:
        engine.dispose()
