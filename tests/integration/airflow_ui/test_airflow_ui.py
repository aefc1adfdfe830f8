"""`migrate airflow` for real, driven through its UI in headless Chromium.

Both runs are triggered through the UI's own trigger form: `batch_predictions__item_availability` with the
form's defaults (logical date now, data interval inferred from the timetable), `cutover__item_availability`
with its params typed into the form. The form's "unpause on trigger" box unpauses each DAG. The REST API
(`/api/v2`, token from `/auth/token`) is only used to wait for the runs' states and to cross-check what the UI
lists. Screenshots go to `<repo>/test-artifacts/airflow_ui/`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import psutil
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from lookup_tables import TableSpec, open_lookup_store
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.devservices.airflow_server import free_port
from migrate.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.timeout(600)]

UC = "item_availability"
DAG_PREFIXES = ("batch_predictions", "materialize_features", "cutover", "shadow_report")  # one per dags/*.py
UI_TIMEOUT_S = 30
RUN_TIMEOUT_S = 240  # a batch run may queue behind the scheduled run that unpausing creates
API_SILENCE_S = 30


def _wait(driver: Any, condition: Callable[[Any], Any], timeout_s: float = UI_TIMEOUT_S, what: str = "") -> Any:

    return WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(condition, what)


def _css(driver: Any, selector: str) -> Any:

    return driver.find_element(By.CSS_SELECTOR, selector)


def _visible(selector: str) -> Callable[[Any], Any]:

    return ec.visibility_of_element_located((By.CSS_SELECTOR, selector))


def _body_text(driver: Any) -> str:
    return str(_css(driver, "body").text)


@pytest.fixture(scope="module")
def ui(browser: Any, airflow_ui: Any, artifacts: Path) -> Any:
    """The browser, logged in through the SimpleAuthManager's log-in form with the credentials the CLI printed."""
    browser.get(f"{airflow_ui.url}/")
    _wait(browser, lambda d: "/auth/login" in d.current_url, what="redirect to the log-in page")
    _wait(browser, _visible("input[name=username]")).send_keys(airflow_ui.username)
    _css(browser, "input[name=password]").send_keys(airflow_ui.password)
    browser.save_screenshot(str(artifacts / "01_login.png"))
    _css(browser, "button[type=submit]").click()
    _wait(browser, lambda d: "/auth/login" not in d.current_url, what="leaving the log-in page")
    return browser


def _expected_dag_ids(world: Any) -> set[str]:
    usecases = [uc.name for uc in Registry(world.settings.usecases_dir).valid()]
    assert UC in usecases
    return {f"{prefix}__{name}" for prefix in DAG_PREFIXES for name in usecases}


def _listed_dag_ids(driver: Any) -> set[str]:

    return {link.text for link in driver.find_elements(By.CSS_SELECTOR, "a[data-testid=dag-id]")}


def test_the_dag_list_shows_every_use_cases_dags(ui: Any, airflow_ui: Any, world: Any, artifacts: Path) -> None:

    expected = _expected_dag_ids(world)
    listed: set[str] = set()
    deadline = time.monotonic() + 90  # the DAG processor may still be parsing right after start-up
    while time.monotonic() < deadline:
        ui.get(f"{airflow_ui.url}/dags")
        try:
            _wait(ui, lambda d: expected <= _listed_dag_ids(d), timeout_s=5)
        except TimeoutException:  # not all there yet: reload and look again
            continue
        listed = _listed_dag_ids(ui)
        break
    ui.set_window_size(1400, 400 + 140 * len(listed))  # a screenshot holds the viewport only: show every card
    ui.save_screenshot(str(artifacts / "02_dag_list.png"))
    ui.set_window_size(1400, 1000)
    assert expected <= listed, f"missing from the UI: {sorted(expected - listed)}\n{airflow_ui.log_tails()}"

    # The UI lists exactly what Airflow has, and the DAGs folder parses cleanly.
    known = airflow_ui.api.get("/dags", params={"limit": 100}).json()
    assert listed == {dag["dag_id"] for dag in known["dags"]}
    errors = airflow_ui.api.get("/importErrors").json()
    assert errors["total_entries"] == 0, errors


def _open_form(ui: Any, airflow_ui: Any, dag_id: str) -> Any:
    """Open the DAG's trigger form; return its submit button."""
    ui.get(f"{airflow_ui.url}/dags/{dag_id}")
    _wait(ui, _visible("[data-testid=trigger-dag-button]"), what="the Trigger button").click()
    return _wait(ui, _visible("[data-testid=trigger-dag-submit]"), what="the trigger form")


