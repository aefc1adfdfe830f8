"""The retrain DAG through Airflow's DagBag: one per use case, two tasks, nothing heavy at parse time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from migrate.registry import Registry
from migrate.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "retrain.py"


def test_every_use_case_has_a_retrain_dag_that_registers_a_candidate() -> None:
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    usecases = Registry(get_settings().usecases_dir).load_all()
    assert usecases
    for usecase in usecases:
        dag = bag.dags[f"retrain__{usecase.name}"]
        assert [t.task_id for t in dag.tasks] == ["train_model", "register_candidate"]
        assert dag.get_task("register_candidate").upstream_task_ids == {"train_model"}
        assert {"migrate", "models", f"usecase:{usecase.name}"} <= set(dag.tags)
        assert dag.owner == usecase.owner and not dag.catchup and dag.max_active_runs == 1
        assert f"migrate models promote {usecase.name}" in (dag.doc_md or "")


def test_parsing_the_retrain_dag_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = ('sklearn', 'duckdb', 'skops', 'numpy', 'lookup_tables', 'comparisons'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout
