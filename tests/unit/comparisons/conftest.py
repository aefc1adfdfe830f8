"""Fixtures of the comparator's unit tests: a private state dir and the example use case."""

from __future__ import annotations

from pathlib import Path

import pytest
from comparison_fixtures import USECASE

from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state dir is this test's own (nothing else in it)."""
    return get_settings(state_dir=tmp_path / "state")


@pytest.fixture
def usecase() -> UseCase:
    return Registry(get_settings().usecases_dir).get(USECASE)
