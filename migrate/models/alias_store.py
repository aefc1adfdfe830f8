"""The model aliases in the SQL store beside the cutover flags (SQLite or PostgreSQL), on SQLAlchemy Core.

``model_aliases`` holds one row per use case and alias set; ``model_alias_audit`` one row per attempted change,
applied or refused, and triggers refuse to UPDATE, DELETE or TRUNCATE it. A change and its audit row are one
transaction; writers serialise on one lock, so ``revision`` is one counter over all aliases, kept on the applied
audit rows (a cleared alias has no row left to carry it); its maximum — what `AliasWatcher` polls — grows on
every change. This store checks nothing about the artifacts themselves:
`migrate.models.lifecycle` verifies a version before it asks for a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lookup_tables.audited import AuditedSqlStore, append_only, aware
from migrate.errors import AliasStoreError, InvalidAliasChangeError, MigrateError
from migrate.models.aliases import AliasEntry, ModelAlias, check_request

__all__ = ["AliasStore", "aliases", "audit", "metadata"]

metadata = sa.MetaData()
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("usecase", sa.String(63), primary_key=True),
    sa.Column("alias", sa.String(16), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("percent", sa.SmallInteger, nullable=True),
    sa.CheckConstraint("alias IN ('live', 'candidate', 'previous')", name="model_aliases_alias"),
    sa.CheckConstraint(
        "percent IS NULL OR (alias = 'candidate' AND percent BETWEEN 1 AND 99)", name="model_aliases_percent"
    ),
)

audit = sa.Table(
    "model_alias_audit",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("usecase", sa.String(63), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("version", sa.String(128), nullable=True),
    sa.Column("live_before", sa.String(128), nullable=True),
    sa.Column("live_after", sa.String(128), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("revision", sa.BigInteger, nullable=True, index=True),
    sa.CheckConstraint("outcome IN ('applied', 'refused')", name="model_alias_audit_outcome"),
)

append_only(audit)


def _alias(row: Any) -> ModelAlias:
    return ModelAlias(
        row.usecase,
        row.alias,
        row.version,
        row.sha256,
        row.revision,
        aware(row.updated_at),
        row.updated_by,
        row.reason,
        row.percent,
    )


def _entry(row: Any) -> AliasEntry:
    return AliasEntry(
        id=row.id,
        usecase=row.usecase,
        at=aware(row.at),
        actor=row.actor,
        source=row.source,
        action=row.action,
        version=row.version,
        live_before=row.live_before,
        live_after=row.live_after,
        reason=row.reason,
        outcome=row.outcome,
        detail=row.detail,
        revision=row.revision,
    )


Target = tuple[str, str]
"""(version, sha256) of an artifact."""


def _version(alias: ModelAlias | None) -> str | None:
    return None if alias is None else alias.version


@dataclass(frozen=True)
class _Change:
    """One change in progress: its transaction, and who makes it, when and why."""

    conn: Connection
    usecase: str
    now: datetime
    actor: str
    source: str
    reason: str

    def put(self, alias: str, target: Target, revision: int, percent: int | None = None) -> None:
        values = {"version": target[0], "sha256": target[1], "revision": revision, "updated_at": self.now}
        values |= {"percent": percent}
        values |= {"updated_by": self.actor, "reason": self.reason}
        where = (aliases.c.usecase == self.usecase, aliases.c.alias == alias)
        if self.conn.execute(aliases.update().where(*where).values(values)).rowcount == 0:
            self.conn.execute(aliases.insert().values(usecase=self.usecase, alias=alias, **values))

    def audit(self, row: dict[str, Any], *, outcome: str = "applied") -> int:
        values = {"usecase": self.usecase, "at": self.now, "actor": self.actor, "source": self.source}
        values |= {"reason": self.reason, "outcome": outcome}
        key = self.conn.execute(audit.insert().values(**(values | row))).inserted_primary_key
        assert key is not None
        return int(key[0])


class AliasStore(AuditedSqlStore):
    """Read and move model aliases; every change writes its audit row in the same transaction."""

    what = "model alias store"
    lock = "migrate.models"
    error = AliasStoreError

    # -- reads -------------------------------------------------------------------------------------------------

    def get(self, usecase: str) -> dict[str, ModelAlias]:
        """The use case's aliases that are set, by alias name."""
        with self._boundary(usecase, "reading the model aliases"), self._engine.connect() as conn:
            return self._current(conn, usecase)

    def get_all(self) -> dict[tuple[str, str], ModelAlias]:
        """Every alias set, by (use case, alias)."""
        with self._boundary(None, "reading the model aliases"), self._engine.connect() as conn:
            return {(row.usecase, row.alias): _alias(row) for row in conn.execute(sa.select(aliases))}

    def revision(self) -> int:
        """The highest revision over all aliases (0 if none): it changes whenever any alias does."""
        with self._boundary(None, "polling the model aliases' revision"), self._engine.connect() as conn:
            return self._latest(conn)

    def history(self, usecase: str | None = None, limit: int = 50) -> list[AliasEntry]:
        """Audit entries, newest first; of one use case or of all."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if usecase is not None:
            query = query.where(audit.c.usecase == usecase)
        with self._boundary(usecase, "reading the model alias audit"), self._engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query)]

    # -- writes ------------------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create ``model_aliases`` and ``model_alias_audit`` if missing (safe to call from many processes)."""
        with self._boundary(None, "creating the model alias tables"), self._write() as conn:
            metadata.create_all(conn)
        self._schema_ready = True

    def set_candidate(
        self, usecase: str, target: Target, *, actor: str, reason: str, source: str, percent: int | None = None
    ) -> ModelAlias:
        """Name ``target`` the use case's candidate (replacing any other), served to ``percent`` % of entities as a
        canary if given; audited."""
        check_request(usecase, reason=reason, actor=actor, source=source, version=target[0], percent=percent)
        with self._changing(usecase, "setting the candidate model", actor, source, reason) as change:
            conn = change.conn
            live = self._current(conn, usecase).get("live")
            revision = self._next_revision(conn)
            change.put("candidate", target, revision, percent)
            row = {"action": "candidate", "version": target[0], "revision": revision}
            row |= {"detail": None if percent is None else f"canary {percent}%"}
            row |= {"live_before": _version(live), "live_after": _version(live)}
            change.audit(row)
            return self._current(conn, usecase)["candidate"]

    def promote(
        self,
        usecase: str,
        target: Target,
        *,
        actor: str,
        reason: str,
        source: str,
        serving: Target | None = None,
        detail: str | None = None,
    ) -> dict[str, ModelAlias]:
        """Make ``target`` live; the version it replaces becomes ``previous`` and a candidate equal to it is
        cleared. ``serving``: what serves while no live alias is set (so that it can be rolled back to)."""
        check_request(usecase, reason=reason, actor=actor, source=source, version=target[0])
        with self._changing(usecase, f"promoting {target[0]}", actor, source, reason) as change:
            conn = change.conn
            current = self._current(conn, usecase)
            live = current.get("live")
            before = (live.version, live.sha256) if live is not None else serving
            row: dict[str, Any] = {"action": "promote", "version": target[0], "detail": detail}
            row |= {"live_before": None if before is None else before[0], "live_after": target[0]}
            if live is not None and before == target:
                change.audit(row | {"detail": detail or "no change"})
                return current
            revision = self._next_revision(conn)
            change.put("live", target, revision)
            if before is not None and before != target:
                change.put("previous", before, revision)
            candidate = current.get("candidate")
            if candidate is not None and (candidate.version, candidate.sha256) == target:
                conn.execute(aliases.delete().where(aliases.c.usecase == usecase, aliases.c.alias == "candidate"))
            change.audit(row | {"revision": revision})
            return self._current(conn, usecase)

    def rollback(
        self, usecase: str, *, actor: str, reason: str, source: str, detail: str | None = None
    ) -> dict[str, ModelAlias]:
        """Swap ``live`` and ``previous``: the previous version serves again (a second rollback undoes it).

        Raises:
            InvalidAliasChangeError: there is no previous version (audited as refused; nothing moved).
        """
        check_request(usecase, reason=reason, actor=actor, source=source)
        refused: InvalidAliasChangeError | None = None
        with self._changing(usecase, "rolling back the live model", actor, source, reason) as change:
            conn = change.conn
            current = self._current(conn, usecase)
            live, previous = current.get("live"), current.get("previous")
            row: dict[str, Any] = {"action": "rollback", "live_before": _version(live), "detail": detail}
            if live is None or previous is None:
                refused = InvalidAliasChangeError(
                    f"{usecase}: there is no previous model to roll back to; the live one is unchanged",
                    fix=f"promote a version instead (`migrate models list {usecase}` shows them)",
                )
                row |= {"live_after": row["live_before"], "detail": "no previous version"}
                change.audit(row, outcome="refused")
            else:
                revision = self._next_revision(conn)
                change.put("live", (previous.version, previous.sha256), revision)
                change.put("previous", (live.version, live.sha256), revision)
                row |= {"version": previous.version, "live_after": previous.version, "revision": revision}
                change.audit(row)
                return self._current(conn, usecase)
        assert refused is not None
        raise refused

    def reject_candidate(self, usecase: str, *, actor: str, reason: str, source: str) -> ModelAlias | None:
        """Clear the candidate (the verdict found it worse); returns the one cleared, None if there was none."""
        check_request(usecase, reason=reason, actor=actor, source=source)
        with self._changing(usecase, "rejecting the candidate model", actor, source, reason) as change:
            conn = change.conn
            current = self._current(conn, usecase)
            candidate, live = current.get("candidate"), current.get("live")
            if candidate is None:
                return None
            revision = self._next_revision(conn)
            conn.execute(aliases.delete().where(aliases.c.usecase == usecase, aliases.c.alias == "candidate"))
            row = {"action": "reject", "version": candidate.version, "revision": revision}
            row |= {"live_before": _version(live), "live_after": _version(live)}
            change.audit(row)
            return candidate

    def record_refused(
        self, usecase: str, *, action: str, version: str | None, actor: str, source: str, reason: str, detail: str
    ) -> AliasEntry:
        """Audit a change refused before it reached the store (a version that failed its checks)."""
        usecase = usecase[:63]  # the admin API audits what it was sent: keep what fits, never fail on it
        who = ((actor or "unknown")[:200], source[:32], reason or "")
        with self._changing(usecase, "auditing a refused model change", *who) as change:
            live = self._current(change.conn, usecase).get("live")
            row = {"action": action[:32], "version": None if version is None else version[:128], "detail": detail}
            row |= {"live_before": _version(live), "live_after": _version(live)}
            entry_id = change.audit(row, outcome="refused")
            conn = change.conn
            return _entry(conn.execute(sa.select(audit).where(audit.c.id == entry_id)).one())

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _current(self, conn: Connection, usecase: str) -> dict[str, ModelAlias]:
        rows = conn.execute(sa.select(aliases).where(aliases.c.usecase == usecase))
        return {row.alias: _alias(row) for row in rows}

    def _latest(self, conn: Connection) -> int:
        # The audit's, not the aliases': a cleared candidate deletes its row, and the audit only grows.
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit.c.revision), 0))).scalar_one())

    def _next_revision(self, conn: Connection) -> int:
        return self._latest(conn) + 1

    @contextmanager
    def _changing(self, usecase: str, doing: str, actor: str, source: str, reason: str) -> Iterator[_Change]:
        self._ensure_schema_once()
        with self._boundary(usecase, doing), self._write() as conn:
            yield _Change(conn, usecase, datetime.now(UTC), actor, source, reason)

    @contextmanager
    def _boundary(self, usecase: str | None, doing: str) -> Iterator[None]:
        """Map SQLAlchemy and driver errors to `AliasStoreError` naming the store, the use case and a fix."""
        try:
            yield
        except MigrateError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            text = next((line.strip() for line in str(orig).splitlines() if line.strip()), type(orig).__name__)
            where = f"{doing} of {usecase!r}" if usecase else doing
            fix = (
                "is the database running and reachable? check MIGRATE_SQL_URL"
                if isinstance(exc, sa.exc.OperationalError)
                else "see the database error above"
            )
            raise AliasStoreError(f"{where} failed at {self.url}: {text}", fix=fix) from exc
