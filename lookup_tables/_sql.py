"""The lookup store on SQLAlchemy Core; ``sqlite.py`` and ``postgres.py`` add bulk loading, locking and errors."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lookup_tables import catalog
from lookup_tables.chunk import normalize
from lookup_tables.engine import single_statement_options
from lookup_tables.records import Key, LookupRow, PublishResult, RunRecord, VersionInfo, VersionStats, utc
from lookup_tables.spec import TableSpec
from lookup_tables.store import LookupStore
from lookup_tables.versions import Versions
from migrate.errors import DuplicateKeysError, LookupStoreError, MigrateError, NoActiveVersionError


class SqlLookupStore(LookupStore):
    """Everything both SQL backends share; subclasses supply the engine and the backend-specific hooks."""

    # The driver's own exception classes, raised by the bulk-load fast paths that bypass SQLAlchemy.
    _driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        # A driver's timestamp as SQLAlchemy reads a `UtcDateTime` column (the dialect's processor, then UTC),
        # kept per raw value: a version's rows share one `features_as_of` and one `scored_at`.
        self._time_processor = catalog.UtcDateTime().dialect_impl(engine.dialect).result_processor(engine.dialect, None)
        self._times: dict[Any, datetime | None] = {}
        self._single_options = single_statement_options(engine)

    # -- hooks -------------------------------------------------------------------------------------------------

    @abstractmethod
    def _lock(self, conn: Connection, name: str) -> None:
        """Serialise writers of one use case (or of the catalog) for the rest of the transaction."""

    @abstractmethod
    def _load(self, conn: Connection, table: sa.Table, batch: pa.Table, chunk_id: int) -> None:
        """Bulk-insert a normalised batch into ``table`` inside the caller's transaction."""

    @abstractmethod
    def _replace_view(self, conn: Connection, spec: TableSpec, select_sql: str) -> None:
        """Point the view ``spec.name`` at ``select_sql``, inside the caller's transaction."""

    @abstractmethod
    def _timestamp_literal(self, value: datetime) -> str:
        """``value`` as a SQL literal of the type ``features_as_of`` is stored with."""

    @abstractmethod
    def _translate(self, exc: Exception, usecase: str | None, doing: str) -> MigrateError:
        """A driver or SQLAlchemy error as a ``LookupStoreError`` naming the use case and a fix."""

    @abstractmethod
    def _is_missing_relation(self, error: BaseException) -> bool:
        """Whether the driver's ``error`` says a table or view does not exist."""

    def _write_options(self) -> dict[str, Any]:
        """Execution options of a writing connection (SQLite takes its write lock up front)."""
        return {}

    def _before_index(self, conn: Connection) -> None:
        """Called in the publishing transaction before the key index is built (PostgreSQL sizes its sort)."""

    def _after_index(self, conn: Connection, table: sa.Table) -> None:
        """Called once a version's rows and key index are in place (PostgreSQL gathers statistics)."""

    @abstractmethod
    def _fetch(self, conn: Connection, spec: TableSpec, keys: list[Key]) -> list[tuple[Any, ...]]:
        """Rows of the view for ``keys``, in one query so they all come from one version: the driver's own tuples
        (the view's columns in order, its times as the driver gives them), not SQLAlchemy's rows."""

    # -- plumbing ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @contextmanager
    def _boundary(self, usecase: str | None, doing: str) -> Iterator[None]:
        """Map every foreign error raised inside to a ``MigrateError``; ours pass through."""
        try:
            yield
        except MigrateError:
            raise
        except Exception as exc:
            if isinstance(exc, (sa.exc.SQLAlchemyError, *self._driver_errors)):
                raise self._translate(exc, usecase, doing) from exc
            raise

    @contextmanager
    def _transaction(self, *, write: bool, lock: str | None = None, single: bool = False) -> Iterator[Connection]:
        """A connection in a transaction; `single`: for one read statement, which is its own transaction."""
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(**self._write_options())
            elif single:
                conn.execution_options(**self._single_options)
            with conn.begin():
                if lock is not None:
                    self._lock(conn, lock)
                yield conn

    def close(self) -> None:
        self._engine.dispose()

    # -- catalog -----------------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self._boundary(None, "creating the catalog tables"), self._transaction(write=True, lock="") as conn:
            catalog.metadata.create_all(conn)

    def active(self, spec: TableSpec) -> VersionInfo | None:
        with self._boundary(spec.usecase, "reading the active version"), self._transaction(write=False) as conn:
            return Versions(conn, spec).active()

    def versions(self, spec: TableSpec) -> list[VersionInfo]:
        with self._boundary(spec.usecase, "listing versions"), self._transaction(write=False) as conn:
            return Versions(conn, spec).all()

    def record_run(self, run: RunRecord) -> None:
        values = catalog.run_values(run)
        runs = catalog.runs
        with self._boundary(run.usecase, f"recording run {run.run_id!r}"), self._transaction(write=True) as conn:
            mine = (runs.c.usecase == run.usecase) & (runs.c.run_id == run.run_id)
            conn.execute(runs.delete().where(mine))
            conn.execute(runs.insert().values(values))

    def runs(self, usecase: str, limit: int = 20) -> list[RunRecord]:
        runs = catalog.runs
        query = sa.select(runs).where(runs.c.usecase == usecase).order_by(runs.c.started_at.desc()).limit(limit)
        with self._boundary(usecase, "listing batch runs"), self._transaction(write=False) as conn:
            return [catalog.to_run(row) for row in conn.execute(query)]

    # -- loading -----------------------------------------------------------------------------------------------

    def begin_version(
        self,
        spec: TableSpec,
        *,
        run_id: str,
        model_version: str,
        data_interval_start: datetime,
        data_interval_end: datetime,
    ) -> VersionInfo:
        start = utc(data_interval_start, "data_interval_start")
        end = utc(data_interval_end, "data_interval_end")
        with (
            self._boundary(spec.usecase, f"starting a version of {spec.name} for run {run_id!r}"),
            self._transaction(write=True, lock=spec.usecase) as conn,
        ):
            versions = Versions(conn, spec)
            wanted = (run_id, model_version, start, end)
            retried: VersionInfo | None = None
            for loading in versions.with_status("loading"):
                if retried is None and wanted == (
                    loading.run_id,
                    loading.model_version,
                    loading.data_interval_start,
                    loading.data_interval_end,
                ):
                    retried = loading
                else:
                    versions.retire(loading)
            if retried is not None:
                return retried
            number = versions.next_number()
            catalog.version_table(spec, number).create(conn)
            return versions.add(number, run_id, model_version, start, end)

    def write_chunk(self, spec: TableSpec, version: int, chunk_id: int, batch: pa.Table) -> int:
        table = catalog.version_table(spec, version)
        batch = normalize(spec, version, chunk_id, batch)
        chunks = catalog.chunks
        with (
            self._boundary(spec.usecase, f"writing chunk {chunk_id} of {table.name}"),
            self._transaction(write=True) as conn,
        ):
            Versions(conn, spec).require_loading(version, share_lock=True)
            mine = (chunks.c.usecase == spec.usecase) & (chunks.c.version == version) & (chunks.c.chunk == chunk_id)
            if conn.execute(sa.select(chunks.c.chunk).where(mine)).first() is not None:
                conn.execute(table.delete().where(table.c.chunk == chunk_id))
                conn.execute(chunks.delete().where(mine))
            if batch.num_rows:
                self._load(conn, table, batch, chunk_id)
            row = {"usecase": spec.usecase, "version": version, "chunk": chunk_id, "row_count": batch.num_rows}
            conn.execute(chunks.insert().values(row))
        return int(batch.num_rows)

    def stats(self, spec: TableSpec, version: int) -> VersionStats:
        table = catalog.version_table(spec, version)
        pred = table.c.prediction
        # One pass, no DISTINCT: publish's unique index is what proves the keys are unique.
        query = sa.select(
            sa.func.count(), sa.func.count() - sa.func.count(pred), sa.func.min(pred), sa.func.max(pred)
        ).select_from(table)
        with (
            self._boundary(spec.usecase, f"computing statistics of {table.name}"),
            self._transaction(write=False) as conn,
        ):
            if Versions(conn, spec).require(version).status == "retired":
                raise LookupStoreError(
                    f"version {version} of {spec.name} (use case {spec.usecase}) is retired; its rows are gone",
                    fix="compute statistics of a loading, ready or active version",
                )
            rows, nulls, low, high = conn.execute(query).one()
        return VersionStats(int(rows), int(nulls), low, high)

    def abandon(self, spec: TableSpec, version: int) -> None:
        with (
            self._boundary(spec.usecase, f"abandoning version {version} of {spec.name}"),
            self._transaction(write=True, lock=spec.usecase) as conn,
        ):
            versions = Versions(conn, spec)
            info = versions.require(version)
            if info.status == "retired":
                return
            if info.status != "loading":
                raise LookupStoreError(
                    f"version {version} of {spec.name} (use case {spec.usecase}) is {info.status}, not loading",
                    fix="only unpublished versions can be abandoned; use rollback to stop serving a version",
                )
            versions.retire(info)

    # -- publishing --------------------------------------------------------------------------------------------

    def publish(self, spec: TableSpec, version: int, *, checksum: str, scored_at: datetime) -> PublishResult:
        scored_at = utc(scored_at, "scored_at")
        with self._boundary(spec.usecase, f"publishing version {version} of {spec.name}"):
            try:
                with self._transaction(write=True, lock=spec.usecase) as conn:
                    return self._publish(conn, spec, version, checksum, scored_at)
            except sa.exc.IntegrityError as exc:
                self._raise_duplicates(spec, version, exc)

    def _publish(
        self, conn: Connection, spec: TableSpec, version: int, checksum: str, scored_at: datetime
    ) -> PublishResult:
        versions = Versions(conn, spec)
        info = versions.require(version)
        if info.status == "active":
            return PublishResult(version, activated=True, reused=False, reason="already active")
        if info.status != "loading":
            raise LookupStoreError(
                f"version {version} of {spec.name} (use case {spec.usecase}) is {info.status}, not loading",
                fix=f"rerun the batch to load a new version, or `rollback(to={version})` if it is ready",
            )
        current = versions.active()
        identity = (info.data_interval_start, info.data_interval_end, info.model_version, checksum)
        if current is not None and identity == (
            current.data_interval_start,
            current.data_interval_end,
            current.model_version,
            current.checksum,
        ):
            versions.retire(info, checksum=checksum)
            reason = f"identical to active version {current.version} (same interval, model and checksum)"
            return PublishResult(current.version, activated=False, reused=True, reason=reason)
        table = catalog.version_table(spec, version)
        index = sa.Index(spec.key_index(version), *[table.c[name] for name in spec.key_names], unique=True)
        # The unique index is what proves the version has no duplicate keys; a duplicate aborts the publish.
        self._before_index(conn)
        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        self._after_index(conn, table)
        rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        versions.update(version, row_count=rows, checksum=checksum, scored_at=scored_at)
        info = versions.require(version)
        if current is not None and info.data_interval_end < current.data_interval_end:
            versions.update(version, status="ready", published_at=datetime.now(UTC))
            versions.prune(spec.keep_versions)
            reason = (
                f"data interval ends {info.data_interval_end.isoformat()}, before the active version "
                f"{current.version}'s ({current.data_interval_end.isoformat()}); kept ready, not activated"
            )
            return PublishResult(version, activated=False, reused=False, reason=reason)
        self._switch(conn, spec, versions, info, current, keep=spec.keep_versions)
        return PublishResult(version, activated=True, reused=False, reason="activated")

    def _switch(
        self,
        conn: Connection,
        spec: TableSpec,
        versions: Versions,
        target: VersionInfo,
        current: VersionInfo | None,
        *,
        keep: int | None = None,
    ) -> None:
        """Point ``lookup_active`` and the view at ``target``; the replaced version becomes ready.

        With ``keep``, ready versions past retention are retired too. The view is replaced last: on PostgreSQL
        its exclusive lock makes new readers wait, so it is held only for the commit.
        """
        now = datetime.now(UTC)
        if current is not None:
            versions.update(current.version, status="ready")
        values: dict[str, Any] = {"status": "active"}
        if target.published_at is None:
            values["published_at"] = now
        versions.update(target.version, **values)
        versions.set_active(target.version, now)
        if keep is not None:
            versions.prune(keep)
        self._replace_view(conn, spec, self._view_select(conn, spec, target))

    def _view_select(self, conn: Connection, spec: TableSpec, info: VersionInfo) -> str:
        quote = conn.dialect.identifier_preparer.quote
        if info.scored_at is None:
            raise LookupStoreError(f"version {info.version} of {spec.name} has no scored_at", fix="publish it first")
        columns = ", ".join(quote(name) for name in spec.key_names)
        return (
            f"SELECT {columns}, prediction, features_as_of, "
            f"CAST({_text(info.model_version)} AS TEXT) AS model_version, "
            f"{self._timestamp_literal(info.scored_at)} AS scored_at, "
            f"CAST({_text(info.run_id)} AS TEXT) AS run_id, "
            f"CAST({int(info.version)} AS INTEGER) AS version FROM {quote(info.table)}"
        )

    def _raise_duplicates(self, spec: TableSpec, version: int, exc: sa.exc.IntegrityError) -> NoReturn:
        table = catalog.version_table(spec, version)
        keys = [table.c[name] for name in spec.key_names]
        query = sa.select(*keys, sa.func.count()).group_by(*keys).having(sa.func.count() > 1).limit(3)
        with self._transaction(write=False) as conn:
            examples = [tuple(row) for row in conn.execute(query)]
        if not examples:
            raise exc
        shown = ", ".join(f"{row[:-1]} x{row[-1]}" for row in examples)
        raise DuplicateKeysError(
            f"version {version} of {spec.name} (use case {spec.usecase}) holds duplicate keys, e.g. {shown}; "
            "not published, the active version is unchanged",
            fix="make the scoring output one row per key (check joins and chunk boundaries), then rerun; "
            f"`abandon(spec, {version})` drops this version",
        ) from exc

    def rollback(self, spec: TableSpec, to: int | None = None) -> VersionInfo:
        with (
            self._boundary(spec.usecase, f"rolling back {spec.name}"),
            self._transaction(write=True, lock=spec.usecase) as conn,
        ):
            versions = Versions(conn, spec)
            current = versions.active()
            target = versions.rollback_target(current, to)
            if current is not None and target.version == current.version:
                return current
            self._switch(conn, spec, versions, target, current)
            return versions.require(target.version)

    # -- reading -----------------------------------------------------------------------------------------------

    def get(self, spec: TableSpec, key: Key) -> LookupRow | None:
        rows = self.get_many(spec, [key])
        return next(iter(rows.values())) if rows else None

    def get_many(self, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, LookupRow]:
        wanted = list(dict.fromkeys(spec.key_of(key) for key in keys))
        if not wanted:
            return {}
        rows = self._read(spec, lambda conn: self._fetch(conn, spec, wanted), self._time)
        return {row.key: row for row in rows}

    def _time(self, value: Any) -> datetime | None:
        """A driver's timestamp of the view as SQLAlchemy reads it (aware UTC), remembered per raw value."""
        times = self._times
        try:
            return times[value]
        except KeyError:
            if len(times) > 4096:
                times.clear()
            found = times[value] = self._time_processor(value) if self._time_processor is not None else value
            return found

    def sample(self, spec: TableSpec, limit: int = 10) -> list[LookupRow]:
        view = catalog.view_table(spec)
        query = sa.select(view).order_by(*[view.c[name] for name in spec.key_names]).limit(limit)
        return self._read(spec, lambda conn: list(conn.execute(query)))

    def _read(
        self,
        spec: TableSpec,
        fetch: Callable[[Connection], Sequence[Sequence[Any]]],
        time: Callable[[Any], datetime | None] | None = None,
    ) -> list[LookupRow]:
        """Rows of the view as ``LookupRow``s, their times read by `time` when the rows are the driver's own;
        a missing view means nothing was published yet."""
        with self._boundary(spec.usecase, f"reading {spec.name}"):
            try:
                with self._transaction(write=False, single=True) as conn:  # `fetch` is one statement
                    rows = fetch(conn)
            except Exception as exc:
                driver_error = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
                if isinstance(driver_error, self._driver_errors) and self._is_missing_relation(driver_error):
                    raise NoActiveVersionError(
                        f"lookup table {spec.name} of use case {spec.usecase} has no published version",
                        fix=f"run `migrate score {spec.usecase}` or the batch DAG",
                    ) from exc
                raise
        n = len(spec.keys)
        result: list[LookupRow] = []
        # Rows come in view order: the keys, then prediction, features_as_of, model_version, scored_at, run_id.
        for row in rows:
            prediction, features_as_of, model_version, scored_at, run_id, version = row[n:]
            if time is not None:
                features_as_of, scored_at = time(features_as_of), time(scored_at)
            result.append(
                LookupRow(tuple(row[:n]), prediction, model_version, features_as_of, scored_at, run_id, version)
            )
        return result


def describe(exc: Exception, secret: str | None = None) -> str:
    """The database's own words for ``exc`` (not SQLAlchemy's wrapper), on one line, ``secret`` masked."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    text = "; ".join(lines[:3]) or type(orig).__name__
    return text.replace(secret, "***") if secret else text


def _text(value: str) -> str:
    """A SQL string literal; quotes doubled (PostgreSQL runs with standard_conforming_strings on)."""
    if "\x00" in value:
        raise LookupStoreError(f"{value!r} contains a NUL character", fix="remove it from the run id / model version")
    return "'" + value.replace("'", "''") + "'"
