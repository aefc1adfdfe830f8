"""The lookup stores this process has opened: one per URL and timeout, its catalog ensured on first use.

Serving, the comparator, the batch path and the CLI all reach lookup tables through `open_lookup_store`, so a
process holds one connection pool per database however many of them ask.
"""

from __future__ import annotations

import threading

from lookup_tables.engine import SQLITE_DRIVERS, sql_url
from lookup_tables.store import LookupStore
from migrate.settings import Settings

__all__ = ["close_lookup_stores", "open_lookup_store", "open_store"]

_STORES: dict[tuple[str, float], LookupStore] = {}
_LOCK = threading.Lock()


def open_store(url: str, *, timeout_s: float = 10.0) -> LookupStore:
    """A new lookup store at ``url`` (SQLite or PostgreSQL by the URL); ``timeout_s`` bounds connects and locks."""
    parsed = sql_url(url)
    if parsed.drivername in SQLITE_DRIVERS:
        from lookup_tables.sqlite import SqliteLookupStore  # noqa: PLC0415 - only the backend in use is imported

        return SqliteLookupStore(url, timeout_s=timeout_s)
    from lookup_tables.postgres import PostgresLookupStore  # noqa: PLC0415 - only the backend in use is imported

    return PostgresLookupStore(parsed.render_as_string(hide_password=False), timeout_s=timeout_s)


def open_lookup_store(settings: Settings) -> LookupStore:
    """The lookup store the settings point at, with its catalog ensured; one per process and URL."""
    key = (settings.sql_url_value, settings.sql_timeout_s)
    with _LOCK:
        if key not in _STORES:
            if settings.backend == "sqlite":
                settings.ensure_state_dir()
            store = open_store(settings.sql_url_value, timeout_s=settings.sql_timeout_s)
            store.ensure_schema()
            _STORES[key] = store
        return _STORES[key]


def close_lookup_stores() -> None:
    """Close every lookup store this process opened (their pooled connections with them)."""
    with _LOCK:
        while _STORES:
            _, store = _STORES.popitem()
            store.close()
