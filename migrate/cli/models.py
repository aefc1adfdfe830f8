"""``migrate models``: list a use case's model versions and aliases, promote, roll back, audit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from migrate.artifact import ArtifactStore
from migrate.cli.flags import _default_actor
from migrate.cli.support import console, friendly
from migrate.models import lifecycle
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import ModelAlias
from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

__all__ = ["models_app"]

models_app = typer.Typer(
    help="Model versions of a use case and their aliases (live, candidate, previous): promote, roll back, audit.",
    no_args_is_help=True,
)
Reason = Annotated[str, typer.Option(help="Why; recorded in the audit.")]
Actor = Annotated[str | None, typer.Option(help="Who; default: $USER.", show_default=False)]


def _open(usecase: str) -> tuple[UseCase, ArtifactStore, AliasStore]:
    settings = get_settings()
    uc = Registry(settings.usecases_dir).get(usecase)
    store = AliasStore.from_settings(settings)
    store.ensure_schema()
    return uc, ArtifactStore(settings.artifacts_dir, settings.project_dir), store


def _print_aliases(usecase: str, aliases: dict[str, ModelAlias]) -> None:
    def named(alias: ModelAlias) -> str:
        share = f" (canary {alias.percent}%)" if alias.percent is not None else ""
        return f"{alias.alias} [bold]{alias.version}[/]{share}"

    names = "  ".join(named(aliases[alias]) for alias in ("live", "candidate", "previous") if alias in aliases)
    console.print(f"[green]{usecase}[/]  {names or 'no alias set'}", highlight=False)


@models_app.command("list")
@friendly
def models_list(usecase: str) -> None:
    """Every trained version of the use case, with the aliases that name it."""
    uc, artifacts, store = _open(usecase)
    try:
        aliases = store.get(uc.name)
    finally:
        store.close()
    default = lifecycle.serving_default(uc, artifacts)
    table = Table("version", "role", "aliases", "trained (UTC)", "trained as of", "sha256", "metrics")
    for info in lifecycle.versions(uc, artifacts):
        names = [a for a, alias in aliases.items() if (alias.version, alias.sha256) == (info.version, info.sha256)]
        if "live" not in aliases and default == (info.version, info.sha256):
            names.append("live (default)")
        table.add_row(
            info.version,
            info.role,
            ", ".join(sorted(names)),
            f"{info.trained_at:%Y-%m-%d %H:%M:%S}",
            f"{info.trained_as_of:%Y-%m-%d %H:%M}",
            info.sha256[:12],
            "  ".join(f"{k}={v:.4g}" for k, v in info.metrics.items()),
        )
    console.print(table)


@models_app.command("candidate")
@friendly
def models_candidate(
    usecase: str,
    version: str,
    *,
    reason: Reason,
    canary: Annotated[
        int | None,
        typer.Option(help="Serve it to this % of entities (1..99, sticky per entity); default: shadow only."),
    ] = None,
    actor: Actor = None,
) -> None:
    """Name a trained version the candidate (verified first): scored beside live, served to the canary share."""
    uc, artifacts, store = _open(usecase)
    try:
        who = actor or _default_actor()
        lifecycle.set_candidate(store, artifacts, uc, version, actor=who, reason=reason, source="cli", percent=canary)
        _print_aliases(uc.name, store.get(uc.name))
    finally:
        store.close()


@models_app.command("promote")
@friendly
def models_promote(
    usecase: str,
    *,
    reason: Reason,
    version: Annotated[
        str | None, typer.Option(help="The version to make live; default: the candidate.", show_default=False)
    ] = None,
    actor: Actor = None,
) -> None:
    """Make a version live (verified first: sha256, features, probe); the live one becomes previous."""
    uc, artifacts, store = _open(usecase)
    try:
        aliases = lifecycle.promote(
            store, artifacts, uc, version, actor=actor or _default_actor(), reason=reason, source="cli"
        )
    finally:
        store.close()
    _print_aliases(uc.name, aliases)


@models_app.command("rollback")
@friendly
def models_rollback(usecase: str, *, reason: Reason, actor: Actor = None) -> None:
    """Serve the previous version again (a second rollback undoes the first)."""
    uc, artifacts, store = _open(usecase)
    try:
        aliases = lifecycle.rollback(store, artifacts, uc, actor=actor or _default_actor(), reason=reason, source="cli")
    finally:
        store.close()
    _print_aliases(uc.name, aliases)


@models_app.command("reject")
@friendly
def models_reject(usecase: str, *, reason: Reason, actor: Actor = None) -> None:
    """Clear the candidate: it is no longer scored beside live nor served to a canary."""
    uc, _, store = _open(usecase)
    try:
        cleared = lifecycle.reject_candidate(store, uc, actor=actor or _default_actor(), reason=reason, source="cli")
    finally:
        store.close()
    console.print(
        f"[green]{uc.name}[/] " + (f"candidate {cleared.version} rejected" if cleared else "had no candidate")
    )


@models_app.command("history")
@friendly
def models_history(
    usecase: Annotated[str | None, typer.Argument(help="One use case; default: all.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest entries to show.")] = 20,
) -> None:
    """The audit of alias changes, newest first: applied and refused, by whom, from where and why."""
    store = AliasStore.from_settings(get_settings())
    try:
        store.ensure_schema()
        entries = store.history(usecase, limit)
    finally:
        store.close()
    columns = ["#", "at (UTC)", *([] if usecase else ["use case"]), "action", "change", "outcome", "source", "actor"]
    table = Table(*columns, "reason", "detail")
    for column in table.columns[:3]:
        column.no_wrap = True
    for entry in entries:
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            *([] if usecase else [entry.usecase]),
            entry.action,
            entry.describe_change(),
            "[green]applied[/]" if entry.outcome == "applied" else "[red]refused[/]",
            entry.source,
            entry.actor,
            entry.reason,
            entry.detail or "",
        )
    console.print(table)


@models_app.command("judge")
@friendly
def models_judge(
    usecase: str,
    *,
    apply: Annotated[
        bool, typer.Option("--apply", help="Act on the verdict: promote the candidate, or reject it on rollback.")
    ] = False,
    actor: Actor = None,
) -> None:
    """The cutover policy's verdict on the candidate against the live model, from the shadow log's answers."""
    from comparisons.candidate import judge  # noqa: PLC0415 - start-up cost and extras: DuckDB loads only here

    uc, artifacts, store = _open(usecase)
    try:
        result = judge(uc, get_settings())
        verdict = result.verdict
        colour = {"promote": "green", "hold": "yellow", "rollback": "red"}[verdict.decision]
        console.print(
            f"candidate [bold]{result.candidate_version}[/] vs live [bold]{result.live_version}[/] on "
            f"{result.requests:,} requests: [{colour}]{verdict.decision}[/]",
            highlight=False,
        )
        for reason in verdict.reasons:
            console.print(f"  - {reason}", highlight=False)
        if apply:
            who = actor or _default_actor()
            lifecycle.act_on_verdict(
                store, artifacts, uc, verdict.decision, verdict.reasons[0], actor=who, source="cli"
            )
            _print_aliases(uc.name, store.get(uc.name))
    finally:
        store.close()
