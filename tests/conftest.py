"""Session-wide set-up: Airflow reads its configuration at import, so give the test session its own home first."""

from __future__ import annotations

import gc
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lookup_tables import close_lookup_stores

ROOT = Path(__file__).resolve().parents[1]

_airflow_home = Path(tempfile.mkdtemp(prefix="migrate-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_airflow_home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_airflow_home / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(_airflow_home / "logs")
os.environ["MIGRATE_PROJECT_DIR"] = str(ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never write into the developer's own state dir.
os.environ["MIGRATE_STATE_DIR"] = str(Path(tempfile.mkdtemp(prefix="migrate-test-state-")))

# --- the production profile: MIGRATE_TEST_PROFILE=production runs the whole suite against PostgreSQL (a schema
# of each test module's own, via search_path) and the machine's Redis, as a deployment would; CI runs it so.
PRODUCTION = os.environ.get("MIGRATE_TEST_PROFILE") == "production"
_PG_URL = os.environ.get("MIGRATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_REDIS_URL = os.environ.get("MIGRATE_TEST_PRODUCTION_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture(scope="module", autouse=True)
def production_profile() -> Iterator[None]:
    """Under the production profile: MIGRATE_SQL_URL → a fresh PostgreSQL schema, MIGRATE_REDIS_URL → Redis."""
    if not PRODUCTION:
        yield
        return

    engine = sa.create_engine(_PG_URL, poolclass=NullPool, connect_args={"connect_timeout": 5})
    schema = f"prod_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    saved = {name: os.environ.get(name) for name in ("MIGRATE_SQL_URL", "MIGRATE_REDIS_URL")}
    url = sa.make_url(_PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    os.environ["MIGRATE_SQL_URL"] = url.render_as_string(hide_password=False)
    os.environ["MIGRATE_REDIS_URL"] = _REDIS_URL
    client = redis.Redis.from_url(_REDIS_URL, socket_timeout=5)
    client.flushdb()
    try:
        yield
    finally:
        close_lookup_stores()  # before the schema goes: no pooled connection may outlive it
        # A store some test left open is found here, in the module that leaked it, not at a random later GC.
        gc.collect()
        client.flushdb()
        client.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
