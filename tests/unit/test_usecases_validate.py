"""`migrate usecases validate` checks the offline tables too: every declared table and column, each problem named.

Found on the flights trial: it said ok for a use case whose tables were not in the offline store at all. The tables
here are the scaffold's own sample (`migrate init`, then its `sample.write`), so the use case is valid as written;
then a table and a column are taken away, by name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from migrate.cli.main import app
from migrate.registry import Registry
from migrate.settings import get_settings

pytestmark = pytest.mark.unit

NAME = "parcel_return"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args])
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project holding one scaffolded use case (its TODOs filled in) and no offline store yet."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("MIGRATE_PROJECT_DIR", str(root))
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path / "state"))
    for name in ("MIGRATE_USECASES_DIR", "MIGRATE_OFFLINE_STORE"):
        monkeypatch.delenv(name, raising=False)
    code, output = run("init", NAME)
    assert code == 0, output
    file = root / "usecases" / f"{NAME}.yaml"
    file.write_text(file.read_text().replace("TODO-team", "logistics").replace("TODO ", "Filled in, "))
    monkeypatch.syspath_prepend(str(root))
    yield root
    for module in [m for m in sys.modules if m == NAME or m.startswith(f"{NAME}.")]:
        del sys.modules[module]


def write_sample() -> Path:
    """The scaffold's sample tables, written into the configured offline store."""
    settings = get_settings()
    sample = importlib.import_module(f"{NAME}.sample")
    sample.write(settings.offline_store_path, Registry(settings.usecases_dir).get(NAME))
    return settings.offline_store_path


def test_a_use_case_whose_tables_hold_every_declared_column_is_ok(project: Path) -> None:
    write_sample()
    code, output = run("usecases", "validate", "--strict")
    assert code == 0, output
    assert output.startswith("ok ") and "and its tables" in output


def test_a_missing_table_and_a_missing_column_are_each_named_with_the_fix(project: Path) -> None:
    store = write_sample()
    with duckdb.connect(str(store)) as con:
        con.execute(f"DROP TABLE {NAME}_features_daily")
        con.execute(f"ALTER TABLE {NAME}_events DROP COLUMN amount")
    code, output = run("usecases", "validate")
    assert code == 1, output
    # Both problems at once, each naming its table (and the column), the use-case file and a fix.
    assert f"offline store has no table '{NAME}_features_daily'" in output
    assert f"offline table '{NAME}_events' lacks column 'amount'" in output
    assert output.count("fix:") == 2 and f"{NAME}.yaml" in output
    assert "ok " not in output


def test_without_an_offline_store_it_says_so_and_no_tables_checks_the_yaml_only(project: Path) -> None:
    code, output = run("usecases", "validate")
    assert code == 1, output
    assert "does not exist" in output and "--no-tables" in output
    code, output = run("usecases", "validate", "--no-tables")
    assert code == 0, output
    assert output.startswith("ok ") and "tables" not in output
