"""The package's public surface and backend selection (no database is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lookup_tables
from lookup_tables import open_store
from lookup_tables.postgres import PostgresLookupStore
from lookup_tables.sqlite import SqliteLookupStore
from migrate.errors import LookupStoreError

pytestmark = pytest.mark.unit


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(lookup_tables) if not name.startswith("_")}
    assert set(lookup_tables.__all__) <= public
    assert set(lookup_tables.__all__) == {
        "Key",
        "KeyColumn",
        "LookupRow",
        "LookupStore",
        "PublishResult",
        "RunRecord",
        "Status",
        "TableSpec",
        "VersionInfo",
        "VersionStats",
        "close_lookup_stores",
        "open_lookup_store",
        "open_store",
    }


def test_the_backend_follows_the_url(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x' / 'lookup.db'}"), SqliteLookupStore)
    assert (tmp_path / "x").is_dir()
    for url in ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgres://u@h/db"):
        assert isinstance(open_store(url), PostgresLookupStore)


def test_passwords_are_masked_in_the_url() -> None:
    store = open_store("postgresql://migrate:hunter2@db.internal:6543/lookups")
    assert "hunter2" not in store.url and "***" in store.url
    assert store.url.startswith("postgresql+psycopg://")


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u:pw@h/db", "not supported"), ("sqlite://", "names no database file"), ("not a url", "not a database")],
)
def test_unusable_urls_are_refused_with_a_fix(url: str, message: str) -> None:
    with pytest.raises(LookupStoreError, match=message) as caught:
        open_store(url)
    assert "fix:" in str(caught.value) and "pw" not in str(caught.value)
