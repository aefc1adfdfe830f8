"""The demo's DAG runs (simulated nights) go to a metadata DB of their own, never the grid the UI shows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from migrate.devservices.airflow_runner import DEMO_DB, airflow_env, ensure_metadata_db, run_dag_test
from migrate.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_demo_runs_stay_out_of_the_uis_metadata_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    settings = get_settings()
    ui_db = settings.airflow_home / "airflow.db"
    assert airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{ui_db}"
    ensure_metadata_db(settings)  # the UI's DB exists, as after `migrate airflow`
    ensure_metadata_db(settings, demo=True)
    night = datetime(2026, 3, 1, 5, tzinfo=UTC)
    # No shadow log in this state dir: the report task skips, and the run succeeds.
    run_dag_test(settings, "shadow_report__item_availability", night, demo=True)
    with sqlite3.connect(settings.airflow_home / DEMO_DB) as demo:
        assert demo.execute("SELECT dag_id FROM dag_run").fetchall() == [("shadow_report__item_availability",)]
    with sqlite3.connect(ui_db) as ui:
        assert ui.execute("SELECT count(*) FROM dag_run").fetchone() == (0,)


def test_a_configured_metadata_db_is_the_uis_and_the_demo_still_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow@db/airflow")
    settings = get_settings()
    assert airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql://airflow@db/airflow"
    demo = airflow_env(settings, demo=True)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert demo == f"sqlite:///{settings.airflow_home / DEMO_DB}"
