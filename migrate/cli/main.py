"""The ``migrate`` command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from migrate.artifact import Role
from migrate.cli.airflow import register as register_airflow
from migrate.cli.backtest import register as register_backtest
from migrate.cli.compare import register as register_compare
from migrate.cli.flags import flags_app
from migrate.cli.init import register as register_init
from migrate.cli.models import models_app
from migrate.cli.online import register as register_online
from migrate.cli.stream import register as register_stream
from migrate.cli.support import as_utc, console, err, friendly
from migrate.cli.workflow import WorkflowGroup
from migrate.errors import MigrateError, OfflineStoreError
from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

app = typer.Typer(
    cls=WorkflowGroup,
    help="Move ML use cases from batch predictions to real-time serving, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
usecases_app = typer.Typer(help="The registered use cases.", no_args_is_help=True)
lookup_app = typer.Typer(help="Versioned lookup tables of batch predictions.", no_args_is_help=True)
app.add_typer(usecases_app, name="usecases")
app.add_typer(lookup_app, name="lookup")
app.add_typer(flags_app, name="flags")
app.add_typer(models_app, name="models")
register_online(app)
register_compare(app)
register_backtest(app)
register_airflow(app)
register_stream(app)
register_init(app)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"migrate {package_version('migrate')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Move ML use cases from batch predictions to real-time serving, safely."""


def _usecase(name: str) -> UseCase:
    return Registry(get_settings().usecases_dir).get(name)


@usecases_app.command("list")
@friendly
def usecases_list() -> None:
    """List the registered use cases."""
    table = Table("use case", "owner", "schedule", "lookup table", "keys", "batch features", "label")
    for column in (table.columns[0], table.columns[3]):  # names whole; in a narrow terminal the rest wraps
        column.no_wrap = True
    for usecase in Registry(get_settings().usecases_dir).load_all():
        table.add_row(
            usecase.name,
            usecase.owner,
            usecase.batch.schedule,
            usecase.lookup_table.name,
            ", ".join(usecase.entity.key_names),
            str(len(usecase.feature_names)),
            f"{usecase.label.name} ({usecase.label.kind})",
        )
    console.print(table)


@usecases_app.command("validate")
@friendly
def usecases_validate(
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 on warnings too (a scaffold's TODO left in a field).")
    ] = False,
    tables: Annotated[
        bool,
        typer.Option(
            "--tables/--no-tables",
            help="Also check that the offline store holds every declared table and column (default); "
            "--no-tables checks the YAML only, before the tables are loaded.",
        ),
    ] = True,
) -> None:
    """Validate every use-case file and its offline tables; exit 1 if any is invalid (or, with --strict, still has
    a TODO)."""
    from migrate.cli.scaffold import unfilled  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    registry = Registry(settings.usecases_dir)
    results = registry.validate_all()
    if not results:
        err.print(f"no use-case files in {registry.directory}")
        raise typer.Exit(1)
    store = settings.offline_store_path
    if tables and not store.exists():
        console.print(
            f"[red]error[/] offline store {store} does not exist, so no use case's tables can be checked\n"
            "      [bold]fix:[/] load the tables first (`migrate demo` for the examples, `python -m <name>.sample` "
            "for a scaffold's sample), set MIGRATE_OFFLINE_STORE, or pass --no-tables to check the YAML only",
            highlight=False,
        )
        tables = False
        bad = 1
    else:
        bad = 0
    warned = 0
    for file, outcome in results.items():
        if not isinstance(outcome, UseCase):
            bad += 1
            console.print(f"[red]error[/] {outcome.what}\n      [bold]fix:[/] {outcome.fix}", highlight=False)
            continue
        problems = _table_problems(outcome, store, str(file)) if tables else []
        for problem in problems:
            console.print(f"[red]error[/] {problem.what}\n      [bold]fix:[/] {problem.fix}", highlight=False)
        bad += bool(problems)
        todo = unfilled(outcome)
        if todo:
            warned += 1
            console.print(
                f"[yellow]warn[/]  {file}: still the scaffold's placeholder (TODO) in {', '.join(todo)}\n"
                f"      [bold]fix:[/] write them in {file} (what the model predicts, the team on call, ...)",
                highlight=False,
            )
        elif not problems:
            console.print(f"[green]ok[/]    {file}{' and its tables' if tables else ''}", highlight=False)
    if bad or (strict and warned):
        raise typer.Exit(1)


