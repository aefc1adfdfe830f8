"""Versioned lookup tables of batch predictions, published atomically behind a stable view name.

``open_lookup_store(settings)`` opens (once per process) the store the settings point at, the backend picked by
the URL: SQLite (``sqlite:///path``, the embedded default) or PostgreSQL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

from lookup_tables.opened import close_lookup_stores, open_lookup_store, open_store
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
    "close_lookup_stores",
    "open_lookup_store",
    "open_store",
]
