"""``migrate demo``: the batch path end to end on embedded defaults."""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.console import Console

from migrate.settings import Settings
from migrate.usecase import UseCase

USECASE = "item_availability"


def run_demo(console: Console, settings: Settings) -> None:
    """Generate data, train, run the batch DAG twice through Airflow's dag.test(), show the lookup table."""
    from migrate.airflow_runner import ensure_metadata_db, run_dag_test
    from migrate.examples.item_availability.generator import SimulationConfig, generate
    from migrate.lookup_view import print_lookup
    from migrate.registry import Registry
    from migrate.training import train

    usecase = Registry(settings.usecases_dir).get(USECASE)
    settings.ensure_state_dir()
    console.rule(f"[bold]migrate demo — {USECASE}[/] (state in {settings.state_dir})")

    with console.status("1/7 generating stores × products and a simulated fortnight of shopper scans"):
        summary = generate(settings.offline_store_path, SimulationConfig())
    rows = ", ".join(f"{n:,} {table}" for table, n in summary.rows.items())
    console.print(f"[green]✓[/] offline store {settings.offline_store_path}: {rows}")

    last_night = summary.last_batch_cutoff
    with console.status("2/7 training the batch model on batch features"):
        info = train(usecase, settings, last_night - timedelta(days=1))
    console.print(
        f"[green]✓[/] model {info.version} (sha256 {info.sha256[:16]}…) "
        + " ".join(f"{k}={v:.3f}" for k, v in info.metrics.items())
    )

    with console.status("3/7 preparing the embedded Airflow (SQLite metadata DB)"):
        ensure_metadata_db(settings)
    console.print(f"[green]✓[/] Airflow home {settings.airflow_home}")

    dag_id = f"batch_predictions__{USECASE}"
    for night in (last_night - timedelta(days=1), last_night):
        with console.status(f"4/7 dag.test() {dag_id} for the night of {night:%Y-%m-%d %H:%M}Z"):
            log = run_dag_test(settings, dag_id, night)
        console.print(f"[green]✓[/] {dag_id} @ {night:%Y-%m-%d %H:%M}Z succeeded (log: {log})")

    print_lookup(console, usecase, settings)
    uncovered = uncovered_entities(usecase, settings, last_night)
    console.print(
        f"[yellow]limited coverage:[/] {uncovered:,} store × product pairs listed after last night's run "
        f"({summary.new_products} new products) have no row in the lookup table until tomorrow night."
    )
    console.print(
        "Roll back with [bold]migrate lookup rollback item_availability[/]; "
        "applications read the view [bold]lt_item_availability[/] with plain SQL."
    )
    console.rule("[bold]the live path beside batch, in shadow[/]")
    from migrate.demo_shadow import run_shadow

    run_shadow(console, settings, usecase, last_night)


def uncovered_entities(usecase: UseCase, settings: Settings, cutoff: datetime) -> int:
    """Entities that exist now but were listed after the batch run's snapshot: the long tail batch misses."""
    from migrate.offline import open_offline, utc_naive

    source = usecase.entity.source
    with open_offline(settings.offline_store_path) as con:
        row = con.execute(
            f"SELECT count(*) FROM {source.table} WHERE {source.created_at_column} > ?", [utc_naive(cutoff)]
        ).fetchone()
    return int(row[0]) if row else 0
