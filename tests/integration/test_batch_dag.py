"""The batch DAG through real Airflow: it loads cleanly, and dag.test() publishes a lookup version."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from typer.testing import CliRunner

from lookup_tables import TableSpec, open_lookup_store
from migrate.batch.training import train
from migrate.cli.main import app
from migrate.examples.item_availability.generator import SimulationConfig, generate
from migrate.registry import Registry
from migrate.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAGS = Path(__file__).resolve().parents[2] / "dags"


def _dagbag() -> Any:

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_loads_with_zero_import_errors() -> None:
    bag = _dagbag()
    assert bag.import_errors == {}
    for usecase in Registry(get_settings().usecases_dir).load_all():
        dag = bag.dags.get(f"batch_predictions__{usecase.name}")
        assert dag is not None
        assert {"migrate", "batch", f"usecase:{usecase.name}"} <= set(dag.tags)
        assert dag.owner == usecase.owner
        assert usecase.lookup_table.name in (dag.doc_md or "")
        assert not dag.catchup and dag.max_active_runs == 1
        assert {t.task_id for t in dag.tasks} == {
            "snapshot",
            "chunks",
            "begin_version",
            "score_chunk",
            "validate",
            "publish",
            "record_run",
        }
        assert dag.get_task("score_chunk").retries == usecase.batch.retries


def test_materialization_follows_every_publish() -> None:
    """The materialize DAG is scheduled on the asset the publish task updates, and is active from creation
    (Airflow creates DAGs paused: a publish would go unmaterialized); the batch DAG starts paused."""
    bag = _dagbag()
    for usecase in Registry(get_settings().usecases_dir).load_all():
        batch = bag.dags[f"batch_predictions__{usecase.name}"]
        materialize = bag.dags[f"materialize_features__{usecase.name}"]
        published = {asset.name for asset in batch.get_task("publish").outlets}
        assert published == {f"migrate.lookup.{usecase.name}"}
        assert {asset.name for asset in materialize.timetable.asset_condition.objects} == published
        assert materialize.is_paused_upon_creation is False
        assert batch.is_paused_upon_creation is not False  # Airflow's default: paused until triggered


def test_parsing_the_dag_file_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('sklearn', 'duckdb', 'pyarrow', 'skops', 'lookup_tables', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAGS / "batch_predictions.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout


def _run_dag(world: Any, night: Any) -> None:
    dag = _dagbag().dags[f"batch_predictions__{world.usecase.name}"]
    run = dag.test(logical_date=night)
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state


def test_dag_test_publishes_then_reruns_idempotently(world: Any, airflow_db: None) -> None:
    store = open_lookup_store(world.settings)
    spec = TableSpec.for_usecase(world.usecase, world.settings)
    night_before = world.cutoff - timedelta(days=1)

    _run_dag(world, night_before)
    first = store.active(spec)
    assert first is not None and first.status == "active"
    assert first.data_interval_end == night_before

    _run_dag(world, world.cutoff)
    active = store.active(spec)
    assert active is not None and active.version != first.version
    assert active.data_interval_end == world.cutoff
    assert active.row_count == world.entities_at_cutoff
    runs = store.runs(world.usecase.name, 10)
    assert {r.outcome for r in runs} == {"published"}

    # Re-running the same interval: same rows, same checksum, no new version, no duplicates.
    _run_dag(world, world.cutoff)
    again = store.active(spec)
    assert again is not None
    assert (again.version, again.checksum, again.row_count) == (active.version, active.checksum, active.row_count)
    assert len([v for v in store.versions(spec) if v.status in ("active", "ready")]) == 2
    assert store.runs(world.usecase.name, 10)[0].outcome == "reused"

    # The CLI runs the same steps outside Airflow: the same checksum for the same interval.
    result = CliRunner().invoke(app, ["score", world.usecase.name, "--interval-end", world.cutoff.isoformat()])
    assert result.exit_code == 0, result.output
    assert "reused" in result.output
    after_cli = store.active(spec)
    assert after_cli is not None and after_cli.checksum == active.checksum

    rows = store.get_many(spec, [(r.key) for r in store.sample(spec, 3)])
    assert len(rows) == 3
    assert all(0.0 <= r.prediction <= 1.0 and r.version == active.version for r in rows.values())

    # Rollback switches readers back to the night before, instantly.
    result = CliRunner().invoke(app, ["lookup", "rollback", world.usecase.name])
    assert result.exit_code == 0, result.output
    rolled = store.active(spec)
    assert rolled is not None and rolled.version == first.version


def test_missing_feature_column_is_a_clear_error(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(world.settings.usecases_dir) / "item_availability.yaml").read_text()
    broken = text.replace(
        "    - {name: product_age_days}", "    - {name: product_age_days}\n    - {name: shelf_temperature}"
    )
    (tmp_path / "item_availability.yaml").write_text(broken)
    monkeypatch.setenv("MIGRATE_USECASES_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["score", "item_availability", "--interval-end", world.cutoff.isoformat()])
    assert result.exit_code == 1
    assert "shelf_temperature" in result.output and "item_features_daily" in result.output
    assert "fix:" in result.output and "Traceback" not in result.output


def test_a_run_without_a_logical_date_fails_at_once_and_names_the_fix(
    world: Any, airflow_db: None, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = _dagbag().dags[f"batch_predictions__{world.usecase.name}"]
    assert dag.get_task("snapshot").retries == world.usecase.batch.retries > 0  # a retry would be possible
    run = dag.test(logical_date=None)  # what a REST trigger with "logical_date": null creates
    assert run.data_interval_start is None
    assert str(run.state) in ("failed", "DagRunState.FAILED"), run.state
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    assert states["snapshot"] == ("failed", 1)  # failed on its first try, not up for retry
    captured = capfd.readouterr()
    text = captured.out + captured.err  # the task's log, as dag.test() prints it
    assert "has no data interval" in text and "logical_date" in text and "fix:" in text
    assert "KeyError" not in text


def test_dag_test_on_a_date_years_back_publishes_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: None
) -> None:
    """History from 2013: `dag.test()` for one of its nights runs every task and publishes that night's version
    (the DAGs start at batch.start_date, 2000-01-01 by default, not at the day they were written)."""
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path / "state"))
    # A lookup store of its own: the 2013 world is not validated against another world's active version.
    monkeypatch.setenv("MIGRATE_SQL_URL", f"sqlite:///{tmp_path / 'lookup.db'}")
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    config = SimulationConfig(stores=3, products=30, days=4, seed=5, start=datetime(2013, 6, 28, tzinfo=UTC))
    summary = generate(settings.offline_store_path, config)
    night = summary.last_batch_cutoff
    assert night.year == 2013
    train(usecase, settings, night)
    run = _dagbag().dags[f"batch_predictions__{usecase.name}"].test(logical_date=night)
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state
    # Published (active: the store holds no newer night).
    versions = open_lookup_store(settings).versions(TableSpec.for_usecase(usecase, settings))
    published = [v for v in versions if v.data_interval_end == night]
    assert len(published) == 1 and published[0].status == "active", versions
    assert (published[0].row_count or 0) > 0


def test_the_batch_run_announces_its_total_before_the_first_chunk(world: Any) -> None:
    """`migrate score`'s bar reads done/total rather than done/? (the total is the snapshot's own count)."""
    from migrate.batch import steps as batch  # noqa: PLC0415 - beside its use
    from migrate.batch.schedule import interval_ending  # noqa: PLC0415 - beside its use

    heard: list[tuple[str, int]] = []
    interval = interval_ending(world.usecase.batch.schedule, world.cutoff)
    result = batch.run_batch(
        world.usecase,
        world.settings,
        interval,
        "progress_total",
        on_chunk=lambda chunk: heard.append(("chunk", chunk.rows)),
        on_total=lambda rows: heard.append(("total", rows)),
    )
    assert heard[0] == ("total", world.entities_at_cutoff)  # counted independently, by the world fixture
    assert [kind for kind, _ in heard[1:]] == ["chunk"] * (len(heard) - 1) and len(heard) > 1
    assert sum(rows for _, rows in heard[1:]) == world.entities_at_cutoff == result.rows
