"""How ``migrate --help`` reads: the commands grouped and ordered as a migration goes, switches shown as switches.

The groups follow one use case from its first file to its cutover; `WorkflowGroup` lists the commands in this
order under these headings (Typer's help panels), and a command missing here fails a test.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup, TyperOption

__all__ = ["WORKFLOW", "WorkflowGroup"]

WORKFLOW: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1. Start a use case", ("init", "usecases", "train")),
    ("2. Batch path", ("score", "lookup", "materialize")),
    ("3. Real-time features", ("events", "stream", "replay")),
    ("4. Serve and shadow", ("serve", "sink", "services")),
    ("5. Compare the paths", ("gate", "report", "backtest", "rehearse", "spine")),
    ("6. Cut over", ("flags",)),
    ("7. After cutover: model versions", ("models",)),
    ("All of it at once", ("demo", "airflow")),
)
_ORDER = {name: i for i, name in enumerate(name for _, names in WORKFLOW for name in names)}
_PANEL = {name: panel for panel, names in WORKFLOW for name in names}


class WorkflowGroup(TyperGroup):
    """The root command: sub-commands in workflow order, each under its step's heading."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, command in self.commands.items():
            if name in _PANEL:
                command.rich_help_panel = _PANEL[name]  # type: ignore[attr-defined]  # Typer reads it if set

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(self.commands, key=lambda name: _ORDER.get(name, len(_ORDER)))


def _switch_type(self: TyperOption, ctx: Any) -> str | None:
    # Typer's rich help prints a flag's type (`--force <bool>`) as if it took a value; its plain help does not.
    if self.is_flag:
        return None
    shown = _typed(self, ctx)
    # Choices joined by bare bars are one word to Rich, folded mid-name in a narrow column ("onlin|e"): spaced,
    # they wrap between choices.
    return None if shown is None else shown.replace("|", " | ")


_typed = TyperOption.display_type_rich
TyperOption.display_type_rich = _switch_type  # type: ignore[method-assign]
