"""One use case's rows of the catalog, read and changed inside the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookup_tables import catalog
from lookup_tables.records import Status, VersionInfo
from lookup_tables.spec import TableSpec
from migrate.errors import LookupStoreError, RollbackError

_V = catalog.versions


class Versions:
    """The catalog entries of one lookup table, bound to an open transaction."""

    def __init__(self, conn: Connection, spec: TableSpec) -> None:
        self._conn = conn
        self._spec = spec
        self._mine = _V.c.usecase == spec.usecase

    def _select(self) -> sa.Select[Any]:
        return sa.select(_V).where(self._mine)

    def all(self) -> list[VersionInfo]:
        """Every version, newest first."""
        return [catalog.to_version(row) for row in self._conn.execute(self._select().order_by(_V.c.version.desc()))]

    def with_status(self, status: Status) -> list[VersionInfo]:
        """Versions in one state, newest first."""
        query = self._select().where(_V.c.status == status).order_by(_V.c.version.desc())
        return [catalog.to_version(row) for row in self._conn.execute(query)]

    def active(self) -> VersionInfo | None:
        """The version ``lookup_active`` points at."""
        act = catalog.active
        query = self._select().join(act, (act.c.usecase == _V.c.usecase) & (act.c.version == _V.c.version))
        row = self._conn.execute(query).first()
        return None if row is None else catalog.to_version(row)

    def find(self, version: int) -> VersionInfo | None:
        row = self._conn.execute(self._select().where(_V.c.version == version)).first()
        return None if row is None else catalog.to_version(row)

    def require(self, version: int) -> VersionInfo:
        """The version, or a ``LookupStoreError`` naming the use case when it is unknown."""
        info = self.find(version)
        if info is None:
            spec = self._spec
            raise LookupStoreError(
                f"lookup table {spec.name} of use case {spec.usecase} has no version {version}",
                fix=f"list versions with `migrate lookup show {spec.usecase}`",
            )
        return info

    def require_loading(self, version: int, *, share_lock: bool = False) -> VersionInfo:
        """The version if it is still loading; ``share_lock`` holds off a concurrent publish or abandon."""
        query = self._select().where(_V.c.version == version)
        if share_lock:
            query = query.with_for_update(read=True)
        row = self._conn.execute(query).first()
        info = self.require(version) if row is None else catalog.to_version(row)
        if info.status != "loading":
            spec = self._spec
            raise LookupStoreError(
                f"version {version} of {spec.name} (use case {spec.usecase}) is {info.status}, no longer loading",
                fix="a newer run superseded it or it was published; start a new version with begin_version",
            )
        return info

    def next_number(self) -> int:
        """One more than any version ever allocated, so numbers are never reused."""
        return (
            int(
                self._conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(_V.c.version), 0)).where(self._mine)
                ).scalar_one()
            )
            + 1
        )

    def add(self, version: int, run_id: str, model_version: str, start: datetime, end: datetime) -> VersionInfo:
        """Record a new loading version."""
        self._conn.execute(
            _V.insert().values(
                usecase=self._spec.usecase,
                version=version,
                table_name=self._spec.version_table(version),
                run_id=run_id,
                model_version=model_version,
                data_interval_start=start,
                data_interval_end=end,
                status="loading",
                created_at=datetime.now(UTC),
            )
        )
        return self.require(version)

    def update(self, version: int, **values: Any) -> None:
        self._conn.execute(_V.update().where(self._mine & (_V.c.version == version)).values(**values))

    def retire(self, info: VersionInfo, **values: Any) -> None:
        """Drop the version's table and keep its catalog row as history."""
        table = catalog.version_table(self._spec, info.version)
        table.drop(self._conn, checkfirst=True)
        chunks = catalog.chunks
        mine = (chunks.c.usecase == self._spec.usecase) & (chunks.c.version == info.version)
        self._conn.execute(chunks.delete().where(mine))
        self.update(info.version, status="retired", **values)

    def set_active(self, version: int, when: datetime) -> None:
        act = catalog.active
        self._conn.execute(act.delete().where(act.c.usecase == self._spec.usecase))
        self._conn.execute(act.insert().values(usecase=self._spec.usecase, version=version, switched_at=when))

    def prune(self, keep: int) -> list[int]:
        """Retire ready versions beyond the ``keep`` newest; return their numbers."""
        old = self.with_status("ready")[keep:]
        for info in old:
            self.retire(info)
        chunks = catalog.chunks
        published = sa.select(_V.c.version).where(self._mine & (_V.c.status != "loading"))
        self._conn.execute(
            chunks.delete().where((chunks.c.usecase == self._spec.usecase) & chunks.c.version.in_(published))
        )
        return [info.version for info in old]

    def rollback_target(self, current: VersionInfo | None, to: int | None) -> VersionInfo:
        """The version a rollback switches to, or a ``RollbackError`` saying why there is none."""
        spec = self._spec
        if to is None:
            if current is None:
                raise RollbackError(
                    f"lookup table {spec.name} of use case {spec.usecase} has no active version to roll back",
                    fix=f"publish one first: run `migrate score {spec.usecase}` or the batch DAG",
                )
            older = [info for info in self.with_status("ready") if info.version < current.version]
            if not older:
                raise RollbackError(
                    f"lookup table {spec.name} of use case {spec.usecase} has no ready version older than "
                    f"the active version {current.version} to roll back to",
                    fix=f"list versions with `migrate lookup show {spec.usecase}`; retired versions cannot be "
                    "restored, rerun the batch for that interval instead",
                )
            return older[0]
        target = self.find(to)
        if target is None or target.status in ("retired", "loading"):
            state = "unknown" if target is None else target.status
            raise RollbackError(
                f"cannot switch lookup table {spec.name} of use case {spec.usecase} to version {to}: it is {state}",
                fix=f"pick a ready version from `migrate lookup show {spec.usecase}`, or rerun the batch for that "
                "interval",
            )
        return target
