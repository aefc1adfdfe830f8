"""The docs name only files and modules that exist, so a later move cannot leave README.md or docs/*.md stale.

Checked in README.md and docs/*.md:

- a repository path anywhere in the text (``migrate/cli/main.py``, ``online/serving/``, ``docs/concepts.md``):
  a file or folder of the tree;
- a backticked bare file name (``report.py``): some file of the tree has it, or `migrate init` writes it;
- a backticked dotted name under a package (``online.kafka``, ``migrate.scoring.score``) and every
  ``from <package>... import a, b`` in the text: the module is found by `importlib.util.find_spec`, and each name
  after it is defined there (followed through the module's own imports, and one level into a class);
- a relative Markdown link: the file exists.

Modules are found without importing them (only their parent packages), so a missing extra cannot fail this test.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("migrate", "online", "comparisons", "lookup_tables")
FOLDERS = (*PACKAGES, "dags", "bench", "tests", "docs", "usecases")

# Names that look like paths or modules but are not, or are historical on purpose. Keep this short.
ALLOWED: frozenset[str] = frozenset()

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(rf"(?<![\w./<>-])((?:{'|'.join(FOLDERS)})/[\w./-]*)")
_DOTTED = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)+)(?:\(.*)?$")
_FROM = re.compile(rf"\bfrom ((?:{'|'.join(PACKAGES)})(?:\.\w+)*) import ([\w, ]+)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_FILE_SUFFIXES = {"py", "yaml", "yml", "json", "toml", "md", "txt", "parquet", "duckdb", "db"}


@cache
def _bare_names() -> frozenset[str]:
    """File names of the tree's packages, with the ``.py`` files `migrate init` renders from its templates."""
    names = {path.name.removesuffix(".tmpl") for folder in FOLDERS for path in (ROOT / folder).rglob("*.py*")}
    return frozenset(names)


def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST | tuple[str, str]]:
    """What a module (or class) body defines: functions, classes, assignments, and imports as (module, name)."""
    found: dict[str, ast.AST | tuple[str, str]] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.update({target.id: node for target in targets if isinstance(target, ast.Name)})
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update({alias.asname or alias.name: (node.module, alias.name) for alias in node.names})
        elif isinstance(node, ast.If | ast.Try | ast.With):  # imports under `with warnings.catch_warnings():`
            found.update(_names_in(node.body))
    return found


@cache
def _module_names(module: str) -> dict[str, ast.AST | tuple[str, str]]:
    spec = find_spec(module)
    assert spec is not None and spec.origin is not None
    return _names_in(ast.parse(Path(spec.origin).read_text()).body)


def _module(dotted: str) -> tuple[str, list[str]] | None:
    """The longest prefix of ``dotted`` that is a module (no leaf is imported), and the names after it."""
    parts = dotted.split(".")
    for end in range(1, len(parts) + 1):
        spec = find_spec(".".join(parts[:end]))
        if spec is None:  # not a submodule: a name the package defines, or nothing
            return (".".join(parts[: end - 1]), parts[end - 1 :]) if end > 1 else None
        if spec.submodule_search_locations is None:  # a plain module: the rest are names in it
            return ".".join(parts[:end]), parts[end:]
    return dotted, []


def _defines(module: str, names: list[str]) -> bool:
    if not names:
        return True
    found = _module_names(module).get(names[0])
    if isinstance(found, tuple):
        origin, name = found
        return _defines(origin, [name, *names[1:]]) if origin.split(".")[0] in PACKAGES else True
    if isinstance(found, ast.ClassDef) and len(names) > 1:
        return names[1] in _names_in(found.body)
    return found is not None


def _problems(doc: Path) -> list[str]:
    text = doc.read_text()
    prose = _FENCE.sub("", text)
    problems = []
    for path in {match.rstrip(".") for match in _PATH.findall(text)} - ALLOWED:
        if not (ROOT / path).exists():
            problems.append(f"{path}: no such file or folder")
    for span in set(_SPAN.findall(prose)) - ALLOWED:
        if re.fullmatch(r"\w+\.py", span) and span not in _bare_names():
            problems.append(f"{span}: no file of that name")
        dotted = _DOTTED.match(span)
        if dotted and dotted[1].rsplit(".", 1)[1] not in _FILE_SUFFIXES:  # `migrate.yaml`, `online.py`: file names
            found = _module(dotted[1])
            if found is None or not _defines(*found):
                problems.append(f"{dotted[1]}: no such module or name")
    for module, names in _FROM.findall(text):
        for name in (name.strip() for name in names.split(",") if name.strip()):
            found = _module(f"{module}.{name}")
            if found is None or not _defines(*found):
                problems.append(f"from {module} import {name}: no such module or name")
    for target in _LINK.findall(text):
        if not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
            problems.append(f"link {target}: no such file")
    return sorted(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_docs_name_only_what_exists(doc: Path) -> None:
    problems = _problems(doc)
    assert not problems, f"{doc.relative_to(ROOT)} names what the tree does not have:\n" + "\n".join(problems)
