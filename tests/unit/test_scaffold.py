"""`migrate init`: the scaffold validates, passes its own generated tests and lint, and never overwrites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from migrate.cli.main import app
from migrate.cli.scaffold import render
from migrate.registry import Registry
from migrate.settings import get_settings

# The project's own lint rules (pyproject.toml), run on the generated code as a user's project would hold it.
RUFF_RULES = ["--select", "E,F,W,I,UP,B,SIM,RUF,PL,S,T20", "--ignore", "PLR0913,PLR2004,S101,S603,S608"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory the CLI resolves its use cases against."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("MIGRATE_PROJECT_DIR", str(root))
    monkeypatch.delenv("MIGRATE_USECASES_DIR", raising=False)
    return root


def init(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["init", *args])
    return result.exit_code, result.output


def test_init_writes_a_use_case_that_passes_its_own_tests(project: Path, tmp_path: Path) -> None:
    assert init("churn_risk")[0] == 0
    code, output = init("basket_value", "--kind", "regression")
    assert code == 0, output
    assert "usecases/basket_value.yaml" in output and "basket_value/training.py" in output
    elsewhere = tmp_path / "packages"
    code, output = init("visit_length", "--kind", "regression", "--dir", str(elsewhere))
    assert code == 0, output
    assert f"PYTHONPATH={elsewhere}" in output

    usecases = {u.name: u for u in Registry(get_settings().usecases_dir).load_all()}
    assert sorted(usecases) == ["basket_value", "churn_risk", "visit_length"]
    assert usecases["churn_risk"].label.kind == "binary"
    assert usecases["basket_value"].label.kind == "regression"
    assert usecases["basket_value"].cutover_policy.primary_metric == "mae"
    assert usecases["churn_risk"].model.trainer == "churn_risk.training:train"
    assert (elsewhere / "visit_length" / "tests" / "test_visit_length.py").is_file()
    assert not (project / "visit_length").exists()

    packages = [str(project / "churn_risk"), str(project / "basket_value"), str(elsewhere / "visit_length")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", *packages],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "9 passed" in done.stdout, done.stdout[-2000:]

    lint = [sys.executable, "-m", "ruff"]
    for command in (
        [*lint, "check", "--isolated", "--line-length", "120", "--target-version", "py311", *RUFF_RULES, "."],
        [*lint, "format", "--isolated", "--line-length", "120", "--check", "."],
    ):
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_init_inside_this_repository_writes_code_its_own_ruff_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on the flights trial: inside the repository `migrate` is first-party, so imports sorted for a project
    that installs it were refused (I001). Checked by ruff itself, with the repository's own configuration."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for package in ("lookup_tables", "migrate"):  # ruff finds the imported modules themselves under its src root
        (root / package).symlink_to(REPO / package, target_is_directory=True)
    monkeypatch.setenv("MIGRATE_PROJECT_DIR", str(root))
    monkeypatch.delenv("MIGRATE_USECASES_DIR", raising=False)
    for name in ("churn_risk", "visit_length"):  # one sorts before lookup_tables and migrate, one after
        code, output = init(name)
        assert code == 0, output
    assert "from migrate.batch.offline_store import" in (root / "churn_risk" / "training.py").read_text()
    generated = ["churn_risk", "visit_length", "usecases"]
    for command in (["check", "--no-cache", *generated], ["format", "--no-cache", "--check", *generated]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=root, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_init_refuses_to_overwrite_a_use_case(project: Path) -> None:
    assert init("churn_risk")[0] == 0
    yaml_file = project / "usecases" / "churn_risk.yaml"
    yaml_file.write_text(yaml_file.read_text() + "# edited by its team\n")
    code, output = init("churn_risk", "--kind", "regression")
    assert code == 1
    assert str(yaml_file) in output and "already exists" in output and "fix:" in output
    assert yaml_file.read_text().endswith("# edited by its team\n")
    assert "Traceback" not in output


def test_init_refuses_when_the_package_exists_and_writes_nothing(project: Path) -> None:
    (project / "churn_risk").mkdir()
    code, output = init("churn_risk")
    assert code == 1
    assert str(project / "churn_risk") in output and "fix:" in output
    assert not (project / "usecases").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["Churn-Risk"], "not a valid use-case name"),
        (["json"], "already importable"),
        (["a" + "b" * 62], "would be invalid"),
    ],
)
def test_init_refuses_bad_names_and_kinds(project: Path, args: list[str], expected: str) -> None:
    code, output = init(*args)
    assert code == 1
    assert expected in output and "fix:" in output
    assert not (project / "usecases").exists()


def test_init_refuses_a_kind_it_does_not_know_naming_the_choices(project: Path) -> None:
    code, output = init("churn_risk", "--kind", "multiclass")
    assert code == 2  # a usage error, from the option's declared choices
    assert "'multiclass' is not one of" in output and "'binary'" in output and "'regression'" in output
    assert not (project / "usecases").exists()


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_every_template_placeholder_is_filled(kind: str, tmp_path: Path) -> None:
    files = render("churn_risk", kind, tmp_path / "usecases" / "churn_risk.yaml", tmp_path / "churn_risk")  # type: ignore[arg-type]
    assert all("{{" not in text and "}}" not in text for text in files.values())
    raw = yaml.safe_load(files[tmp_path / "usecases" / "churn_risk.yaml"])
    assert raw["label"]["kind"] == kind
    assert raw["realtime_features"]["events"]["fields"]["outcome"] == ("bool" if kind == "binary" else "float")


def validate(*args: str) -> tuple[int, str]:
    # The YAML only: these projects have no offline store (tests/unit/test_usecases_validate.py checks the tables).
    result = CliRunner().invoke(app, ["usecases", "validate", "--no-tables", *args])
    return result.exit_code, result.output


def test_validate_warns_on_the_placeholders_the_scaffold_leaves(project: Path) -> None:
    assert init("churn_risk")[0] == 0
    file = project / "usecases" / "churn_risk.yaml"
    text = file.read_text()
    # Independently of the check: the fields whose YAML line carries the marker, by reading the file's lines.
    marked = {line.split(":")[0].strip() for line in text.splitlines() if "TODO" in line.split("#")[0]}
    assert marked == {"description", "owner"}  # top-level and the label's description (same key name)
    code, output = validate()
    assert code == 0, output
    assert output.startswith("warn ")
    flagged = output.split("placeholder (TODO) in ", 1)[1].split("\n", 1)[0].split(", ")
    assert sorted(flagged) == ["description", "label.description", "owner"]
    assert "fix:" in output
    assert validate("--strict")[0] == 1

    file.write_text(
        text.replace("TODO say in one sentence what the model predicts, for whom.", "Churn within 30 days.")
        .replace("TODO-team", "growth")
        .replace("TODO what the outcome means.", "The customer left.")
    )
    code, output = validate("--strict")
    assert code == 0, output
    assert output.startswith("ok ") and "TODO" not in output