def _trigger_from_ui(
    ui: Any, airflow_ui: Any, dag_id: str, shot: Path, fill: Callable[[Any], None], *, paused: bool = True
) -> str:
    """Open the DAG, fill its trigger form, submit; return the new run's id (the UI navigates to the run).

    The form offers to unpause a paused DAG only: `paused` False for a DAG an earlier trigger unpaused."""
    submit = _open_form(ui, airflow_ui, dag_id)
    if paused:
        unpause = _wait(ui, lambda d: _unpause_checkbox(d, dag_id), what="the unpause-on-trigger box")
        assert unpause.is_selected(), "the form no longer unpauses the DAG on trigger by default"
    fill(ui)
    ui.save_screenshot(str(shot))
    _wait(ui, lambda d: submit.is_enabled(), what="the form to validate")
    submit.click()
    _wait(ui, lambda d: f"/dags/{dag_id}/runs/" in d.current_url, what="the new run's page")
    return unquote(ui.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])


def _unpause_checkbox(driver: Any, dag_id: str) -> Any:

    for label in driver.find_elements(By.CSS_SELECTOR, "label[data-scope=checkbox]"):
        if f"Unpause {dag_id}" in label.text:
            return label.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
    return None


def _wait_for_run(airflow_ui: Any, dag_id: str, run_id: str, state: str = "success") -> dict[str, Any]:
    """Poll the REST API until the run ends; fail with the component and task logs otherwise."""
    path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    run: dict[str, Any] = {}
    answered = time.monotonic()
    while time.monotonic() < deadline:
        assert airflow_ui.process.poll() is None, f"`migrate airflow` exited\n{airflow_ui.log_tails()}"
        try:
            response = airflow_ui.api.get(path)
        except httpx.TimeoutException:
            # One slow answer on a busy 2-core machine is not a failure; an API server silent this long is.
            silent = time.monotonic() - answered
            assert silent < API_SILENCE_S, f"no answer from the API for {silent:.0f} s\n{airflow_ui.log_tails()}"
            continue
        answered = time.monotonic()
        assert response.status_code == 200, response.text
        run = response.json()
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run.get("state") == state, f"{dag_id} run {run_id}: {run.get('state')}\n{airflow_ui.log_tails()}"
    return run


def _screenshot_run(ui: Any, airflow_ui: Any, dag_id: str, run_id: str, shot: Path) -> None:
    ui.get(f"{airflow_ui.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}")
    _wait(ui, lambda d: run_id in _body_text(d) and "Success" in _body_text(d), what="the run page, successful")
    ui.save_screenshot(str(shot))


def test_a_batch_run_triggered_from_the_ui_publishes_a_lookup_version(
    ui: Any, airflow_ui: Any, world: Any, artifacts: Path
) -> None:
    dag_id = f"batch_predictions__{UC}"
    run_id = _trigger_from_ui(ui, airflow_ui, dag_id, artifacts / "03_batch_trigger_form.png", lambda d: None)
    run = _wait_for_run(airflow_ui, dag_id, run_id)
    _screenshot_run(ui, airflow_ui, dag_id, run_id, artifacts / "04_batch_run.png")

    assert run["run_type"] == "manual" and run["triggered_by"] == "ui"
    store = open_lookup_store(world.settings)
    active = store.active(TableSpec.for_usecase(world.usecase, world.settings))
    assert active is not None and active.row_count > 0
    assert active.data_interval_end == datetime.fromisoformat(run["data_interval_end"])
    mine = [r for r in store.runs(UC, 10) if r.run_id == run_id]
    assert [r.outcome for r in mine] in (["published"], ["reused"])  # "reused" if the scheduler's run came first

    # Materialization follows the publish by itself: its DAG is active from creation, scheduled on the asset.
    materialize = f"materialize_features__{UC}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runs: list[dict[str, Any]] = []
    while not any(r["state"] == "success" for r in runs):
        assert time.monotonic() < deadline, (
            f"{materialize} did not follow the publish: {runs}\n{airflow_ui.log_tails()}"
        )
        assert not any(r["state"] == "failed" for r in runs), f"{runs}\n{airflow_ui.log_tails()}"
        time.sleep(2)
        runs = airflow_ui.api.get(f"/dags/{materialize}/dagRuns").json()["dag_runs"]
    assert {r["run_type"] for r in runs} == {"asset_triggered"}
    dag = airflow_ui.api.get(f"/dags/{materialize}").json()
    assert dag["is_paused"] is False


def test_the_cutover_form_opens_clean_and_an_empty_trigger_creates_no_run(
    ui: Any, airflow_ui: Any, artifacts: Path
) -> None:
    dag_id = f"cutover__{UC}"
    submit = _open_form(ui, airflow_ui, dag_id)
    _wait(ui, _visible("#element_reason"), what="the params of the form")
    ui.save_screenshot(str(artifacts / "05a_cutover_form_blank.png"))
    assert "This field is required" not in _body_text(ui)  # nothing is typed yet: no error shown
    unpause = _wait(ui, lambda d: _unpause_checkbox(d, dag_id), what="the unpause-on-trigger box")
    # The UI unpauses before it triggers, refused or not: keep the DAG paused for the run test below.
    ui.execute_script("arguments[0].click();", unpause)
    _wait(ui, lambda d: not unpause.is_selected(), what="the unpause box unticked")
    _wait(ui, lambda d: submit.is_enabled(), what="the form to allow a trigger")
    submit.click()  # no stage, no reason: the trigger endpoint validates the params and refuses
    _wait(ui, lambda d: "param stage" in _body_text(d) or "param reason" in _body_text(d), what="the refusal")
    ui.save_screenshot(str(artifacts / "05b_cutover_form_refused.png"))
    assert airflow_ui.api.get(f"/dags/{dag_id}/dagRuns").json()["total_entries"] == 0


