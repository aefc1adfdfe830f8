"""Fixtures with real components: a small simulated world, a trained model, an Airflow metadata DB."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    """A generated offline store and a trained model under a private state dir."""

    settings: Settings
    usecase: UseCase
    cutoff: datetime
    entities_at_cutoff: int


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the session's Airflow metadata DB (SQLite, under the session's AIRFLOW_HOME)."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A small world (3 days) generated and trained under a state dir of this module's own."""
    from migrate.examples.item_availability.generator import SimulationConfig, generate
    from migrate.offline import open_offline
    from migrate.training import train

    state = tmp_path_factory.mktemp("state")
    previous = os.environ.get("MIGRATE_STATE_DIR")
    os.environ["MIGRATE_STATE_DIR"] = str(state)
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    summary = generate(settings.offline_store_path, SimulationConfig(stores=4, products=60, days=4, seed=3))
    cutoff = summary.last_batch_cutoff
    train(usecase, settings, cutoff)
    with open_offline(settings.offline_store_path) as con:
        entities = con.execute(
            "SELECT count(*) FROM store_products sp WHERE listed_at <= ? AND EXISTS (SELECT 1 FROM "
            "item_features_daily f WHERE f.store_id = sp.store_id AND f.product_id = sp.product_id AND f.as_of <= ?)",
            [cutoff.replace(tzinfo=None), cutoff.replace(tzinfo=None)],
        ).fetchone()
    assert entities is not None
    yield World(settings, usecase, cutoff, int(entities[0]))
    if previous is None:
        os.environ.pop("MIGRATE_STATE_DIR", None)
    else:
        os.environ["MIGRATE_STATE_DIR"] = previous
