"""A command whose optional dependency is missing names the extra that brings it, checked against pyproject."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from migrate.cli.support import EXTRAS, friendly, missing_extra
from migrate.errors import MissingExtraError

pytestmark = pytest.mark.unit


def _norm(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


ROOT = Path(__file__).resolve().parents[2]


def _extras() -> dict[str, set[str]]:
    """Each extra's distributions, self-references (``migrate[a,b]``) expanded."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(name: str) -> set[str]:
        found: set[str] = set()
        for requirement in declared[name]:
            dist = _norm(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0])
            if dist == "migrate":
                for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):  # type: ignore[union-attr]
                    found |= expand(inner.strip())
            else:
                found.add(dist)
        return found

    return {name: expand(name) for name in declared}


def _with_requirements(dists: set[str]) -> set[str]:
    """The distributions and those they require directly (apache-airflow brings apache-airflow-core)."""
    found = set(dists)
    for dist in dists:
        for requirement in requires(dist) or []:
            if "extra ==" not in requirement:
                found.add(_norm(re.split(r"[\[<>=!~ ;(]", requirement, maxsplit=1)[0]))
    return found


def test_each_module_is_brought_by_the_extras_it_names() -> None:
    extras = _extras()
    dists = packages_distributions()
    for module, names in EXTRAS.items():
        providers = {_norm(d) for d in dists[module]}
        for name in names:
            assert providers & _with_requirements(extras[name]), f"{module} ({providers}) is not in [{name}]"


def test_the_base_install_needs_no_optional_module() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    base = {_norm(re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]) for r in declared}
    dists = packages_distributions()
    for module in EXTRAS:
        assert not ({_norm(d) for d in dists[module]} & base), f"{module} is optional but in the base dependencies"


def test_missing_extra_names_the_extra_and_the_fix() -> None:
    error = missing_extra(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib.pyplot"))
    assert isinstance(error, MissingExtraError)
    assert "[report]" in error.what and error.fix == "pip install 'migrate[report]' (or 'migrate[all]' for everything)"
    duckdb = missing_extra(ModuleNotFoundError(name="duckdb"))
    assert duckdb is not None and "[batch] or [compare]" in duckdb.what
    assert missing_extra(ModuleNotFoundError(name="not_ours")) is None


def test_a_command_without_its_extra_exits_1_with_the_fix_and_others_still_raise() -> None:
    app = typer.Typer()

    @app.command()
    @friendly
    def plot(module: str) -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    runner = CliRunner()
    result = runner.invoke(app, ["airflow"])
    assert result.exit_code == 1
    assert "pip install 'migrate[airflow]'" in result.stderr and "Traceback" not in result.stderr
    other = runner.invoke(app, ["left_pad"])
    assert isinstance(other.exception, ModuleNotFoundError)
