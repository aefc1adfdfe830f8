"""The logged shadow requests as a training spine: what the service was really asked, each with its label.

``migrate spine <uc> --since … --until …`` writes them into a table of the offline store that
``training.spine`` names (``table``, ``time_column: request_time``, ``label_column: <label>``): the next model
trains on the requests it will be asked, with the context values they were sent with and the labels the
comparison joined to them, every feature computed as of each request's time (see docs/features.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from comparisons.shadow_rows import Window, logged_requests
from migrate.batch.offline_store import replace_requests
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["SpineExport", "export_spine", "spine_table_name"]


@dataclass(frozen=True)
class SpineExport:
    """What one export wrote, and what it left out (counted, never silently)."""

    table: str
    written: int  # labeled requests of the window now in the table
    unlabeled: int
    pending: int
    duplicates: int
    table_rows: int  # the table's rows after the export (earlier windows included)
    invalid_labels: int = 0  # label values that cannot be the use case's label, left out of the join


def spine_table_name(usecase: UseCase) -> str:
    """The table ``training.spine.table`` names, or ``logged_requests__<uc>`` when the spine is not a table."""
    spine = usecase.training.spine
    return spine.table if spine is not None and spine.table is not None else f"logged_requests__{usecase.name}"


def export_spine(usecase: UseCase, settings: Settings, window: Window, table: str | None = None) -> SpineExport:
    """Write the window's labeled logged requests into the offline store's `table` (default `spine_table_name`),
    replacing that table's rows of the same window. Requests whose label window is still open, or closed without
    a label, are counted and left out: a later export of the same window adds them once labeled."""
    logged = logged_requests(usecase, settings.shadow_dir / usecase.name, settings.labels_dir / usecase.name, window)
    name = table or spine_table_name(usecase)
    rows = replace_requests(
        settings.offline_store_path,
        name,
        logged.table,
        time_column="request_time",
        since=window.since,
        until=window.until,
    )
    return SpineExport(
        name, logged.labeled, logged.unlabeled, logged.pending, logged.duplicates, rows, logged.invalid_labels
    )