def _table_problems(usecase: UseCase, store: Path, file: str) -> list[OfflineStoreError]:
    """What the offline store lacks of `usecase`'s declared tables (opened read-only)."""
    from migrate.batch.declared_tables import table_problems  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.batch.offline_store import open_offline  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    with open_offline(store) as con:
        return table_problems(con, usecase, file)


@app.command()
@friendly
def train(
    usecase: str,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            help="Train on data before this time (UTC); default: the newest batch features in the offline store."
        ),
    ] = None,
    online: Annotated[
        bool, typer.Option(help="Train the online model: batch plus real-time features (same window code).")
    ] = False,
) -> None:
    """Train the use case's model and write a new versioned artifact with its sha256."""
    from migrate.batch.offline_store import latest_feature_time, open_offline  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.batch.training import train as run_training  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    uc = _usecase(usecase)
    cutoff = as_utc(as_of)
    if cutoff is None:
        with open_offline(get_settings().offline_store_path) as con:
            cutoff = latest_feature_time(con, uc)
        if cutoff is None:
            raise MigrateError(
                f"the offline store has no rows in {uc.batch_features.table} to train {uc.name} on",
                fix="load features first (for the example: `migrate demo`), or pass --as-of",
            )
    role: Role = "online" if online else "batch"
    with console.status(f"training the {role} model of {uc.name} on data before {cutoff:%Y-%m-%d %H:%M}Z"):
        info = run_training(uc, get_settings(), cutoff, role=role)
    console.print(f"[green]trained[/] {uc.name} {info.version}  sha256 {info.sha256}")
    console.print("  " + "  ".join(f"{k}={v:.4g}" for k, v in info.metrics.items()), highlight=False)


@app.command()
@friendly
def score(
    usecase: str,
    interval_end: Annotated[
        datetime | None, typer.Option(help="End of the data interval (UTC); default: the latest schedule tick.")
    ] = None,
) -> None:
    """Run the batch path outside Airflow: the same steps and code as the DAG."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    from migrate.batch import steps as batch  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.batch.schedule import interval_ending  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    uc = _usecase(usecase)
    interval = interval_ending(uc.batch.schedule, as_utc(interval_end) or datetime.now(UTC))
    settings = get_settings()
    run_id = f"cli__{interval.key}"
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"scoring {uc.name} as of {interval.end:%Y-%m-%d %H:%M}Z", total=None)

        def advance(result: batch.ChunkResult) -> None:
            progress.advance(task, result.rows)

        def total(rows: int) -> None:  # the snapshot's count: the bar reads N/total instead of N/?
            progress.update(task, total=rows)

        result = batch.run_batch(uc, settings, interval, run_id, on_chunk=advance, on_total=total)
    state = "reused" if result.reused else ("published" if result.activated else "kept, not activated")
    console.print(
        f"[green]{state}[/] version {result.version} of {uc.lookup_table.name}: {result.rows:,} rows "
        f"in {result.seconds:.1f} s ({result.rows / max(result.seconds, 1e-9):,.0f} rows/s); {result.reason}"
    )


@lookup_app.command("show")
@friendly
def lookup_show(usecase: str, rows: Annotated[int, typer.Option(help="Sample rows to print.")] = 5) -> None:
    """Versions of the use case's lookup table, and a few rows of the active one."""
    from migrate.batch.versions_view import print_lookup  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    print_lookup(console, _usecase(usecase), get_settings(), rows)


@lookup_app.command("rollback")
@friendly
def lookup_rollback(
    usecase: str,
    to: Annotated[int | None, typer.Option(help="Version to switch to; default: the previous one.")] = None,
) -> None:
    """Switch readers back to a previous version, atomically."""
    from lookup_tables import TableSpec, open_lookup_store  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    uc = _usecase(usecase)
    settings = get_settings()
    info = open_lookup_store(settings).rollback(TableSpec.for_usecase(uc, settings), to=to)
    console.print(
        f"[green]rolled back[/] {uc.lookup_table.name} to version {info.version} "
        f"(model {info.model_version}, {info.row_count:,} rows)"
    )


@app.command()
@friendly
def demo(
    fast: Annotated[bool, typer.Option("--fast", help="A smaller world and a faster clock (CI).")] = False,
) -> None:
    """The whole migration of the example use case on embedded services: batch, shadow, verdict, cutover, costs."""
    from migrate.demo.story import run_demo  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    run_demo(console, get_settings(), fast=fast)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
