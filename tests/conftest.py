"""Session-wide set-up: Airflow reads its configuration at import, so give the test session its own home first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
