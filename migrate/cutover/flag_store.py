"""The cutover flags in the SQL store beside the lookup tables (SQLite or PostgreSQL), on SQLAlchemy Core.

``cutover_flags`` holds one row per use case that ever moved; ``cutover_audit`` one row per attempted change,
applied or refused, and triggers refuse to UPDATE, DELETE or TRUNCATE it. A change and its audit row are one
transaction. Writers serialise on one lock (SQLite's write lock; an advisory lock on PostgreSQL), so
``revision`` is one counter over all flags and its maximum — what `FlagWatcher` polls — grows on every change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookup_tables.audited import AuditedSqlStore, append_only, aware
from migrate.cutover.flags import AuditEntry, Flag, Stage, check_change, skipped_stages
from migrate.errors import FlagStoreError, MigrateError, TransitionRefusedError

__all__ = ["FlagStore", "audit", "flags", "metadata"]

metadata = sa.MetaData()
_STAGES = ", ".join(f"'{s.value}'" for s in Stage)
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

flags = sa.Table(
    "cutover_flags",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("percent", sa.SmallInteger, nullable=True),
    sa.Column("revision", sa.BigInteger, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.CheckConstraint(f"stage IN ({_STAGES})", name="cutover_flags_stage"),
    sa.CheckConstraint(
        "(stage = 'canary' AND percent BETWEEN 1 AND 99) OR (stage <> 'canary' AND percent IS NULL)",
        name="cutover_flags_percent",
    ),
)

audit = sa.Table(
    "cutover_audit",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("usecase", sa.String(63), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("from_stage", sa.String(16), nullable=False),
    sa.Column("from_percent", sa.SmallInteger, nullable=True),
    sa.Column("to_stage", sa.String(32), nullable=True),
    sa.Column("to_percent", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("revision", sa.BigInteger, nullable=True),
    sa.CheckConstraint("outcome IN ('applied', 'refused')", name="cutover_audit_outcome"),
)

append_only(audit)


def _flag(row: Any) -> Flag:
    return Flag(
        usecase=row.usecase,
        stage=Stage(row.stage),
        percent=row.percent,
        revision=row.revision,
        updated_at=aware(row.updated_at),
        updated_by=row.updated_by,
        reason=row.reason,
    )


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        usecase=row.usecase,
        at=aware(row.at),
        actor=row.actor,
        source=row.source,
        from_stage=row.from_stage,
        from_percent=row.from_percent,
        to_stage=row.to_stage,
        to_percent=row.to_percent,
        reason=row.reason,
        outcome=row.outcome,
        detail=row.detail,
        revision=row.revision,
    )


class FlagStore(AuditedSqlStore):
    """Read and change cutover flags; every change writes its audit row in the same transaction."""

    what = "cutover flag store"
    lock = "migrate.cutover"
    error = FlagStoreError

    # -- reads -------------------------------------------------------------------------------------------------

    def get(self, usecase: str) -> Flag:
        """The use case's flag; ``batch`` (revision 0) if it was never set."""
        with self._boundary(usecase, "reading the cutover flag"), self._engine.connect() as conn:
            return self._current(conn, usecase)

    def get_all(self) -> dict[str, Flag]:
        """Every flag ever set, by use case (use cases not in it are at ``batch``)."""
        with self._boundary(None, "reading the cutover flags"), self._engine.connect() as conn:
            return {row.usecase: _flag(row) for row in conn.execute(sa.select(flags))}

    def revision(self) -> int:
        """The highest revision over all flags (0 if none): it changes whenever any flag does."""
        with self._boundary(None, "polling the cutover flags' revision"), self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(flags.c.revision), 0))).scalar_one())

    def history(self, usecase: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """Audit entries, newest first; of one use case or of all."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if usecase is not None:
            query = query.where(audit.c.usecase == usecase)
        with self._boundary(usecase, "reading the cutover audit"), self._engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query)]

    # -- writes ------------------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create ``cutover_flags`` and ``cutover_audit`` if missing (safe to call from many processes)."""
        with self._boundary(None, "creating the cutover tables"), self._write() as conn:
            metadata.create_all(conn)
        self._schema_ready = True

    def set(
        self,
        usecase: str,
        stage: Stage | str,
        percent: int | None = None,
        *,
        actor: str,
        reason: str,
        source: str,
        force: bool = False,
        detail: str | None = None,
        only_from: Collection[Stage] | None = None,
    ) -> Flag:
        """Move ``usecase`` to ``stage`` (and ``percent`` at canary) and audit it; returns the flag now in force.

        Raises:
            InvalidFlagError: the request itself is malformed (nothing is written).
            TransitionRefusedError: it skips stages without ``force``; audited as refused, flag unchanged.

        Setting the flag it already has is audited but keeps the revision. With ``only_from``, a flag at
        another stage is left alone, unaudited, and returned as is (auto rollback uses this).
        """
        target, percent = check_change(usecase, stage, percent, reason=reason, actor=actor, source=source)
        self._ensure_schema_once()
        refused: TransitionRefusedError | None = None
        with self._boundary(usecase, f"setting the cutover flag to {target}"), self._write() as conn:
            current = self._current(conn, usecase)
            if only_from is not None and current.stage not in only_from:
                return current
            row: dict[str, Any] = {"usecase": usecase, "actor": actor, "source": source, "reason": reason}
            row["detail"] = detail
            row |= {"from_stage": current.stage.value, "from_percent": current.percent}
            row |= {"to_stage": target.value, "to_percent": percent}
            skipped = skipped_stages(current.stage, target)
            if skipped and not force:
                names = ", ".join(s.value for s in skipped)
                refused = TransitionRefusedError(
                    f"{usecase}: {current.describe()} → {target} skips {names}; the flag is unchanged",
                    fix=f"move through {names} first, or pass --force (recorded in the audit) to skip",
                )
                self._insert_audit(conn, row | {"outcome": "refused", "detail": f"skips {names} without force"})
            elif (current.stage, current.percent) == (target, percent) and current.revision:
                self._insert_audit(conn, row | {"outcome": "applied", "detail": detail or "no change"})
                return current
            else:
                if skipped:
                    row["detail"] = "; ".join(
                        filter(None, [f"forced: skips {', '.join(s.value for s in skipped)}", detail])
                    )
                return self._apply(conn, current, target, percent, row)
        assert refused is not None
        raise refused

    def record_refused(
        self,
        usecase: str,
        *,
        actor: str,
        source: str,
        reason: str,
        detail: str,
        stage: str | None = None,
        percent: int | None = None,
    ) -> AuditEntry:
        """Audit a change refused before it reached `set` (e.g. by the admin API); the flag is unchanged."""
        self._ensure_schema_once()
        # The admin API audits before it checks the use case exists: keep what fits, never fail on it.
        usecase = usecase[:63]
        with self._boundary(usecase, "auditing a refused flag change"), self._write() as conn:
            current = self._current(conn, usecase)
            row: dict[str, Any] = {"usecase": usecase, "actor": (actor or "unknown")[:200], "reason": reason or ""}
            row["source"] = source[:32]
            row |= {"from_stage": current.stage.value, "from_percent": current.percent}
            row |= {"to_stage": None if stage is None else str(stage)[:32], "to_percent": percent}
            entry_id = self._insert_audit(conn, row | {"outcome": "refused", "detail": detail})
            return _entry(conn.execute(sa.select(audit).where(audit.c.id == entry_id)).one())

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _apply(self, conn: Connection, current: Flag, target: Stage, percent: int | None, row: dict[str, Any]) -> Flag:
        now = datetime.now(UTC)
        latest = conn.execute(sa.select(sa.func.coalesce(sa.func.max(flags.c.revision), 0))).scalar_one()
        revision = int(latest) + 1
        values: dict[str, Any] = {"stage": target.value, "percent": percent, "revision": revision, "updated_at": now}
        values |= {"updated_by": row["actor"], "reason": row["reason"]}
        if current.revision:
            conn.execute(flags.update().where(flags.c.usecase == current.usecase).values(values))
        else:
            conn.execute(flags.insert().values(usecase=current.usecase, **values))
        self._insert_audit(conn, row | {"outcome": "applied", "revision": revision}, at=now)
        return Flag(current.usecase, target, percent, revision, now, row["actor"], row["reason"])

    def _insert_audit(self, conn: Connection, row: dict[str, Any], *, at: datetime | None = None) -> int:
        result = conn.execute(audit.insert().values(at=at or datetime.now(UTC), **row))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _current(self, conn: Connection, usecase: str) -> Flag:
        row = conn.execute(sa.select(flags).where(flags.c.usecase == usecase)).one_or_none()
        return Flag(usecase) if row is None else _flag(row)

    @contextmanager
    def _boundary(self, usecase: str | None, doing: str) -> Iterator[None]:
        """Map SQLAlchemy and driver errors to `FlagStoreError` naming the store, the use case and a fix."""
        try:
            yield
        except MigrateError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise self._translate(exc, usecase, doing) from exc

    def _translate(self, exc: sa.exc.SQLAlchemyError, usecase: str | None, doing: str) -> FlagStoreError:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
        text = "; ".join(lines[:3]) or type(orig).__name__
        if self._password:
            text = text.replace(self._password, "***")
        where = f"{doing} (use case {usecase})" if usecase else doing
        lowered = text.lower()
        if "cutover_" in lowered and ("no such table" in lowered or "does not exist" in lowered):
            fix = "create the tables: `migrate flags show` does, or FlagStore.ensure_schema()"
        elif "locked" in lowered or "lock timeout" in lowered or "canceling statement" in lowered:
            fix = f"another writer held the flags for {self._timeout_s:g}s; retry, or raise MIGRATE_SQL_TIMEOUT_S"
        elif isinstance(exc, sa.exc.OperationalError):
            fix = "is the database running and reachable? check MIGRATE_SQL_URL"
        else:
            fix = "see the database error above"
        return FlagStoreError(f"{where} failed at {self.url}: {text}", fix=fix)
