"""The server backend: PostgreSQL through psycopg 3, with transactional DDL and ``COPY`` for bulk loads.

Writers of one use case serialise on a transaction-scoped advisory lock; readers never take it. The view is
replaced with ``CREATE OR REPLACE VIEW`` in the publishing transaction, so a reader sees the old version or
the new one, never neither.
"""

from __future__ import annotations

import functools
import io
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import IdentifierPreparer

from lookup_tables import catalog
from lookup_tables._pgcopy import binary_rows
from lookup_tables._sql import SqlLookupStore, describe
from lookup_tables.chunk import timestamp_text
from lookup_tables.engine import create_engine_for
from lookup_tables.records import Key, utc
from lookup_tables.spec import TableSpec
from lookup_tables.store import require_rows
from lookup_tables.versions import Versions
from migrate.errors import LookupStoreError, LookupStoreUnavailableError, MigrateError

_COPY_SLICE = 1 << 20
_LOCK_NAMESPACE = "lookup_tables"
_INDEX_MEMORY_MB = 256  # maintenance_work_mem while the key index is built (at least)


@functools.lru_cache(maxsize=256)
def _read_statement(spec: TableSpec, preparer: IdentifierPreparer) -> str:
    """The read query of `spec` for psycopg (one array parameter per key column), built once per table."""
    quote = preparer.quote
    view = catalog.view_table(spec)
    unnest = ", ".join(
        f"CAST(%(k{i})s AS {'BIGINT' if key.type == 'int' else 'TEXT'}[])" for i, key in enumerate(spec.keys)
    )
    aliases = ", ".join(f"k{i}" for i in range(len(spec.keys)))
    join = " AND ".join(f"v.{quote(key.name)} = q.k{i}" for i, key in enumerate(spec.keys))
    selected = ", ".join(f"v.{quote(column.name)}" for column in view.columns)
    return f"SELECT {selected} FROM {quote(spec.name)} AS v JOIN unnest({unnest}) AS q({aliases}) ON {join}"


