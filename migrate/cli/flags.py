"""``migrate flags``: show, change and audit the per-use-case cutover flags."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer
from rich.table import Table

from migrate.cli.support import console, friendly
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Flag, Stage
from migrate.registry import Registry
from migrate.settings import get_settings

__all__ = ["flags_app"]

flags_app = typer.Typer(
    help="Cutover flags: which path serves each use case (batch → shadow → canary → online → online_only).",
    no_args_is_help=True,
)


def _store() -> FlagStore:
    store = FlagStore.from_settings(get_settings())
    store.ensure_schema()
    return store


def _default_actor() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container: say so rather than guess
        return "unknown"


def _when(flag: Flag) -> str:
    return "never set" if flag.updated_at is None else f"{flag.updated_at:%Y-%m-%d %H:%M:%S}Z"


@flags_app.command("set")
@friendly
def flags_set(
    usecase: str,
    *,
    stage: Annotated[Stage, typer.Option(help="The stage to move to.", case_sensitive=False)],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit.")],
    percent: Annotated[
        int | None, typer.Option(help="Canary only: share of entities served online, 1..99.", show_default=False)
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who; default: $USER.", show_default=False)] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow skipping stages forward (e.g. batch → canary); audited.")
    ] = False,
) -> None:
    """Move a use case to another stage; every attempt is audited."""
    Registry(get_settings().usecases_dir).get(usecase)
    store = _store()
    try:
        flag = store.set(
            usecase, stage, percent, actor=actor or _default_actor(), reason=reason, source="cli", force=force
        )
    finally:
        store.close()
    console.print(f"[green]{usecase}[/] is at [bold]{flag.describe()}[/] (revision {flag.revision})", highlight=False)


@flags_app.command("show")
@friendly
def flags_show(usecase: Annotated[str | None, typer.Argument(help="One use case; default: all.")] = None) -> None:
    """The flag of every registered use case (or of one)."""
    registry = Registry(get_settings().usecases_dir)
    names = [registry.get(usecase).name] if usecase else [uc.name for uc in registry.load_all()]
    store = _store()
    try:
        stored = store.get_all()
    finally:
        store.close()
    table = Table("use case", "stage", "percent", "revision", "updated (UTC)", "by", "reason")
    for column in table.columns[:5]:  # names and stages whole (`online_only`, not `online_on` / `ly`); reasons wrap
        column.no_wrap = True
    for name in names + sorted(set(stored) - set(names) if usecase is None else []):
        flag = stored.get(name, Flag(name))
        label = name if name in names else f"{name} [dim](not registered)[/]"
        table.add_row(
            label,
            flag.stage.value,
            "" if flag.percent is None else f"{flag.percent}%",
            str(flag.revision),
            _when(flag),
            flag.updated_by or "",
            flag.reason or "",
        )
    console.print(table)


@flags_app.command("history")
@friendly
def flags_history(
    usecase: Annotated[str | None, typer.Argument(help="One use case; default: all.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest entries to show.")] = 20,
) -> None:
    """The audit of flag changes, newest first: applied and refused, by whom, from where and why."""
    store = _store()
    try:
        entries = store.history(usecase, limit)
    finally:
        store.close()
    table = Table("#", "at (UTC)", "use case", "change", "outcome", "source", "actor", "reason", "detail")
    for column in table.columns[:5]:
        column.no_wrap = True
    for entry in entries:
        outcome = "[green]applied[/]" if entry.outcome == "applied" else "[red]refused[/]"
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.usecase,
            entry.describe_change(),
            outcome,
            entry.source,
            entry.actor,
            entry.reason,
            entry.detail or "",
        )
    console.print(table)
