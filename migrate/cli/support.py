"""What every ``migrate`` sub-command shares: the Rich consoles and the `friendly` error wrapper."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.console import Console

from migrate.errors import MigrateError

__all__ = ["as_utc", "console", "err", "friendly"]

# Piped output (CI logs, `| less`) gets 120 columns rather than Rich's 80, so tables stay readable.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(command: F) -> F:
    """Turn toolkit errors into a message and a fix on stderr, exit code 1, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MigrateError as exc:
            err.print(f"[bold red]error:[/] {exc.what}", highlight=False)
            if exc.fix:
                err.print(f"[bold]fix:[/] {exc.fix}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def as_utc(value: datetime | None) -> datetime | None:
    """A command-line time as aware UTC: a time without a zone is taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