class PostgresLookupStore(SqlLookupStore):
    """Lookup tables in a PostgreSQL database (``postgresql+psycopg://user@host:5432/db``)."""

    _driver_errors = (psycopg.Error,)

    def __init__(self, url: str, *, timeout_s: float = 10.0, statement_timeout_s: float = 600.0) -> None:
        parsed = sa.make_url(url).set(drivername="postgresql+psycopg")
        self._password = parsed.password if isinstance(parsed.password, str) else None
        self._where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        self._timeout_s = timeout_s
        engine = create_engine_for(parsed, timeout_s=timeout_s, statement_timeout_s=statement_timeout_s)
        super().__init__(engine, parsed.render_as_string(hide_password=True))

    def _lock(self, conn: Connection, name: str) -> None:
        # Keyed by schema too, so two deployments sharing a database do not wait on each other.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:ns), hashtext(current_schema() || '.' || :name))"),
            {"ns": _LOCK_NAMESPACE, "name": name},
        )

    def _load(self, conn: Connection, table: sa.Table, batch: pa.Table, chunk_id: int) -> None:
        batch = batch.append_column("chunk", pa.repeat(pa.scalar(chunk_id, pa.int32()), batch.num_rows))
        binary = binary_rows(batch)
        encoded: bytes | memoryview
        if binary is None:  # text keys or a NULL prediction: CSV
            position = batch.column_names.index("features_as_of")
            batch = batch.set_column(position, "features_as_of", timestamp_text(batch.column(position), zone="+00"))
            buffer = io.BytesIO()
            # Arrow quotes every string, so an empty key stays '' and an absent prediction (empty field) is NULL.
            pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
            encoded, form = buffer.getbuffer(), "csv"
        else:
            encoded, form = binary, "binary"
        data = memoryview(encoded)
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in batch.column_names)
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            sql = f"COPY {quote(table.name)} ({names}) FROM STDIN (FORMAT {form})"
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for start in range(0, len(data), _COPY_SLICE):
                    copy.write(data[start : start + _COPY_SLICE])
        finally:
            data.release()

    def _before_index(self, conn: Connection) -> None:
        # PostgreSQL's default maintenance_work_mem (64 MB) makes the key index of 10M rows sort on disk in one
        # process: 11.1 s measured; with 256 MB it sorts in memory with the parallel workers, 4.0 s. Only for this
        # transaction, and never lowered below what the server was given.
        conn.exec_driver_sql(
            "SELECT set_config('maintenance_work_mem', %(wanted)s, true) FROM pg_settings "
            "WHERE name = 'maintenance_work_mem' AND setting::bigint * 1024 < %(bytes)s",
            {"wanted": f"{_INDEX_MEMORY_MB}MB", "bytes": _INDEX_MEMORY_MB << 20},
        )

    def _after_index(self, conn: Connection, table: sa.Table) -> None:
        # Fresh statistics so lookups on the new table use the key index from the first query.
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table.name)}")

    def _replace_view(self, conn: Connection, spec: TableSpec, select_sql: str) -> None:
        view = conn.dialect.identifier_preparer.quote(spec.name)
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {view} AS {select_sql}")
        except sa.exc.ProgrammingError as exc:
            # The key columns changed since the last publish: the view cannot keep its shape.
            if not isinstance(exc.orig, psycopg.errors.InvalidTableDefinition):
                raise
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
            conn.exec_driver_sql(f"CREATE VIEW {view} AS {select_sql}")

    def _timestamp_literal(self, value: datetime) -> str:
        return f"CAST('{utc(value).isoformat()}' AS TIMESTAMPTZ)"

    def _fetch(self, conn: Connection, spec: TableSpec, keys: list[Key]) -> list[tuple[Any, ...]]:
        """One query whatever the number of keys: the keys travel as one array per key column. The driver's own
        cursor, in the read transaction: SQLAlchemy's rows and type processing cost more than the query."""
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        arrays = {f"k{i}": [key[i] for key in keys] for i in range(len(spec.keys))}
        with driver.cursor() as cursor:
            rows: list[tuple[Any, ...]] = cursor.execute(
                _read_statement(spec, conn.dialect.identifier_preparer), arrays
            ).fetchall()
        return rows

    def export(self, spec: TableSpec, version: int) -> pa.Table:
        table = catalog.version_table(spec, version)
        buffer = io.BytesIO()
        with (
            self._boundary(spec.usecase, f"exporting version {version} of {spec.name}"),
            self._transaction(write=False) as conn,
        ):
            require_rows(Versions(conn, spec).require(version), spec)
            quote = conn.dialect.identifier_preparer.quote
            columns = ", ".join(quote(name) for name in [*spec.key_names, "prediction"])
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            # CSV, not binary: Arrow parses it in parallel, and a NULL prediction is an unquoted empty field.
            sql = f"COPY (SELECT {columns} FROM {quote(table.name)}) TO STDOUT (FORMAT csv)"
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for block in copy:
                    buffer.write(block)
        types = {key.name: pa.int64() if key.type == "int" else pa.string() for key in spec.keys}
        names = [*spec.key_names, "prediction"]
        if not buffer.tell():  # Arrow refuses an empty CSV file
            return pa.schema([*types.items(), ("prediction", pa.float64())]).empty_table()
        buffer.seek(0)
        return pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=names),
            # Keys are NOT NULL, so only the prediction's empty fields are NULLs; an empty key string stays ''.
            convert_options=pacsv.ConvertOptions(
                column_types={**types, "prediction": pa.float64()}, strings_can_be_null=False
            ),
        )

    def _is_missing_relation(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.errors.UndefinedTable)

    def _translate(self, exc: Exception, usecase: str | None, doing: str) -> MigrateError:
        text = describe(exc, self._password)
        where = f"{doing} (use case {usecase})" if usecase else doing
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        state = getattr(orig, "sqlstate", None) or ""
        if isinstance(orig, psycopg.errors.LockNotAvailable):
            return LookupStoreError(
                f"{where}: waited {self._timeout_s:g}s for a lock at {self._where}",
                fix="another writer holds this use case (a batch run?), or a long read holds the view while a "
                "publish waits for it; retry, or raise MIGRATE_SQL_TIMEOUT_S",
            )
        if isinstance(orig, psycopg.errors.QueryCanceled):
            return LookupStoreError(f"{where}: statement timed out at {self._where}: {text}", fix="retry later")
        if state.startswith("28") or isinstance(orig, psycopg.errors.InvalidCatalogName):
            return LookupStoreUnavailableError(
                f"{where}: PostgreSQL at {self._where} refused {self.url}: {text}",
                fix="check the user, password and database in MIGRATE_SQL_URL",
            )
        if isinstance(orig, psycopg.OperationalError) and not state:
            return LookupStoreUnavailableError(
                f"{where}: cannot reach PostgreSQL at {self._where}: {text}",
                fix=f"is PostgreSQL running at {self._where}? set MIGRATE_SQL_URL",
            )
        if isinstance(orig, psycopg.errors.UndefinedTable) and ("lookup_" in text or "batch_runs" in text):
            return LookupStoreError(
                f"{where}: the catalog tables are missing in {self.url}",
                fix="create them: any command that opens the store does (`migrate lookup show <usecase>`), or "
                "LookupStore.ensure_schema()",
            )
        return LookupStoreError(f"{where} failed at {self._where}: {text}", fix="see the PostgreSQL error above")
