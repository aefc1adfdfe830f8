"""The offline tables a use case declares, with the columns each must hold, and what the offline store lacks of them.

`migrate usecases validate` checks them all at once, so a YAML that validates but names a table or a column the
store does not have is reported before the first training or batch run stumbles on it, each problem with its fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from migrate.batch.offline_store import column_problem
from migrate.errors import OfflineStoreError
from migrate.usecase import UseCase

__all__ = ["DeclaredTable", "declared_tables", "table_problems"]


@dataclass(frozen=True)
class DeclaredTable:
    """One offline table and the columns the use case reads from it, in declared order."""

    table: str
    columns: tuple[str, ...]


def declared_tables(usecase: UseCase) -> list[DeclaredTable]:
    """Every offline table `usecase` reads, each once (a table declared twice holds both sets of columns): the
    entities, the batch features and their joins, each event stream's table, and the spine's table of requests."""
    keys = usecase.entity.key_names
    wanted: dict[str, list[str]] = {}

    def need(table: str, *columns: str | None) -> None:
        wanted.setdefault(table, []).extend(c for c in columns if c is not None)

    source = usecase.entity.source
    need(source.table, *keys, source.created_at_column)
    batch = usecase.batch_features
    need(batch.table, *keys, batch.timestamp_column, *(f.name for f in batch.features))
    for join in batch.joins:
        need(join.table, *join.keys, join.timestamp_column, *(f.name for f in join.features))
    spine = usecase.training.spine
    realtime = usecase.realtime_features
    if realtime is not None:
        fields = list(realtime.events.fields) if realtime.events is not None else []
        # Training reads the label from the events, by its field or its name, unless a later event or the spine's
        # own column gives it (as `training_frame` does).
        by_events = usecase.label.from_event is None and (spine is None or spine.label_column is None)
        label = (usecase.label.event_field or usecase.label.name) if by_events else None
        need(realtime.event_table, *keys, realtime.event_time_column, *fields, label)
        for stream in realtime.streams:
            need(stream.event_table, stream.event_time_column, *stream.events.fields)
    if spine is not None and spine.table is not None:
        need(spine.table, *keys, spine.time_column, spine.id_column, spine.label_column)
    return [DeclaredTable(table, tuple(dict.fromkeys(columns))) for table, columns in wanted.items()]


def table_problems(con: duckdb.DuckDBPyConnection, usecase: UseCase, usecase_file: str) -> list[OfflineStoreError]:
    """Each declared table the offline store lacks, or lacks columns of: every problem, not only the first."""
    found = (column_problem(con, t.table, t.columns, usecase_file=usecase_file) for t in declared_tables(usecase))
    return [problem for problem in found if problem is not None]
