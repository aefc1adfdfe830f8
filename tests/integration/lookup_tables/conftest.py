"""Backends for the lookup-store contract: a SQLite file per test and a PostgreSQL schema per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lookup_support import Table, spec_for

from lookup_tables import LookupStore, open_store


@pytest.fixture
def store_url(sql_url: str) -> str:
    """A fresh, empty lookup store on each backend (the shared `sql_url` fixture)."""
    return sql_url


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
