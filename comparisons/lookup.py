"""Which lookup-table versions the comparator reads (the active one and the newest older one still kept).

Whole versions come through ``LookupStore.export`` (keys + prediction as Arrow), for the waste count and the
batch-vs-batch noise floor.
"""

from __future__ import annotations

from lookup_tables import LookupStore, TableSpec, VersionInfo, open_store
from migrate.settings import Settings

__all__ = ["active_and_previous", "open_lookup"]


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
