"""Versioned lookup tables of batch predictions, published atomically behind a stable view name.

``open_store(settings.sql_url_value, timeout_s=settings.sql_timeout_s)`` picks the backend from the URL:
SQLite (``sqlite:///path``, the embedded default) or PostgreSQL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

from lookup_tables.engine import SQLITE_DRIVERS, sql_url
from lookup_tables.records import Key, LookupRow, PublishResult, RunRecord, Status, VersionInfo, VersionStats
from lookup_tables.spec import KeyColumn, TableSpec
from lookup_tables.store import LookupStore

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


def open_store(url: str, *, timeout_s: float = 10.0) -> LookupStore:
    """The lookup store at ``url``; ``timeout_s`` bounds connecting and waiting for locks."""
    parsed = sql_url(url)
    if parsed.drivername in SQLITE_DRIVERS:
        from lookup_tables.sqlite import SqliteLookupStore

        return SqliteLookupStore(url, timeout_s=timeout_s)
    from lookup_tables.postgres import PostgresLookupStore

    return PostgresLookupStore(parsed.render_as_string(hide_password=False), timeout_s=timeout_s)
