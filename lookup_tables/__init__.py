"""Versioned lookup tables of batch predictions, published atomically behind a stable view name.

``open_store(settings.sql_url_value, timeout_s=settings.sql_timeout_s)`` picks the backend from the URL:
SQLite (``sqlite:///path``, the embedded default) or PostgreSQL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import sqlalchemy as sa

from lookup_tables.records import Key, LookupRow, PublishResult, RunRecord, Status, VersionInfo, VersionStats
from lookup_tables.spec import KeyColumn, TableSpec
from lookup_tables.store import LookupStore
from migrate.errors import LookupStoreError

__all__ = [
    "Key",
    "KeyColumn",
    "LookupRow",
    "LookupStore",
    "PublishResult",
    "RunRecord",
    "Status",
    "TableSpec",
    "VersionInfo",
    "VersionStats",
    "open_store",
]

_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}


def open_store(url: str, *, timeout_s: float = 10.0) -> LookupStore:
    """The lookup store at ``url``; ``timeout_s`` bounds connecting and waiting for locks."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise LookupStoreError(
            "the lookup store URL is not a database URL", fix="set MIGRATE_SQL_URL to e.g. sqlite:///.migrate/lookup.db"
        ) from exc
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        from lookup_tables.sqlite import SqliteLookupStore

        return SqliteLookupStore(url, timeout_s=timeout_s)
    if driver in _POSTGRES_DRIVERS:
        from lookup_tables.postgres import PostgresLookupStore

        # psycopg 3 is the one PostgreSQL driver installed; a bare postgresql:// would pick psycopg2.
        return PostgresLookupStore(
            str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)), timeout_s=timeout_s
        )
    raise LookupStoreError(
        f"lookup store URL {parsed.render_as_string(hide_password=True)} uses {driver!r}, which is not supported",
        fix="use sqlite:///path/lookup.db or postgresql+psycopg://user@host:5432/db in MIGRATE_SQL_URL",
    )
