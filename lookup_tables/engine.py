"""SQLAlchemy engines for the SQL store, one recipe per backend, shared by the lookup tables and the cutover flags.

SQLite: WAL so readers never wait for a writer, ``busy_timeout`` so writers wait (not fail) for the lock, and
Python's ``sqlite3`` transaction handling replaced by SQLAlchemy's documented recipe: the driver's own is
switched off on connect and ``BEGIN`` (``BEGIN IMMEDIATE`` on connections with `write_options`, none on those
with `single_statement_options`) is emitted on "begin", so DDL stays inside the transaction. PostgreSQL: psycopg
3 with connect, lock and statement timeouts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from migrate.errors import LookupStoreError

__all__ = ["create_engine_for", "single_statement_options", "sql_url", "write_options"]

SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_BEGIN_OPTION = "lookup_tables_begin"


def sql_url(url: str, *, what: str = "lookup store") -> sa.URL:
    """``url`` parsed, with PostgreSQL pinned to psycopg 3; an unsupported or malformed URL is a clear error.

    ``what`` names the store in the error message ("lookup store", "cutover flag store").
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise LookupStoreError(
            f"the {what} URL is not a database URL", fix="set MIGRATE_SQL_URL to e.g. sqlite:///.migrate/lookup.db"
        ) from exc
    if parsed.drivername in SQLITE_DRIVERS:
        if not parsed.database or parsed.database == ":memory:":
            raise LookupStoreError(
                f"{what} URL {url!r} names no database file",
                fix="use sqlite:///path/to/lookup.db (an in-memory database is not shared between connections)",
            )
        return parsed
    if parsed.drivername in POSTGRES_DRIVERS:
        # psycopg 3 is the one PostgreSQL driver installed; a bare postgresql:// would pick psycopg2.
        return parsed.set(drivername="postgresql+psycopg")
    raise LookupStoreError(
        f"{what} URL {parsed.render_as_string(hide_password=True)} uses {parsed.drivername!r}, which is not supported",
        fix="use sqlite:///path/lookup.db or postgresql+psycopg://user@host:5432/db in MIGRATE_SQL_URL",
    )


def create_engine_for(
    url: str | sa.URL, *, timeout_s: float = 10.0, statement_timeout_s: float = 600.0, what: str = "lookup store"
) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL); ``timeout_s`` bounds connecting and waiting for locks.

    ``statement_timeout_s`` applies to PostgreSQL only. A SQLite file's directory is created if missing.
    """
    parsed = sql_url(url if isinstance(url, str) else url.render_as_string(hide_password=False), what=what)
    if parsed.drivername in SQLITE_DRIVERS:
        return _sqlite_engine(parsed, timeout_s)
    return _postgres_engine(parsed, timeout_s, statement_timeout_s)


def write_options(engine: Engine | Connection) -> dict[str, Any]:
    """Execution options of a writing connection: SQLite takes its write lock up front (``BEGIN IMMEDIATE``)."""
    return {_BEGIN_OPTION: "IMMEDIATE"} if engine.dialect.name == "sqlite" else {}


def single_statement_options(engine: Engine | Connection) -> dict[str, Any]:
    """Execution options of a connection that runs one read statement: no transaction around it (a statement is
    its own, one snapshot), so no ``BEGIN`` and ``COMMIT`` beside it. On PostgreSQL that is two round trips fewer
    per read; on SQLite two statements fewer."""
    return {_BEGIN_OPTION: "NONE"} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}


def _sqlite_engine(parsed: sa.URL, timeout_s: float) -> Engine:

    assert parsed.database is not None
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": timeout_s, "check_same_thread": False})

    def on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only a power loss can drop the last commit.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def _on_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction upgrading later can fail with "busy"
    # without waiting for busy_timeout.
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "")
    if mode != "NONE":  # NONE: one statement, in the driver's autocommit mode (its own implicit transaction)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def _postgres_engine(parsed: sa.URL, timeout_s: float, statement_timeout_s: float) -> Engine:
    # Joins of the lookup tables are key lookups: with a big key array the planner would hash-join a full scan
    # of the version table, ten times slower than probing its key index. Options given in the URL (e.g. a
    # search_path) are kept and these appended.
    given = parsed.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    settings = (
        f"-c lock_timeout={int(timeout_s * 1000)} -c statement_timeout={int(statement_timeout_s * 1000)} "
        "-c standard_conforming_strings=on -c enable_hashjoin=off -c enable_mergejoin=off"
    )
    connect_args = {"connect_timeout": max(1, math.ceil(timeout_s)), "options": f"{given} {settings}".strip()}
    return sa.create_engine(parsed.difference_update_query(["options"]), connect_args=connect_args, pool_pre_ping=True)
