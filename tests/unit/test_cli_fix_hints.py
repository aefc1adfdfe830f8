"""Every `migrate …` command that an error's fix names exists, with the options it names (read from the source).

Before: several hints named `migrate lookup versions`, which never existed (`migrate lookup show` lists them).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from migrate.cli.main import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("migrate", "online", "comparisons", "lookup_tables", "dags")
HOLE = "X"  # what an f-string's value reads as: a use-case name, a port, a time


def _text(node: ast.AST, names: dict[str, ast.AST]) -> str | None:
    """The text of a string expression (f-string values as `HOLE`, both branches of a conditional)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else HOLE for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, names), _text(node.right, names)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.IfExp):
        return f"{_text(node.body, names) or ''}\n{_text(node.orelse, names) or ''}"
    if isinstance(node, ast.Name) and node.id in names:
        return _text(names[node.id], names)
    return None  # a parameter passed through (the error classes): its callers' texts are scanned


def fix_texts() -> dict[str, str]:
    """`file:line` → the text of every ``fix=`` argument in the packages."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            names = {
                target.id: node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    for keyword in node.keywords:
                        text = _text(keyword.value, names) if keyword.arg == "fix" else None
                        if text is not None:
                            found[f"{file.relative_to(ROOT)}:{node.lineno}"] = text
    return found


def problems_of(command_line: str, root: Any) -> list[str]:
    """Why `command_line` (``migrate lookup show X``) would not run, or nothing."""
    words = command_line.split()[1:]
    command, path = root, ["migrate"]
    # Typer 0.29 carries its own copy of click: groups are told by their sub-commands, parameters by their kind.
    while hasattr(command, "commands") and words and words[0] in command.commands:
        path.append(words[0])
        command = command.commands[words.pop(0)]
    if hasattr(command, "commands"):
        following = f" {words[0]!r}" if words else ""
        return [f"{' '.join(path)} has no command{following}; it has {sorted(command.commands)}"]
    options = {name: param for param in command.params for name in param.opts if param.param_type_name == "option"}
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    problems, positional, i = [], 0, 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            option = options.get(name)
            if option is None:
                problems.append(f"{' '.join(path)} has no option {name}; it has {sorted(options)}")
            elif not option.is_flag and "=" not in word:
                i += 1  # its value
        else:
            positional += 1
        i += 1
    required = sum(1 for argument in arguments if argument.required)
    if not required <= positional <= len(arguments):
        problems.append(f"{' '.join(path)} takes {len(arguments)} argument(s), {required} required; named {positional}")
    return problems


def commands_in(text: str) -> list[str]:
    return re.findall(r"`(migrate [^`]*)`", text)


def test_every_fix_hint_names_a_command_that_parses() -> None:
    root = typer.main.get_command(app)
    texts = fix_texts()
    hints = {where: commands_in(text) for where, text in texts.items() if commands_in(text)}
    assert len(texts) > 100 and len(hints) > 20  # the scan reads the fixes (a broken scan finds none)
    unquoted = {where: text for where, text in texts.items() if re.search(r"(?<!`)\bmigrate [a-z]", text)}
    assert unquoted == {}, "write the command in backticks, so that this test checks it"
    wrong = {
        f"{where}: `{line}`": problem
        for where, lines in hints.items()
        for line in lines
        for problem in problems_of(line, root)
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("migrate lookup versions X", "migrate lookup has no command 'versions'"),
        ("migrate serve --force", "migrate serve has no option --force"),
        ("migrate train", "takes 1 argument(s), 1 required; named 0"),
        ("migrate usecases", "migrate usecases has no command"),
    ],
)
def test_the_check_finds_what_would_not_run(line: str, problem: str) -> None:
    assert any(problem in found for found in problems_of(line, typer.main.get_command(app)))


def test_the_check_passes_what_runs() -> None:
    root = typer.main.get_command(app)
    for line in ("migrate lookup show X", "migrate serve --port X", "migrate flags set X --stage shadow --reason …"):
        assert problems_of(line, root) == [], line


@pytest.mark.parametrize("name", ["delivery_eta", "item_availability", "fraud_detection", "churn_risk"])
def test_a_missing_table_names_the_use_cases_own_way_to_create_it(name: str) -> None:
    import duckdb  # noqa: PLC0415 - the batch extra

    from migrate.batch.offline_store import check_columns  # noqa: PLC0415 - the batch extra
    from migrate.errors import OfflineStoreError  # noqa: PLC0415 - beside its use

    with duckdb.connect() as con, pytest.raises(OfflineStoreError) as caught:
        check_columns(con, f"{name}_features", ["x"], usecase_file=f"usecases/{name}.yaml")
    fix = caught.value.fix or ""
    generator = re.search(r"\((migrate\.examples\.(\w+)\.generator)\.generate\)", fix)
    others = {"delivery_eta", "item_availability", "fraud_detection"} - {name}
    assert not any(other in fix for other in others), fix
    if name == "churn_risk":  # not an example: no generator to name
        assert generator is None and "sample.py" in fix, fix
    else:
        assert generator is not None and generator.group(2) == name, fix
        assert callable(importlib.import_module(generator.group(1)).generate)
        # Whether `migrate demo` is offered follows what the demo generates (its imports), not a list kept here.
        story = (ROOT / "migrate" / "demo" / "story.py").read_text()
        assert ("`migrate demo`" in fix) == (f"migrate.examples.{name}.generator import" in story), fix
