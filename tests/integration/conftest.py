"""Fixtures with real components: a small simulated world, a trained model, an Airflow metadata DB."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from migrate.batch.offline_store import open_offline
from migrate.batch.training import train
from migrate.examples.item_availability.generator import SimulationConfig, generate
from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("MIGRATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty SQL store: a SQLite file, or a PostgreSQL schema (via search_path) dropped afterwards.

    Without a reachable PostgreSQL the postgres case is skipped, or fails where MIGRATE_REQUIRE_POSTGRES=1 (CI).
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sql') / 'lookup.db'}"
        return
    engine = sa.create_engine(POSTGRES_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        engine.dispose()
        where = sa.make_url(POSTGRES_URL).render_as_string(hide_password=True)
        message = f"PostgreSQL is not reachable at {where} ({exc.orig}); set MIGRATE_TEST_POSTGRES_URL"
        if os.environ.get("MIGRATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


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
