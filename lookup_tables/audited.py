"""What the SQL stores of audited state share (the cutover flags, the model aliases): the engine beside the lookup
tables, one writers' lock, and an audit table the database itself keeps append-only.

A store names itself (`what`), its lock (`lock`) and its error class (`error`); its tables call `append_only` on
their audit table. Its reads, writes and error messages stay its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookup_tables.engine import create_engine_for, write_options
from migrate.errors import LookupStoreError, MigrateError
from migrate.settings import Settings

__all__ = ["AuditedSqlStore", "append_only", "aware"]


def append_only(table: sa.Table) -> None:
    """Make the database refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) of ``table``'s rows, whoever connects:
    triggers created with the table, named after it."""
    name = table.name
    said = f"{name} is append-only"
    triggers = {
        "sqlite": [
            f"CREATE TRIGGER {name}_no_{verb.lower()} BEFORE {verb} ON {name} BEGIN SELECT RAISE(ABORT, '{said}'); END"
            for verb in ("UPDATE", "DELETE")
        ],
        "postgresql": [
            f"CREATE OR REPLACE FUNCTION {name}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{said}'; END $$",
            f"CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_append_only()",
            f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_append_only()",
        ],
    }

    @sa.event.listens_for(table, "after_create")
    def _create_triggers(target: sa.Table, connection: Connection, **kw: Any) -> None:
        for sql in triggers.get(connection.dialect.name, []):
            connection.exec_driver_sql(sql)


def aware(value: datetime) -> datetime:
    """A stored time in UTC: SQLite's DATETIME comes back naive (it was written in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditedSqlStore:
    """The engine, the writers' lock and the schema of one audited store."""

    what: ClassVar[str]  # "cutover flag store": named in connection errors
    lock: ClassVar[str]  # the PostgreSQL advisory lock's name: writers of one store serialise on it
    error: ClassVar[type[MigrateError]]  # what connection errors become

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        """``timeout_s`` bounds connecting, waiting for the writers' lock and (PostgreSQL) each statement."""
        try:
            self._engine = create_engine_for(url, timeout_s=timeout_s, statement_timeout_s=timeout_s, what=self.what)
        except LookupStoreError as exc:
            raise self.error(exc.what, fix=exc.fix) from exc
        self._timeout_s = timeout_s
        self._password = self._engine.url.password if isinstance(self._engine.url.password, str) else None
        self.url = self._engine.url.render_as_string(hide_password=True)
        self._schema_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The store at ``settings.sql_url_value`` (beside the lookup tables)."""
        if settings.backend == "sqlite":
            settings.ensure_state_dir()
        return cls(settings.sql_url_value, timeout_s=settings.sql_timeout_s)

    def close(self) -> None:
        self._engine.dispose()

    def ensure_schema(self) -> None:
        """Create the store's tables if missing; each store creates its own."""
        raise NotImplementedError

    def _ensure_schema_once(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding the writers' lock: every change is serialised, so revisions never repeat."""
        with self._engine.connect() as conn:
            conn.execution_options(**write_options(conn))
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Keyed by schema, so deployments sharing a database do not wait on each other.
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:lock), hashtext(current_schema()))"),
                        {"lock": self.lock},
                    )
                yield conn
