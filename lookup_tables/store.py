"""The lookup store's contract: versioned tables, loaded in chunks and published atomically behind a view.

A version's life: ``begin_version`` (loading) → ``write_chunk``... → ``publish`` (active, or ready when it is
older than the active one, or reused when it repeats it) → ``ready`` once replaced → ``retired`` past retention.
Every backend (``sqlite.py``, ``postgres.py``) passes the same contract tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from lookup_tables.records import Key, LookupRow, PublishResult, RunRecord, VersionInfo, VersionStats
from lookup_tables.spec import TableSpec
from migrate.errors import LookupStoreError


class LookupStore(ABC):
    """Versioned lookup tables of batch predictions, read through a stable view name."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The database URL with any password masked."""

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the catalog tables if they are missing; safe to call any number of times."""

    @abstractmethod
    def begin_version(
        self,
        spec: TableSpec,
        *,
        run_id: str,
        model_version: str,
        data_interval_start: datetime,
        data_interval_end: datetime,
    ) -> VersionInfo:
        """Allocate the next version and create its empty table (status ``loading``).

        A retried task (same ``run_id``, version still loading) gets its version back, rows kept. Loading
        versions of other runs are abandoned: one run loads a use case at a time, and a version whose writer
        died must not linger.
        """

    @abstractmethod
    def write_chunk(self, spec: TableSpec, version: int, chunk_id: int, batch: pa.Table) -> int:
        """Replace chunk ``chunk_id`` of a loading version with ``batch``; return the rows written.

        ``batch`` holds the key columns, ``prediction`` (float64, no NaN) and ``features_as_of`` (aware
        timestamp). Idempotent: the delete of the chunk's old rows and the insert commit together.
        """

    @abstractmethod
    def stats(self, spec: TableSpec, version: int) -> VersionStats:
        """Row count, null predictions, prediction range and distinct keys of one version."""

    @abstractmethod
    def publish(self, spec: TableSpec, version: int, *, checksum: str, scored_at: datetime) -> PublishResult:
        """Make a loading version the one applications read, in one transaction.

        Refuses duplicate keys (the version stays loading). Reuses the active version when it has the same
        data interval, model version and checksum. Keeps an older data interval ``ready`` without activating
        it. Afterwards keeps the active version plus ``spec.keep_versions`` ready ones and retires the rest.
        """

    @abstractmethod
    def abandon(self, spec: TableSpec, version: int) -> None:
        """Drop a loading version's table and mark it retired."""

    @abstractmethod
    def active(self, spec: TableSpec) -> VersionInfo | None:
        """The version applications read now, or ``None`` before the first publish."""

    @abstractmethod
    def versions(self, spec: TableSpec) -> list[VersionInfo]:
        """Every version of the use case, retired ones included, newest first."""

    @abstractmethod
    def rollback(self, spec: TableSpec, to: int | None = None) -> VersionInfo:
        """Point the view at ``to`` (default: the newest ready version older than the active one), atomically.

        The replaced version becomes ``ready``, so ``rollback(spec, to=<it>)`` rolls forward again.
        """

    @abstractmethod
    def get(self, spec: TableSpec, key: Key) -> LookupRow | None:
        """The active version's row for ``key``, or ``None`` if it has none."""

    @abstractmethod
    def get_many(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, LookupRow]:
        """The active version's rows for ``keys`` (absent keys are left out), all from one version."""

    @abstractmethod
    def sample(self, spec: TableSpec, limit: int = 10) -> list[LookupRow]:
        """The first ``limit`` rows of the active version in key order, for smoke checks and the CLI."""

    @abstractmethod
    def export(self, spec: TableSpec, version: int) -> pa.Table:
        """Every row of one version as Arrow: the key columns (int64 or string) and ``prediction`` (float64).

        For whole-table readers (the comparator's waste count and noise floor), in one bulk read. Rows come in
        no particular order. Raises ``LookupStoreError`` for an unknown or retired version.
        """

    @abstractmethod
    def record_run(self, run: RunRecord) -> None:
        """Insert or replace the record of a batch run (by use case and run id)."""

    @abstractmethod
    def runs(self, usecase: str, limit: int = 20) -> list[RunRecord]:
        """The latest batch runs of a use case, newest first."""

    @abstractmethod
    def close(self) -> None:
        """Close every pooled connection."""


def require_rows(info: VersionInfo, spec: TableSpec) -> None:
    """Refuse to read a retired version (its table is dropped), naming it and what can be read instead."""
    if info.status == "retired":
        raise LookupStoreError(
            f"version {info.version} of {spec.name} (use case {spec.usecase}) is retired; its rows are gone",
            fix=f"read a loading, ready or active version: `migrate lookup show {spec.usecase}`",
        )