def test_every_other_trigger_form_is_shown(ui: Any, airflow_ui: Any, artifacts: Path) -> None:
    for n, prefix in enumerate(("materialize_features", "shadow_report")):
        _open_form(ui, airflow_ui, f"{prefix}__{UC}")
        ui.save_screenshot(str(artifacts / f"08{'ab'[n]}_{prefix}_trigger_form.png"))
        assert "This field is required" not in _body_text(ui)


def test_a_cutover_run_with_params_from_the_ui_moves_the_flag(
    ui: Any, airflow_ui: Any, world: Any, artifacts: Path
) -> None:

    dag_id = f"cutover__{UC}"
    flags = FlagStore.from_settings(world.settings)
    try:
        flags.ensure_schema()
        assert flags.get(UC).stage is Stage.BATCH

        def fill(driver: Any) -> None:
            stage = _css(driver, "#element_stage input[role=combobox]")  # a react-select, typed into
            stage.click()
            stage.send_keys("shadow", Keys.ENTER)
            _css(driver, "#element_reason").send_keys("shadow from the Airflow UI")
            _css(driver, "#element_actor").send_keys("selenium")

        run_id = _trigger_from_ui(ui, airflow_ui, dag_id, artifacts / "05_cutover_trigger_form.png", fill)
        run = _wait_for_run(airflow_ui, dag_id, run_id)
        _screenshot_run(ui, airflow_ui, dag_id, run_id, artifacts / "06_cutover_run.png")

        assert run["conf"] == {
            "stage": "shadow",
            "percent": 10,  # the form's default, ignored outside canary
            "reason": "shadow from the Airflow UI",
            "actor": "selenium",
            "force": False,
        }
        flag = flags.get(UC)
        assert (flag.stage, flag.updated_by, flag.reason) == (Stage.SHADOW, "selenium", "shadow from the Airflow UI")
        entry = flags.history(UC, 1)[0]
        assert (entry.source, entry.outcome, entry.detail) == ("airflow", "applied", f"run {run_id}")
    finally:
        flags.close()

    # The task's log, as the UI shows it, names the change.
    ui.get(f"{airflow_ui.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/set_flag")
    _wait(ui, lambda d: "batch → shadow" in _body_text(d), what="the set_flag log in the UI")
    ui.save_screenshot(str(artifacts / "07_cutover_task_log.png"))


def test_a_refused_move_fails_the_run_with_one_line_in_the_forms_words(
    ui: Any, airflow_ui: Any, world: Any, artifacts: Path
) -> None:
    dag_id = f"cutover__{UC}"

    def fill(driver: Any) -> None:  # shadow → online skips canary, and Force is left off
        stage = _css(driver, "#element_stage input[role=combobox]")
        stage.click()
        stage.send_keys("online", Keys.ENTER)
        _css(driver, "#element_reason").send_keys("skip canary")

    run_id = _trigger_from_ui(ui, airflow_ui, dag_id, artifacts / "09_cutover_refused_form.png", fill, paused=False)
    _wait_for_run(airflow_ui, dag_id, run_id, state="failed")
    ui.get(f"{airflow_ui.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/set_flag")
    line = f"refused: {UC}: shadow → online skips canary; the flag is unchanged: trigger again moving one stage"
    _wait(ui, lambda d: line in _body_text(d), what="the refusal in the set_flag log")
    ui.save_screenshot(str(artifacts / "10_cutover_refused_log.png"))
    assert "--force" not in _body_text(ui)


def test_a_second_server_on_the_same_state_dir_is_refused(airflow_ui: Any, cli_env: dict[str, str]) -> None:

    done = subprocess.run(
        [str(Path(sys.executable).parent / "migrate"), "airflow", "--port", str(free_port())],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "another `migrate airflow` already runs on the state dir" in done.stderr, done.stderr
    assert airflow_ui.process.poll() is None


def test_ctrl_c_stops_every_component(airflow_ui: Any) -> None:
    cli = psutil.Process(airflow_ui.process.pid)
    components = cli.children()
    tree = cli.children(recursive=True)
    assert len(components) >= 3, [c.cmdline() for c in components]

    airflow_ui.process.send_signal(signal.SIGINT)
    assert airflow_ui.process.wait(airflow_ui.stop_timeout_s) == 0, "\n".join(airflow_ui.output[-30:])
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    port = int(airflow_ui.url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert "Airflow stopped." in airflow_ui.output


def test_a_port_in_use_is_refused_with_the_fix(cli_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(Path(sys.executable).parent / "migrate"), "airflow", "--port", str(port)],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "fix:" in done.stderr and "--port" in done.stderr and "Traceback" not in done.stderr
