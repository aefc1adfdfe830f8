"""``migrate init <name>``: scaffold a new use case (YAML, trainer, sample data, tests) that runs unedited."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from migrate.cli.support import console, friendly
from migrate.settings import get_settings

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``init`` to the ``migrate`` command line."""

    @app.command()
    @friendly
    def init(
        name: Annotated[str, typer.Argument(help="The use case's name: lower-case letters, digits and '_'.")],
        kind: Annotated[
            Literal["binary", "regression"],
            typer.Option(help="Label kind: binary (a probability) or regression (a number)."),
        ] = "binary",
        directory: Annotated[
            Path | None,
            typer.Option("--dir", help="Where the package <name>/ goes; default: the project directory."),
        ] = None,
    ) -> None:
        """Write usecases/<name>.yaml, a package <name>/ with a trainer and sample data, and its tests."""
        from migrate.cli.scaffold import scaffold  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

        settings = get_settings()
        package_dir = (directory or settings.project_dir).resolve()
        made = scaffold(name, kind=kind, usecases_dir=settings.usecases_dir, package_dir=package_dir)
        console.print(f"[green]created[/] use case {made.name} ({made.kind})")
        for path in made.files:
            console.print(f"  {path}", highlight=False)
        console.print(
            "next:\n"
            f"  pytest {made.package}   # its tests: the YAML, the trainer, the batch loop on a sample\n"
            f"  python -m {made.name}.sample   # sample tables into the offline store; it prints the next commands\n"
            f"({package_dir} must be importable, e.g. PYTHONPATH={package_dir}, for `migrate train` to find "
            f"{made.name}.training)",
            highlight=False,
        )
