"""Backends for the lookup-store contract: a SQLite file per test and a PostgreSQL schema per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from lookup_support import POSTGRES_URL, Table, spec_for
from sqlalchemy.pool import NullPool

from lookup_tables import LookupStore, open_store


def _postgres_schema_url(schema: str) -> str:
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty lookup store: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('lookup') / 'lookup.db'}"
        return
    engine = sa.create_engine(POSTGRES_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    schema = f"lt_test_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        engine.dispose()
        where = sa.make_url(POSTGRES_URL).render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL is not reachable at {where} ({exc.orig}); set MIGRATE_TEST_POSTGRES_URL")
    try:
        yield _postgres_schema_url(schema)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[LookupStore]:
    lookup = open_store(store_url, timeout_s=10.0)
    lookup.ensure_schema()
    try:
        yield lookup
    finally:
        lookup.close()


@pytest.fixture
def table(store: LookupStore, store_url: str) -> Table:
    return Table(store, spec_for(), store_url)
