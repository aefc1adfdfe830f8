"""Whole lookup-table versions as Arrow tables, for the waste count and the batch-vs-batch noise floor.

``LookupStore`` serves rows by key; the comparator needs every key (and prediction) of a version. Until the store
grows an export method, this reads a version's physical table (``TableSpec.version_table``) directly, read-only,
with the store's own engine recipe (timeouts included).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lookup_tables import LookupStore, TableSpec, VersionInfo, open_store
from lookup_tables.engine import create_engine_for
from migrate.errors import LookupStoreError
from migrate.settings import Settings

__all__ = ["active_and_previous", "read_version"]


def read_version(settings: Settings, spec: TableSpec, version: int) -> pa.Table:
    """Keys and ``prediction`` of every row of one version (key columns named as in the use case)."""
    engine = create_engine_for(settings.sql_url_value, timeout_s=settings.sql_timeout_s)
    keys = [k.name for k in spec.keys]
    columns = ", ".join(f'"{name}"' for name in [*keys, "prediction"])
    arrays: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            # The driver's own cursor: SQLAlchemy's row objects cost more than the query at a million rows.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(f'SELECT {columns} FROM "{spec.version_table(version)}"')
                parts: list[list[Any]] = [[] for _ in range(len(keys) + 1)]
                while batch := cursor.fetchmany(100_000):
                    for column, chunk in zip(parts, list(zip(*batch, strict=True)), strict=True):
                        column.extend(chunk)
            finally:
                cursor.close()
    except Exception as exc:  # SQLAlchemy's and the raw driver's (sqlite3, psycopg) errors share no base class
        raise LookupStoreError(
            f"version {version} of lookup table {spec.name} (use case {spec.usecase}) cannot be read: {exc}",
            fix=f"check MIGRATE_SQL_URL and that the version is still kept: `migrate lookup show {spec.usecase}`",
        ) from exc
    finally:
        engine.dispose()
    for key, column in zip(spec.keys, parts, strict=False):
        arrays[key.name] = pa.array(column, pa.int64() if key.type == "int" else pa.string())
    arrays["prediction"] = pa.array(parts[-1], pa.float64())
    return pa.table(arrays)


def active_and_previous(store: LookupStore, spec: TableSpec) -> tuple[VersionInfo | None, VersionInfo | None]:
    """The active version and the newest older one still kept (``ready``), either ``None`` when absent."""
    active = store.active(spec)
    if active is None:
        return None, None
    older = [v for v in store.versions(spec) if v.status == "ready" and v.version < active.version]
    return active, (older[0] if older else None)


def open_lookup(settings: Settings) -> LookupStore:
    """The settings' lookup store, catalog not created (the comparator only reads)."""
    return open_store(settings.sql_url_value, timeout_s=settings.sql_timeout_s)
