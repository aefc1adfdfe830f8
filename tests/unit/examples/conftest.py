"""Small simulated offline stores shared by the example tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.examples.item_availability.generator import GenerationSummary, SimulationConfig, generate
from migrate.registry import load_usecase
from migrate.usecase import UseCase

USECASE_FILE = Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml"


@pytest.fixture(scope="session")
def usecase() -> UseCase:
    return load_usecase(USECASE_FILE)


@pytest.fixture(scope="session")
def small_config() -> SimulationConfig:
    return SimulationConfig(seed=7, stores=3, products=30, days=4)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory, small_config: SimulationConfig) -> GenerationSummary:
    """3 stores x 30 products x 4 days; tests only read it (``summary.path``)."""
    return generate(tmp_path_factory.mktemp("small") / "offline.duckdb", small_config)
