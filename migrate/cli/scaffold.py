"""Scaffolding: the files `migrate init <name>` writes, so that a new use case runs through the loop unedited.

Three things, rendered from ``migrate/cli/templates/scaffold/``:

- ``<usecases_dir>/<name>.yaml``: a commented use case (binary or regression label) that validates as written;
- ``<package_dir>/<name>/``: a package with ``training.py`` (a trainer for either label kind over the declared
  tables) and ``sample.py`` (a tiny synthetic dataset of those tables);
- ``<package_dir>/<name>/tests/test_<name>.py``: the YAML validates, the trainer returns the declared features,
  and the batch loop runs on the sample.

Nothing is overwritten: an existing use case, package or importable module of the same name is refused before
any file is written. The generated modules' imports are sorted as ruff's isort sorts them where they are written:
`migrate` is first-party inside this repository and third-party in a project that installs it (`first_party`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError

from migrate.errors import ConfigError, UseCaseError
from migrate.usecase import IDENTIFIER, UseCase

__all__ = ["UNFILLED", "Kind", "Scaffold", "first_party", "render", "scaffold", "sort_imports", "unfilled"]

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


_RUFF_FILES = (".ruff.toml", "ruff.toml", "pyproject.toml")
_SECTIONS = ("future", "stdlib", "third-party", "first-party")


def _ruff_config(directory: Path) -> tuple[Path, dict[str, object]] | None:
    """The ruff project holding `directory`, as ruff finds it: the nearest ``.ruff.toml``, ``ruff.toml`` or
    ``pyproject.toml`` with a ``[tool.ruff]`` table, going up; (its directory, its ruff settings)."""
    for folder in (directory, *directory.parents):
        for file_name in _RUFF_FILES:
            file = folder / file_name
            if not file.is_file():
                continue
            try:
                data = tomllib.loads(file.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                continue  # ruff would refuse it too; the generated code cannot follow what cannot be read
            section = data if file_name != "pyproject.toml" else data.get("tool", {}).get("ruff")
            if isinstance(section, dict):
                return folder, section
    return None


def first_party(package: Path) -> frozenset[str]:
    """The top-level modules ruff's isort calls first-party in the files of `package` (which need not exist yet):
    the package itself, every module in the ``src`` roots of the ruff project holding it (default: its directory
    and its ``src/``) and its ``known-first-party``. Inside this repository that includes `migrate`."""
    modules = {package.name}
    found = _ruff_config(package.parent)
    if found is None:
        return frozenset(modules)
    root, config = found
    sources = config.get("src", [".", "src"])
    for entry in sources if isinstance(sources, list) else []:
        folder = root / str(entry)
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and child.name.isidentifier():
                    modules.add(child.name)
                elif child.suffix in (".py", ".pyi") and child.stem.isidentifier():
                    modules.add(child.stem)
    for table in (config.get("lint"), config):  # lint.isort, or the older top-level isort table
        isort = table.get("isort") if isinstance(table, dict) else None
        known = isort.get("known-first-party") if isinstance(isort, dict) else None
        modules.update(str(name) for name in known or [])
    return frozenset(modules)


def _section(module: str, first: frozenset[str]) -> str:
    top = module.split(".", maxsplit=1)[0]
    if top == "__future__":
        return "future"
    if top in sys.stdlib_module_names:  # before the source roots, as ruff decides
        return "stdlib"
    return "first-party" if top in first else "third-party"


def sort_imports(text: str, first: frozenset[str]) -> str:
    """`text` with its first block of one-line imports sorted as ruff's isort does by default: sections (future,
    standard library, third party, first party) one blank line apart; in each, ``import x`` before ``from x import``,
    by module name. The templates keep imports one per line, so no statement wraps."""
    lines = text.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.startswith(("import ", "from "))), None)
    if begin is None:
        return text
    end = begin
    statements: list[str] = []
    for index in range(begin, len(lines)):
        line = lines[index]
        if line.startswith(("import ", "from ")):
            statements.append(line.rstrip("\n"))
            end = index + 1
        elif line.strip():
            break
    sections: dict[str, list[tuple[int, str, str]]] = {name: [] for name in _SECTIONS}
    for statement in statements:
        module = statement.split()[1]
        sections[_section(module, first)].append((int(statement.startswith("from ")), module.lower(), statement))
    blocks = ["\n".join(s for *_, s in sorted(found, key=lambda r: r[:2])) for found in sections.values() if found]
    return "".join(lines[:begin]) + "\n\n".join(blocks) + "\n" + "".join(lines[end:])


def render(name: str, kind: Kind, usecase_file: Path, package: Path) -> dict[Path, str]:
    """Every file of the scaffold, path → text (nothing written); imports sorted for where `package` goes."""
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
    first = first_party(package)

    def module(template: str) -> str:
        return sort_imports(_fill(_template(template), values), first)

    return {
        usecase_file: _fill(_template("usecase.yaml.tmpl"), values),
        package / "__init__.py": _fill(_template("package_init.py.tmpl"), values),
        package / "training.py": module("training.py.tmpl"),
        package / "sample.py": module("sample.py.tmpl"),
        tests / "__init__.py": "",
        tests / f"test_{name}.py": module("test_usecase.py.tmpl"),
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
