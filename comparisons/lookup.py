"""Which lookup-table versions the comparator reads (the active one and the newest older one still kept).

Whole versions come through ``LookupStore.export`` (keys + prediction as Arrow), for the waste count and the
batch-vs-batch noise floor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

import pyarrow as pa

from lookup_tables import LookupStore, TableSpec, VersionInfo, open_store
from migrate.settings import Settings

__all__ = ["Prefetch", "active_and_previous", "likely_versions", "open_lookup"]

log = logging.getLogger(__name__)


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


def likely_versions(timeline: Sequence[VersionInfo]) -> list[int]:
    """The versions a comparison most likely exports: the active one and the newest older one still kept."""
    active = next((v for v in timeline if v.status == "active"), None)
    if active is None:
        return []
    older = [v.version for v in timeline if v.status == "ready" and v.version < active.version]
    return [active.version, *([max(older)] if older else [])]


class Prefetch:
    """Versions exported on a thread of their own while the shadow rows load (the SQL store's read and DuckDB's
    work overlap: DuckDB releases the GIL), handed over by `export`. A version not prefetched, or whose
    prefetch failed, is exported then and there, so its error surfaces where it always did."""

    def __init__(self, settings: Settings, spec: TableSpec, versions: Iterable[int]) -> None:
        self._spec = spec
        self._wanted = tuple(versions)
        self._tables: dict[int, pa.Table] = {}
        self._thread = threading.Thread(
            target=self._run, args=(settings,), name="comparisons-lookup-prefetch", daemon=True
        )
        if self._wanted:
            self._thread.start()

    def _run(self, settings: Settings) -> None:
        # A failure here is only logged: the caller exports the version again and reports the error where it
        # always did (the store unavailable, a version retired meanwhile).
        try:
            store = open_lookup(settings)
        except Exception as exc:  # whatever opening the store raises, raised again by the caller
            log.debug("lookup prefetch of %s could not open the store: %s", self._spec.name, exc)
            return
        try:
            for version in self._wanted:
                self._tables[version] = store.export(self._spec, version)
        except Exception as exc:  # whatever the export raises, raised again by the caller
            log.debug("lookup prefetch of %s stopped: %s", self._spec.name, exc)
        finally:
            store.close()

    def export(self, store: LookupStore, spec: TableSpec, version: int) -> pa.Table:
        """Version `version`'s rows: the prefetched ones (waiting for the prefetch to end), else ``store``'s."""
        if self._thread.is_alive():
            self._thread.join()
        found = self._tables.get(version) if spec == self._spec else None
        return found if found is not None else store.export(spec, version)
