"""The cutover DAG through real Airflow: it loads cleanly, and dag.test() flips (or refuses to flip) the flag."""

from __future__ import annotations

import copy
import itertools
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import ParamValidationError

from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.registry import Registry
from migrate.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "cutover.py"
UC = "item_availability"
# Each run gets its own logical date: the session's metadata DB keeps every run.
_DATES = itertools.count()


def _dagbag() -> Any:

    return DagBag(dag_folder=str(DAG_FILE))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MIGRATE_SQL_URL", raising=False)
    return tmp_path


_OPEN: list[FlagStore] = []


def _store() -> FlagStore:
    store = FlagStore.from_settings(get_settings())
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Stores opened by a test are closed after it (a pooled PostgreSQL connection must not reach the GC open)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _trigger(conf: dict[str, Any]) -> str:
    dag = _dagbag().dags[f"cutover__{UC}"]
    when = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=next(_DATES))
    run = dag.test(logical_date=when, run_conf=conf)
    return str(run.state).removeprefix("DagRunState.").lower()


def test_one_cutover_dag_per_use_case_loads_cleanly() -> None:
    bag = _dagbag()
    assert bag.import_errors == {}
    for usecase in Registry(get_settings().usecases_dir).load_all():
        dag = bag.dags[f"cutover__{usecase.name}"]
        assert dag.schedule is None  # manual trigger only
        assert {"migrate", "cutover", f"usecase:{usecase.name}"} <= set(dag.tags)
        assert dag.owner == usecase.owner and usecase.name in (dag.doc_md or "")
        assert [t.task_id for t in dag.tasks] == ["set_flag"]
        params = dag.params
        assert params.get_param("stage").schema["enum"] == [s.value for s in Stage]
        percent = params.get_param("percent").schema
        assert (percent["type"], percent["minimum"], percent["maximum"]) == ("integer", 1, 99)
        assert params["percent"] == 10  # filled in: canary from the form or the API always has a percent
        assert params["force"] is False and params["actor"] is None


def _form_required(schema: dict[str, Any]) -> bool:
    """The trigger form's rule (Airflow 3.3 UI, flexible form): a field is required, and says "This field is
    required" while empty, when its schema has a type that does not include null."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def test_the_form_opens_clean_and_refuses_a_trigger_without_stage_or_reason() -> None:
    params = _dagbag().dags[f"cutover__{UC}"].params
    # Only Canary percent is marked required, and it opens filled in (10): no field shows an error before anything
    # is typed; Force and Actor are optional.
    assert {name for name in params if _form_required(params.get_param(name).schema)} == {"percent"}
    assert all(params[name] is not None for name in params if _form_required(params.get_param(name).schema))
    filled = {"stage": "shadow", "reason": "from the form", "actor": None, "force": None, "percent": 10}
    form = copy.deepcopy(params)
    form.update(filled)
    assert form.validate()["actor"] is None
    # What the trigger endpoint does with the form's values before it creates a run.
    refused = [("stage", None), ("stage", "canry"), ("reason", None), ("reason", "  "), ("percent", 100)]
    refused += [("percent", None), ("percent", 0)]  # canary can never be triggered without a percent of 1-99
    for field, value in refused:
        form = copy.deepcopy(params)
        with pytest.raises(ParamValidationError, match=f"param {field}"):
            form.update({**filled, field: value})
            form.validate()


def test_parsing_the_dag_file_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('migrate.cutover.flag_store', 'lookup_tables', 'psycopg', 'sklearn', 'numpy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout


def test_dag_test_flips_the_flag_with_source_airflow(state: Path, airflow_db: None) -> None:
    assert _trigger({"stage": "shadow", "reason": "shadow from the UI", "actor": "erin"}) == "success"
    flag = _store().get(UC)
    assert (flag.stage, flag.percent, flag.updated_by, flag.reason) == (
        Stage.SHADOW,
        None,
        "erin",
        "shadow from the UI",
    )
    entry = _store().history(UC, 1)[0]
    assert (entry.source, entry.outcome, entry.describe_change()) == ("airflow", "applied", "batch → shadow")
    assert (entry.detail or "").startswith("run ")

    assert _trigger({"stage": "canary", "percent": 10, "reason": "shadow looks right", "actor": None}) == "success"
    flag = _store().get(UC)
    assert (flag.stage, flag.percent) == (Stage.CANARY, 10)
    assert flag.updated_by  # the triggering user, or 'airflow' when dag.test has none


def test_a_skip_without_force_fails_the_run_and_is_audited(state: Path, airflow_db: None) -> None:
    assert _trigger({"stage": "online", "reason": "yolo", "actor": "frank"}) == "failed"
    assert _store().get(UC).stage is Stage.BATCH
    refused = _store().history(UC, 1)[0]
    assert (refused.outcome, refused.source, refused.actor) == ("refused", "airflow", "frank")

    assert _trigger({"stage": "online", "reason": "incident: batch broken", "force": True}) == "success"
    assert _store().get(UC).stage is Stage.ONLINE


def test_canary_left_without_a_percent_gets_the_forms_ten(state: Path, airflow_db: None) -> None:
    assert _trigger({"stage": "shadow", "reason": "first", "actor": "gina"}) == "success"
    assert _trigger({"stage": "canary", "reason": "percent not given", "actor": "gina"}) == "success"
    flag = _store().get(UC)
    assert (flag.stage, flag.percent) == (Stage.CANARY, 10)


def test_a_refusal_says_what_to_do_in_the_form_not_on_the_command_line(
    state: Path, airflow_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert _trigger({"stage": "canary", "percent": 5, "reason": "skip", "actor": "hal"}) == "failed"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused: ")]
    assert said == [
        f"refused: {UC}: batch → canary skips shadow; the flag is unchanged: "
        "trigger again moving one stage at a time, or tick Force (recorded in the audit)"
    ]
    assert "--force" not in caplog.text
    assert _store().history(UC, 1)[0].outcome == "refused"


def test_a_percent_left_in_the_form_is_ignored_outside_canary(state: Path, airflow_db: None) -> None:
    assert _trigger({"stage": "shadow", "percent": 30, "reason": "percent left over", "actor": "ivy"}) == "success"
    flag = _store().get(UC)
    assert (flag.stage, flag.percent) == (Stage.SHADOW, None)
