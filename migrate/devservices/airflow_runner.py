"""The embedded Airflow: its home and metadata DB under the state dir, and DAG runs through ``dag.test()``.

The demo's runs (``demo=True``) go to a metadata DB of their own (`DEMO_DB`), never the one the UI shows: they
carry simulated nights, and in the UI's grid they showed as weeks-long runs among the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from migrate.errors import MigrateError
from migrate.settings import Settings

DEMO_DB = "demo-runs.db"


class AirflowError(MigrateError):
    """The embedded Airflow failed to start or a DAG run failed."""


def airflow_env(settings: Settings, *, demo: bool = False) -> dict[str, str]:
    """Environment for an Airflow process on the embedded SQLite metadata DB (the demo's own with `demo`)."""
    home = settings.airflow_home
    env = dict(os.environ)
    ui_db = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / DEMO_DB}" if demo else ui_db,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "MIGRATE_PROJECT_DIR": str(settings.project_dir),
            "MIGRATE_STATE_DIR": str(settings.state_dir),
            "MIGRATE_USECASES_DIR": str(settings.usecases_dir),
            # The scheduler's OpenMP pools are per process: one thread each keeps mapped tasks from oversubscribing.
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        }
    )
    if settings.sql_url is not None:
        env["MIGRATE_SQL_URL"] = settings.sql_url.get_secret_value()
    return env


def _run(args: list[str], settings: Settings, log: Path, what: str, timeout_s: float, *, demo: bool = False) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                args,
                env=airflow_env(settings, demo=demo),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AirflowError(f"{what} did not finish within {timeout_s:.0f} s", fix=f"see its log: {log}") from None
    if done.returncode != 0:
        raise AirflowError(f"{what} failed (exit {done.returncode})", fix=f"see its log: {log}")


def ensure_metadata_db(settings: Settings, timeout_s: float = 300, *, demo: bool = False) -> None:
    """Create or upgrade the embedded Airflow metadata DB, or the demo's (idempotent)."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        settings,
        settings.airflow_home / "logs" / ("db-migrate-demo.log" if demo else "db-migrate.log"),
        "airflow db migrate",
        timeout_s,
        demo=demo,
    )


def run_dag_test(
    settings: Settings, dag_id: str, logical_date: datetime, timeout_s: float = 600, *, demo: bool = False
) -> Path:
    """Run one DAG run through ``dag.test()`` (``airflow dags test``), in the demo's metadata DB with `demo`;
    return its log file."""
    log = settings.airflow_home / "logs" / f"{dag_id}__{logical_date:%Y%m%dT%H%M%S}.log"
    log.unlink(missing_ok=True)
    _run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, logical_date.isoformat()],
        settings,
        log,
        f"DAG run {dag_id} @ {logical_date.isoformat()}",
        timeout_s,
        demo=demo,
    )
    return log
