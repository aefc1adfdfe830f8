"""Terminal views of lookup tables: versions and sample rows, read the way applications read them."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lookup_tables import TableSpec, open_lookup_store
from migrate.settings import Settings
from migrate.usecase import UseCase


def print_lookup(console: Console, usecase: UseCase, settings: Settings, sample_rows: int = 5) -> None:
    """Print the catalog of versions and a few rows of the active version."""
    store = open_lookup_store(settings)
    spec = TableSpec.for_usecase(usecase, settings)
    versions = Table(title=f"lookup table {usecase.lookup_table.name} — versions", title_justify="left")
    for column in ("version", "status", "data interval end", "model", "rows", "checksum", "published"):
        versions.add_column(column)
    for info in store.versions(spec):
        style = "bold green" if info.status == "active" else ("dim" if info.status == "retired" else "")
        versions.add_row(
            str(info.version),
            info.status,
            f"{info.data_interval_end:%Y-%m-%d %H:%M}Z",
            info.model_version,
            f"{info.row_count:,}" if info.row_count is not None else "-",
            (info.checksum or "-")[:12],
            f"{info.published_at:%Y-%m-%d %H:%M:%S}Z" if info.published_at else "-",
            style=style,
        )
    console.print(versions)
    rows = store.sample(spec, sample_rows)
    if not rows:
        console.print("[yellow]no active version yet[/]")
        return
    sample = Table(title=f"{usecase.lookup_table.name} — {len(rows)} rows of the active version", title_justify="left")
    for column in [*usecase.entity.key_names, "prediction", "features_as_of", "model_version", "scored_at", "run_id"]:
        sample.add_column(column)
    for row in rows:
        sample.add_row(
            *[str(k) for k in row.key],
            f"{row.prediction:.4f}",
            f"{row.features_as_of:%Y-%m-%d %H:%M}Z",
            row.model_version,
            f"{row.scored_at:%Y-%m-%d %H:%M:%S}Z",
            row.run_id,
        )
    console.print(sample)
