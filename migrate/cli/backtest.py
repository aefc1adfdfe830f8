"""``migrate backtest`` and ``migrate rehearse``: a use case judged on its own history, before live traffic."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer

from migrate.cli.support import as_utc, console, friendly
from migrate.registry import Registry
from migrate.settings import get_settings

__all__ = ["register"]


@contextmanager
def _stages() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage a long command reports as ``(stage, done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up cost: a command imports its dependencies when it runs

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress


@friendly
def backtest(
    usecase: str,
    start: Annotated[datetime, typer.Option("--from", help="First past instant to answer (UTC when no zone).")],
    until: Annotated[datetime, typer.Option("--until", help="End of the range, excluded (UTC when no zone).")],
    requests: Annotated[
        str | None,
        typer.Option(
            help="Offline-store table of past requests (entity keys, a time column, context values); "
            "default: the use case's training spine."
        ),
    ] = None,
    time_column: Annotated[str, typer.Option(help="The requests table's time column.")] = "request_time",
) -> None:
    """Answer past requests by both paths from history (nightly batch versions, point-in-time features), in the
    shadow log's format; then `migrate gate <uc> --backtest`."""
    from migrate.backtest.runner import run_backtest  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    found = Registry(settings.usecases_dir).get(usecase)
    first, last = as_utc(start), as_utc(until)
    assert first is not None and last is not None
    with _stages() as progress:
        result = run_backtest(
            found, settings, first, last, requests_table=requests, time_column=time_column, progress=progress
        )
    console.print(
        f"[green]✓[/] backtest of {usecase} {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC: "
        f"{result.requests:,} requests answered by both paths ({result.batch_misses:,} without a lookup row), "
        f"{result.nights} nightly lookup versions, {result.labels:,} labels; models "
        + ", ".join(f"{role} {version}" for role, version in result.models.items()),
        highlight=False,
    )
    if result.skipped_days:
        console.print(f"  resumed: {result.skipped_days} days were already written", highlight=False)
    if result.invalid_label_events:
        console.print(
            f"  left out: {result.invalid_label_events:,} events of the label stream's history that its schema "
            "refuses (a null key, a value of the wrong type): no label, as the sink would dead-letter them",
            highlight=False,
        )
    if result.refused_requests:
        console.print(
            f"  not answered: {result.refused_requests:,} past requests whose context serving refuses (a value "
            "outside its declared bounds, a required one missing), as serving would answer them 422",
            highlight=False,
        )
    for stream, refused in result.refused_feature_events.items():
        if refused:
            console.print(
                f"  left out: {refused:,} events of the {stream!r} stream's history that the stream processor refuses "
                "(a null key, time or id, NaN or infinity, an empty string): not in the online path's windows, as "
                "serving's stream dead-letters them",
                highlight=False,
            )
    console.print(f"  in {result.settings.state_dir}; judge it: migrate gate {usecase} --backtest", highlight=False)


@friendly
def rehearse(  # noqa: PLR0917 - a Typer command: each parameter is one of its options
    usecase: str,
    start: Annotated[datetime, typer.Option("--from", help="First past instant to replay (UTC when no zone).")],
    until: Annotated[datetime, typer.Option("--until", help="End of the range, excluded (UTC when no zone).")],
    speed: Annotated[float, typer.Option(min=1.0, help="Simulated seconds per wall second.")] = 600.0,
    requests: Annotated[
        str | None,
        typer.Option(help="Offline-store table of past requests; default: the use case's training spine."),
    ] = None,
    time_column: Annotated[str, typer.Option(help="The requests table's time column.")] = "request_time",
) -> None:
    """Replay the range live on one simulated clock (stream, serve, sink, events, the nightly batch), one request
    per past request at its time, then give the comparator's verdict."""
    from migrate.demo.rehearse import run_rehearsal  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    found = Registry(settings.usecases_dir).get(usecase)
    first, last = as_utc(start), as_utc(until)
    assert first is not None and last is not None
    with _stages() as progress:
        result = run_rehearsal(
            found,
            settings,
            first,
            last,
            speed=speed,
            requests_table=requests,
            time_column=time_column,
            progress=progress,
        )
    assert result.comparison is not None
    verdict = result.comparison.verdict
    console.print(
        f"[green]✓[/] rehearsal of {usecase} {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC at {speed:g}×: "
        f"{result.traffic.requests:,} requests ({result.traffic.errors:,} errors), {result.nights} nightly batch runs",
        highlight=False,
    )
    console.print(f"[bold]verdict: {verdict.decision.upper()}[/]", highlight=False)
    for reason in verdict.reasons:
        console.print(f"  • {reason}", highlight=False)
    console.print(f"  in {result.settings.state_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``backtest`` and ``rehearse`` to the ``migrate`` command line."""
    app.command("backtest")(backtest)
    app.command("rehearse")(rehearse)
