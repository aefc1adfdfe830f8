"""The lookup versions a comparison reads while its rows load: handed over as the store exports them, and a
version the prefetch did not read (or could not) exported by the caller, its error raised there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from comparison_fixtures import publish_lookup

from comparisons.lookup import Prefetch, likely_versions
from lookup_tables import TableSpec, close_lookup_stores, open_lookup_store
from migrate.errors import MigrateError
from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

DAY = datetime(2026, 11, 14, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Settings, UseCase, TableSpec]]:
    settings = get_settings(state_dir=tmp_path / "state")
    settings.ensure_state_dir()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    yield settings, usecase, TableSpec.for_usecase(usecase, settings)
    close_lookup_stores()


def test_the_active_and_the_previous_version_are_prefetched_as_the_store_exports_them(
    world: tuple[Settings, UseCase, TableSpec],
) -> None:
    settings, usecase, spec = world
    first = publish_lookup(settings, usecase, DAY, [(1, 1), (2, 1)], 0.25)
    second = publish_lookup(settings, usecase, DAY + timedelta(days=1), [(1, 1), (2, 1)], 0.75)
    store = open_lookup_store(settings)
    assert likely_versions(store.versions(spec)) == [second, first]
    prefetch = Prefetch(settings, spec, [second, first])
    for version, prediction in ((second, 0.75), (first, 0.25)):
        table = prefetch.export(store, spec, version)
        assert table.equals(store.export(spec, version))
        assert table.column("prediction").to_pylist() == [prediction] * 2


def test_a_version_not_prefetched_or_that_failed_is_exported_by_the_caller_and_raises_there(
    world: tuple[Settings, UseCase, TableSpec],
) -> None:
    settings, usecase, spec = world
    only = publish_lookup(settings, usecase, DAY, [(1, 1), (2, 1)], 0.5)
    store = open_lookup_store(settings)
    prefetch = Prefetch(settings, spec, [only + 1, only])  # the first fails: nothing after it is read
    assert prefetch.export(store, spec, only).column("prediction").to_pylist() == [0.5, 0.5]
    with pytest.raises(MigrateError):
        prefetch.export(store, spec, only + 1)
    assert likely_versions([]) == []
