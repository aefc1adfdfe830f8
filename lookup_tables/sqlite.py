"""The embedded backend: one SQLite file in WAL mode, so readers never wait for the batch writer.

Python's ``sqlite3`` driver does not open transactions for DDL, which would autocommit the view swap apart
from the catalog update. SQLAlchemy's documented recipe is used instead: the driver's own transaction
handling is switched off on connect and ``BEGIN`` (``BEGIN IMMEDIATE`` for writers) is emitted on "begin".
"""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import IdentifierPreparer

from lookup_tables import catalog
from lookup_tables._sql import SqlLookupStore, describe
from lookup_tables.chunk import timestamp_text
from lookup_tables.engine import create_engine_for, sql_url, write_options
from lookup_tables.records import Key, utc
from lookup_tables.spec import TableSpec
from lookup_tables.store import require_rows
from lookup_tables.versions import Versions
from migrate.errors import LookupStoreError, LookupStoreUnavailableError, MigrateError


@functools.lru_cache(maxsize=256)
def _read_statement(spec: TableSpec, preparer: IdentifierPreparer) -> str:
    """The read query of `spec` for the driver (one ``?``: the keys as a JSON array), built once per table and
    dialect: building it took ~0.25 ms per read."""
    quote = preparer.quote
    view = catalog.view_table(spec)
    join = " AND ".join(f"v.{quote(name)} = json_extract(q.value, '$[{i}]')" for i, name in enumerate(spec.key_names))
    selected = ", ".join(f"v.{quote(column.name)}" for column in view.columns)
    # CROSS JOIN keeps the key list as the outer loop, so each key is one probe of the unique index.
    return f"SELECT {selected} FROM json_each(?) AS q CROSS JOIN {quote(spec.name)} AS v ON {join}"


_ONE_BATCH = 2**30  # rows per batch: the driver refuses 2**31 - 1; a version holds fewer rows than this


def _read_arrow(path: Path, sql: str, timeout_s: float) -> pa.Table:
    """The rows of ``sql`` as Arrow, read by the ADBC SQLite driver on a read-only connection of its own.

    Whole versions go this way (`SqliteLookupStore.export`): the driver builds the Arrow columns in C, where
    Python's ``sqlite3`` made a tuple per row (1,000,000 rows: ~0.65 s of CPU holding the GIL, ~0.19 s here;
    docs/comparisons.md). The driver infers a column's type from the values of a batch, and a batch after the
    first that disagrees stops the read ("expected INT64 but got DOUBLE": the first batch's predictions all NULL).
    One batch for every row leaves no later batch to disagree. In WAL mode the read waits for no writer; the busy
    timeout covers the moments it still could (a checkpoint resetting the log).
    """
    import adbc_driver_sqlite  # noqa: PLC0415 - start-up cost: ADBC only for whole-version reads
    import adbc_driver_sqlite.dbapi  # noqa: PLC0415 - start-up cost: ADBC only for whole-version reads

    with adbc_driver_sqlite.dbapi.connect(f"{path.resolve().as_uri()}?mode=ro") as connection:
        cursor = connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_s * 1000))}")
            cursor.fetchall()
            cursor.adbc_statement.set_options(**{adbc_driver_sqlite.StatementOptions.BATCH_ROWS.value: str(_ONE_BATCH)})
            cursor.execute(sql)
            return cursor.fetch_arrow_table()
        finally:
            cursor.close()


