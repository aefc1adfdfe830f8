"""``migrate gate`` and ``migrate report``: the comparator's verdict and its report, from the shadow log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from migrate.cli.support import console, friendly, steps_bar
from migrate.registry import Registry
from migrate.settings import Settings, get_settings

__all__ = ["register"]

_SINCE = typer.Option(help="Only requests at or after this time (ISO 8601; UTC when no zone is given).")
_UNTIL = typer.Option(help="Only requests before this time (ISO 8601; UTC when no zone is given).")
_COLOURS = {"promote": "green", "hold": "yellow", "rollback": "red"}
_BACKTEST = typer.Option(
    "--backtest", help="Judge the use case's backtest (`migrate backtest`), not its live shadow log."
)


def _settings(usecase: object, backtest: bool) -> Settings:
    """The project's settings, or its backtest's (its own shadow log, labels and lookup versions)."""
    from migrate.backtest.runner import backtest_settings  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.usecase import UseCase  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    assert isinstance(usecase, UseCase)
    settings = get_settings()
    return backtest_settings(settings, usecase) if backtest else settings


def _moment(value: str | None, option: str) -> datetime | None:
    from migrate.errors import InvalidWindowError  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidWindowError(
            f"{option} {value!r} is not a time", fix=f"pass {option} like 2026-11-14T06:00:00+00:00 or 2026-11-14"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _window(since: str | None, until: str | None) -> object:
    from comparisons.shadow_rows import Window  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    return Window(_moment(since, "--since"), _moment(until, "--until"))


@friendly
def gate(
    usecase: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON (for machines).")] = False,
    since: Annotated[str | None, _SINCE] = None,
    until: Annotated[str | None, _UNTIL] = None,
    backtest: Annotated[bool, _BACKTEST] = False,
) -> None:
    """The cutover verdict of a use case from its shadow log: promote, hold or rollback, with reasons."""
    from comparisons.comparison import STEPS, compare  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from comparisons.shadow_rows import Window  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    found = Registry(get_settings().usecases_dir).get(usecase)
    window = _window(since, until)
    assert isinstance(window, Window)
    with steps_bar(f"comparing {usecase}", STEPS) as step:
        result = compare(found, _settings(found, backtest), window, on_step=step)
    verdict = result.verdict
    if as_json:
        typer.echo(json.dumps(verdict.model_dump(mode="json"), indent=2))
        return
    colour = _COLOURS[verdict.decision]
    what = "backtest requests (answers from history)" if result.backtest else "shadow requests"
    console.print(
        f"[bold {colour}]{verdict.decision.upper()}[/] {usecase}: {result.rows:,} {what} "
        f"{result.first_request:%Y-%m-%d %H:%M} → {result.last_request:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
    for reason in verdict.reasons:
        console.print(f"  • {reason}", highlight=False)
    ages = result.staleness
    console.print(
        f"data age p50 (the newest data behind the answer): batch {_age(ages.batch.p50)}, live {_age(ages.live.p50)}",
        highlight=False,
    )
    table = Table("check", "result", "detail")
    for check in verdict.checks:
        mark = {True: "[green]pass[/]", False: "[red]fail[/]", None: "[yellow]n/a[/]"}[check.passed]
        table.add_row(check.name, mark, check.detail)
    console.print(table)
    if result.backtest:
        console.print(
            f"confirm on live traffic: migrate flags set {usecase} --stage shadow --reason …", highlight=False
        )
    elif verdict.decision == "promote" and not verdict.auto_promote:
        console.print(f'act on it: migrate flags set {usecase} --stage … --reason "gate: promote"', highlight=False)


@friendly
def report(
    usecase: str,
    out: Annotated[
        Path | None, typer.Option(help="Directory for the files; default <state_dir>/reports/<usecase>.")
    ] = None,
    since: Annotated[str | None, _SINCE] = None,
    until: Annotated[str | None, _UNTIL] = None,
    backtest: Annotated[bool, _BACKTEST] = False,
) -> None:
    """Write the comparison report (self-contained HTML) and every number (JSON); print the verdict."""
    from comparisons.report import REPORT_STEPS, write_report  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from comparisons.shadow_rows import Window  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    found = Registry(get_settings().usecases_dir).get(usecase)
    window = _window(since, until)
    assert isinstance(window, Window)
    with steps_bar(f"report of {usecase}", REPORT_STEPS) as step:
        result = write_report(found, _settings(found, backtest), out_dir=out, window=window, on_step=step)
    colour = _COLOURS[result.verdict.decision]
    console.print(f"[bold {colour}]{result.verdict.decision.upper()}[/] {usecase}", highlight=False)
    for reason in result.verdict.reasons:
        console.print(f"  • {reason}", highlight=False)
    console.print(f"report: {result.html}\nnumbers: {result.json}", highlight=False)


@friendly
def spine(
    usecase: str,
    since: Annotated[str | None, _SINCE] = None,
    until: Annotated[str | None, _UNTIL] = None,
    table: Annotated[
        str | None,
        typer.Option(help="Offline-store table to write; default training.spine.table, else logged_requests__<uc>."),
    ] = None,
) -> None:
    """Write the logged shadow requests, each with its label, into an offline-store table to train on."""
    from comparisons.logged_spine import export_spine  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from comparisons.shadow_rows import Window  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    found = Registry(settings.usecases_dir).get(usecase)
    window = _window(since, until)
    assert isinstance(window, Window)
    with console.status(f"joining the logged requests of {usecase} with their labels"):
        done = export_spine(found, settings, window, table)
    console.print(
        f"[green]✓[/] {done.written:,} labeled requests ({window.describe()}) → table {done.table} of "
        f"{settings.offline_store_path} ({done.table_rows:,} rows in all)",
        highlight=False,
    )
    left = {"label window still open": done.pending, "closed without a label": done.unlabeled}
    left["delivered twice, kept once"] = done.duplicates
    left["labels that cannot be its label (NaN, ±inf, a binary label not 0 or 1, no event time), not joined"] = (
        done.invalid_labels
    )
    for why, count in left.items():
        if count:
            console.print(f"  left out: {count:,} ({why})", highlight=False)
    label = found.label.name
    console.print(
        f"train on them with training.spine: {{table: {done.table}, time_column: request_time, "
        f"label_column: {label}}} in usecases/{usecase}.yaml",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``gate``, ``report`` and ``spine`` to the ``migrate`` command line."""
    app.command("gate")(gate)
    app.command("report")(report)
    app.command("spine")(spine)
