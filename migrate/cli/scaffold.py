"""Scaffolding: the files `migrate init <name>` writes, so that a new use case runs through the loop unedited.

Three things, rendered from ``migrate/cli/templates/scaffold/``:

- ``<usecases_dir>/<name>.yaml``: a commented use case (binary or regression label) that validates as written;
- ``<package_dir>/<name>/``: a package with ``training.py`` (a trainer for either label kind over the declared
  tables) and ``sample.py`` (a tiny synthetic dataset of those tables);
- ``<package_dir>/<name>/tests/test_<name>.py``: the YAML validates, the trainer returns the declared features,
  and the batch loop runs on the sample.

Nothing is overwritten: an existing use case, package or importable module of the same name is refused before
any file is written.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError

from migrate.errors import ConfigError, UseCaseError
from migrate.usecase import IDENTIFIER, UseCase

__all__ = ["UNFILLED", "Kind", "Scaffold", "render", "scaffold", "unfilled"]

Kind = Literal["binary", "regression"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# The marker of what the scaffold leaves for its owner to write (usecase.yaml.tmpl: description, owner, ...).
UNFILLED = re.compile(r"\bTODO\b")
_POLICY: dict[Kind, str] = {
    "binary": """\
  primary_metric: auc              # the metric the verdict judges accuracy on
  max_accuracy_loss: 0.005         # promote only if live AUC is at most 0.005 below batch (interval's worst end)
  decision_threshold: 0.5          # a decision flip: batch and live on either side of it
  disagreement_threshold: 0.05     # |live − batch| that is a disagreement when the noise floor is unknown
""",
    "regression": """\
  primary_metric: mae              # the metric the verdict judges accuracy on (mae or rmse), in label units
  max_accuracy_loss: 0.5           # promote only if live MAE is at most 0.5 above batch (interval's worst end)
  decision_threshold: 10           # a decision flip: batch and live on either side of it (a value that matters)
  disagreement_threshold: 1        # |live − batch| that is a disagreement when the noise floor is unknown
""",
}
_VALIDATION: dict[Kind, str] = {
    "binary": "",  # probabilities: the range [0, 1] is checked by default
    "regression": "    # prediction_min: 0            # the range every prediction must fall in; unset: unchecked\n",
}


@dataclass(frozen=True)
class Scaffold:
    """What `scaffold` wrote."""

    name: str
    kind: Kind
    usecase_file: Path
    package: Path
    files: tuple[Path, ...]

    @property
    def tests(self) -> Path:
        return self.package / "tests" / f"test_{self.name}.py"


def _template(name: str) -> str:
    return resources.files("migrate.cli").joinpath("templates", "scaffold", name).read_text(encoding="utf-8")


def _fill(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]

    return _PLACEHOLDER.sub(one, text)


def render(name: str, kind: Kind, usecase_file: Path, package: Path) -> dict[Path, str]:
    """Every file of the scaffold, path → text (nothing written)."""
    tests = package / "tests"
    values = {
        "name": name,
        "kind": kind,
        "label_type": "bool" if kind == "binary" else "float",
        "policy": _POLICY[kind],
        "validation": _VALIDATION[kind],
        "yaml_relpath": Path(os.path.relpath(usecase_file, tests)).as_posix(),
        "package_relpath": Path(os.path.relpath(package, usecase_file.parent.parent)).as_posix(),
    }
    return {
        usecase_file: _fill(_template("usecase.yaml.tmpl"), values),
        package / "__init__.py": _fill(_template("package_init.py.tmpl"), values),
        package / "training.py": _fill(_template("training.py.tmpl"), values),
        package / "sample.py": _fill(_template("sample.py.tmpl"), values),
        tests / "__init__.py": "",
        tests / f"test_{name}.py": _fill(_template("test_usecase.py.tmpl"), values),
    }


def unfilled(usecase: UseCase) -> list[str]:
    """The fields of `usecase` that still hold a scaffold placeholder (``TODO``), dotted (``label.description``)."""
    found: list[str] = []

    def walk(value: object, where: str) -> None:
        if isinstance(value, str):
            if UNFILLED.search(value):
                found.append(where)
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list | tuple):
            for index, inner in enumerate(value):
                walk(inner, f"{where}[{index}]")

    walk(usecase.model_dump(mode="json"), "")
    return found


def _check_name(name: str, usecase_file: Path, package: Path) -> None:
    if re.match(IDENTIFIER, name) is None:
        raise ConfigError(
            f"{name!r} is not a valid use-case name",
            fix="use lower-case letters, digits and '_', starting with a letter (it names tables and a package)",
        )
    if usecase_file.exists():
        raise UseCaseError(
            str(usecase_file),
            "(file)",
            "already exists; `migrate init` never overwrites a use case",
            fix=f"pick another name, or move {usecase_file} (and {package}) away to start it over",
        )
    if package.exists():
        raise UseCaseError(
            str(usecase_file),
            "model.trainer",
            f"would live in {package}, which already exists",
            fix=f"pick another name, or move {package} away (or pass --dir to put the package elsewhere)",
        )
    found = importlib.util.find_spec(name)
    if found is not None:
        where = found.origin or ", ".join(found.submodule_search_locations or []) or "a built-in module"
        raise ConfigError(
            f"a module named {name!r} is already importable ({where}), so the trainer {name}.training would not "
            "be found",
            fix="pick another name for the use case",
        )


def scaffold(name: str, *, kind: Kind, usecases_dir: Path, package_dir: Path) -> Scaffold:
    """Write the use case `name` (YAML, package, tests); refuse if any of it exists, before writing anything."""
    usecase_file = usecases_dir / f"{name}.yaml"
    package = package_dir / name
    _check_name(name, usecase_file, package)
    files = render(name, kind, usecase_file, package)
    try:
        UseCase.model_validate(yaml.safe_load(files[usecase_file]))
    except ValidationError as exc:  # a long name can make a table name too long, for instance
        first = exc.errors()[0]
        raise UseCaseError(
            str(usecase_file),
            ".".join(str(p) for p in first["loc"]),
            f"the generated use case would be invalid: {first['msg']}",
            fix="pick a shorter or simpler name",
        ) from None
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:  # "x": never replace a file that appeared meanwhile
            out.write(text)
    return Scaffold(name, kind, usecase_file, package, tuple(files))
