"""The catalog: which versions exist, which one is active, which runs happened; and each version's table shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Row

from lookup_tables.records import RunRecord, Status, VersionInfo, utc
from lookup_tables.spec import TableSpec


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """TIMESTAMPTZ on PostgreSQL, naive-UTC text on SQLite; always aware UTC in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        # SQLite has no zone type; storing naive UTC keeps text comparison and ordering correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

versions = sa.Table(
    "lookup_versions",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("table_name", sa.String(63), nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("data_interval_start", UtcDateTime, nullable=False),
    sa.Column("data_interval_end", UtcDateTime, nullable=False),
    sa.Column("row_count", sa.BigInteger),
    sa.Column("checksum", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("published_at", UtcDateTime),
    sa.Column("scored_at", UtcDateTime),
    sa.Index("lookup_versions_status", "usecase", "status"),
)

active = sa.Table(
    "lookup_active",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("switched_at", UtcDateTime, nullable=False),
)

# Which chunks a loading version holds, so a first write skips a DELETE that would scan the whole table.
chunks = sa.Table(
    "lookup_chunks",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
)

# Keyed by (usecase, run_id): Airflow reuses run ids such as "scheduled__2024-01-01T00:00:00+00:00" across DAGs.
runs = sa.Table(
    "batch_runs",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("data_interval_start", UtcDateTime, nullable=False),
    sa.Column("data_interval_end", UtcDateTime, nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.Text),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Index("batch_runs_recent", "usecase", "started_at"),
)


def version_table(spec: TableSpec, version: int) -> sa.Table:
    """The physical table of one version: key columns, prediction, features_as_of and the chunk it came in."""
    key_types: dict[str, Any] = {"int": sa.BigInteger, "str": sa.Text}
    columns = [sa.Column(key.name, key_types[key.type], nullable=False) for key in spec.keys]
    return sa.Table(
        spec.version_table(version),
        sa.MetaData(),
        *columns,
        sa.Column("prediction", sa.Double),
        sa.Column("features_as_of", UtcDateTime, nullable=False),
        sa.Column("chunk", sa.Integer, nullable=False),
    )


def view_table(spec: TableSpec) -> sa.TableClause:
    """The view applications read, as a selectable with the types results are converted with."""
    key_types: dict[str, Any] = {"int": sa.BigInteger, "str": sa.Text}
    return sa.table(
        spec.name,
        *[sa.column(key.name, key_types[key.type]) for key in spec.keys],
        sa.column("prediction", sa.Double),
        sa.column("features_as_of", UtcDateTime),
        sa.column("model_version", sa.Text),
        sa.column("scored_at", UtcDateTime),
        sa.column("run_id", sa.Text),
        sa.column("version", sa.Integer),
    )


def to_version(row: Row[Any]) -> VersionInfo:
    """A ``lookup_versions`` row as a ``VersionInfo``."""
    m = row._mapping
    return VersionInfo(
        usecase=m["usecase"],
        version=m["version"],
        table=m["table_name"],
        run_id=m["run_id"],
        model_version=m["model_version"],
        data_interval_start=m["data_interval_start"],
        data_interval_end=m["data_interval_end"],
        row_count=m["row_count"],
        checksum=m["checksum"],
        status=cast(Status, m["status"]),
        created_at=m["created_at"],
        published_at=m["published_at"],
        scored_at=m["scored_at"],
    )


def to_run(row: Row[Any]) -> RunRecord:
    """A ``batch_runs`` row as a ``RunRecord``."""
    m = row._mapping
    return RunRecord(
        run_id=m["run_id"],
        usecase=m["usecase"],
        data_interval_start=m["data_interval_start"],
        data_interval_end=m["data_interval_end"],
        version=m["version"],
        outcome=m["outcome"],
        row_count=m["row_count"],
        checksum=m["checksum"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        details=json.loads(m["details"]),
    )


def run_values(run: RunRecord) -> dict[str, Any]:
    """A ``RunRecord`` as ``batch_runs`` column values."""
    return {
        "usecase": run.usecase,
        "run_id": run.run_id,
        "data_interval_start": run.data_interval_start,
        "data_interval_end": run.data_interval_end,
        "version": run.version,
        "outcome": run.outcome,
        "row_count": run.row_count,
        "checksum": run.checksum,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "details": json.dumps(run.details, sort_keys=True, default=str),
    }
