"""`migrate --help` and friends: workflow order, switches as switches, choices shown, a version, full tables piped."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from migrate.cli.main import app
from migrate.cli.workflow import WORKFLOW
from migrate.cutover.flags import Stage

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, (*path, name))]
    return [(path, command)]


def test_version_is_the_installed_distributions() -> None:
    assert run("--version").strip() == f"migrate {version('migrate')}"


def test_every_command_sits_in_one_workflow_step_and_help_lists_them_in_that_order() -> None:
    root = typer.main.get_command(app)
    placed = [name for _, names in WORKFLOW for name in names]
    assert sorted(placed) == sorted(root.commands)  # each command once, none forgotten
    text = run("--help")
    panels = [text.index(f"─ {panel} ") for panel, _ in WORKFLOW]
    assert panels == sorted(panels)
    listed = re.findall(r"^│ (\w+) ", text, flags=re.MULTILINE)
    assert [name for name in listed if name in root.commands] == placed


def test_switches_are_shown_without_a_value_and_options_with_one() -> None:
    root = typer.main.get_command(app)
    for path, command in _leaves(root):
        text = run(*path, "--help")
        assert "<bool>" not in text, path
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag:
                # A value-taking option shows what it takes (a type or its choices) beside its name.
                name = param.opts[0]
                assert re.search(re.escape(name) + r"\s+(\S+ *)?<", text), (path, name)


def test_choices_are_listed_in_full() -> None:
    assert "<binary | regression>" in run("init", "--help")
    assert "<reject | apply>" in run("materialize", "--help")
    # At 80 columns the list wraps, between choices and never inside a name ("onlin" / "e|online_only" before).
    stage = " ".join(run("flags", "set", "--help").replace("│", " ").split())
    for value in Stage:
        assert re.search(rf"(<| ){value.value}( \||>)", stage), value


def test_a_table_piped_is_printed_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = "team-" + "x" * 150  # wider than any terminal default
    text = (ROOT / "usecases" / "item_availability.yaml").read_text()
    (tmp_path / "item_availability.yaml").write_text(re.sub(r"(?m)^owner: .*$", f"owner: {owner}", text))
    monkeypatch.setenv("MIGRATE_USECASES_DIR", str(tmp_path))
    output = run("usecases", "list")
    assert owner in output and "item_availability " in output and "…" not in output