class SqliteLookupStore(SqlLookupStore):
    """Lookup tables in one SQLite file; the default when no ``MIGRATE_SQL_URL`` is set."""

    _driver_errors = (sqlite3.Error, adbc_driver_manager.Error)

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        parsed = sql_url(url)
        assert parsed.database is not None
        self._path = Path(parsed.database)
        self._timeout_s = timeout_s
        engine = create_engine_for(parsed, timeout_s=timeout_s)
        super().__init__(engine, parsed.render_as_string(hide_password=True))

    def _write_options(self) -> dict[str, Any]:
        return write_options(self._engine)

    def _lock(self, conn: Connection, name: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's single write lock."""

    def _load(self, conn: Connection, table: sa.Table, batch: pa.Table, chunk_id: int) -> None:
        columns: list[list[Any]] = []
        for name in batch.column_names:
            column = batch.column(name)
            if name == "features_as_of":
                # The text form SQLAlchemy's SQLite DATETIME reads back: naive UTC, microseconds.
                column = timestamp_text(column)
            # Null predictions become NaN here, which sqlite3 stores as NULL (NaN itself was refused earlier).
            columns.append(column.to_numpy(zero_copy_only=False).tolist())
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in [*batch.column_names, "chunk"])
        marks = ", ".join("?" * (batch.num_columns + 1))
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        cursor = driver.cursor()
        try:
            cursor.executemany(
                f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})", zip(*columns, repeat(chunk_id))
            )
        finally:
            cursor.close()

    def _replace_view(self, conn: Connection, spec: TableSpec, select_sql: str) -> None:
        view = conn.dialect.identifier_preparer.quote(spec.name)
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
        conn.exec_driver_sql(f"CREATE VIEW {view} AS {select_sql}")

    def _timestamp_literal(self, value: datetime) -> str:
        return "'" + utc(value).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"

    def _fetch(self, conn: Connection, spec: TableSpec, keys: list[Key]) -> list[tuple[Any, ...]]:
        """One query whatever the number of keys: they travel as one JSON array, probed key by key. The driver's
        own cursor, in the read transaction: through SQLAlchemy's rows and type processing a read of 100 keys took
        ~0.96 ms, through the driver's (times read by `_time`) ~0.62 ms, of which the query ~0.29 ms."""
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        rows: list[tuple[Any, ...]] = driver.execute(
            _read_statement(spec, conn.dialect.identifier_preparer), (json.dumps(keys),)
        ).fetchall()
        return rows

    def export(self, spec: TableSpec, version: int) -> pa.Table:
        table = catalog.version_table(spec, version)
        with (
            self._boundary(spec.usecase, f"exporting version {version} of {spec.name}"),
            self._transaction(write=False) as conn,
        ):
            require_rows(Versions(conn, spec).require(version), spec)
            quote = conn.dialect.identifier_preparer.quote
            columns = ", ".join(quote(name) for name in [*spec.key_names, "prediction"])
            rows = _read_arrow(self._path, f"SELECT {columns} FROM {quote(table.name)}", self._timeout_s)
        fields = [(key.name, pa.int64() if key.type == "int" else pa.string()) for key in spec.keys]
        return rows.rename_columns([*spec.key_names, "prediction"]).cast(
            pa.schema([*fields, ("prediction", pa.float64())])
        )

    def _is_missing_relation(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)

    def _translate(self, exc: Exception, usecase: str | None, doing: str) -> MigrateError:
        text = describe(exc)
        where = f"{doing} (use case {usecase})" if usecase else doing
        if "database is locked" in text or "database is busy" in text:
            return LookupStoreError(
                f"{where}: the SQLite file {self._path} stayed locked for {self._timeout_s:g}s",
                fix="another process is writing to it (a batch run?); retry, or raise MIGRATE_SQL_TIMEOUT_S",
            )
        if "unable to open database" in text or "readonly database" in text or "disk I/O error" in text:
            return LookupStoreUnavailableError(
                f"{where}: cannot use the SQLite file {self._path}: {text}",
                fix="check the directory exists and is writable, or set MIGRATE_STATE_DIR / MIGRATE_SQL_URL",
            )
        if "no such table: lookup_" in text or "no such table: batch_runs" in text:
            return LookupStoreError(
                f"{where}: the catalog tables are missing in {self._path}",
                fix="create them: any command that opens the store does (`migrate lookup show <usecase>`), or "
                "LookupStore.ensure_schema()",
            )
        return LookupStoreError(f"{where} failed in {self._path}: {text}", fix="see the SQLite error above")
