"""Use-case files: the example is valid; bad files fail with the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from migrate.cli.main import app
from migrate.errors import UnknownUseCaseError, UseCaseError
from migrate.registry import Registry, load_usecase

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "usecases" / "item_availability.yaml"


def _write(tmp_path: Path, name: str, mutate: object) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = name
    assert callable(mutate)
    mutate(data)
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


def test_example_is_valid() -> None:
    usecase = load_usecase(EXAMPLE)
    assert usecase.entity.key_names == ["store_id", "product_id"]
    assert usecase.feature_names[0] == "found_rate_1d"
    assert usecase.prediction_range == (0.0, 1.0)


@pytest.mark.parametrize(
    ("mutate", "field", "problem", "fix"),
    [
        (lambda d: d.update(colour="red"), "colour", "unknown field", "allowed here: name, description"),
        (lambda d: d["batch"].update(schedule="0 25 * * *"), "batch.schedule", "not a valid cron", "five-field cron"),
        (
            lambda d: d["entity"]["keys"][0].update(type="integer"),
            "entity.keys[0].type",
            "'int' or 'str'",
            "allowed values",
        ),
        (lambda d: d.pop("label"), "label", "Field required", "add this field"),
        (lambda d: d["model"].update(artifact="m.skops"), "model", "needs its sha256", "correct the value"),
        (
            lambda d: d["model"].update(artifact="m.skops", sha256="abc"),
            "model.sha256",
            "should match pattern",
            "64 lower-case hex",
        ),
        (
            lambda d: d["realtime_features"]["features"][0].update(window="30 minutes"),
            "realtime_features.features[0].window",
            "not a duration",
            "'30m'",
        ),
        (
            lambda d: d["batch_features"]["features"].append({"name": "store_id"}),
            "(top)",
            "appear twice",
            "correct the value",
        ),
        (
            lambda d: d["lookup_table"].update(name="Drop Table;"),
            "lookup_table.name",
            "should match pattern",
            "lower-case letters",
        ),
    ],
)
def test_bad_field_names_file_field_and_fix(tmp_path: Path, mutate: object, field: str, problem: str, fix: str) -> None:
    file = _write(tmp_path, "broken", mutate)
    with pytest.raises(UseCaseError) as caught:
        load_usecase(file)
    error = caught.value
    assert error.file == str(file)
    assert error.field == field
    assert problem in error.what
    assert error.fix is not None and fix in error.fix


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("name: broken\nentity: [unclosed\n")
    with pytest.raises(UseCaseError) as caught:
        load_usecase(file)
    assert "line 3" in caught.value.field or "line 2" in caught.value.field
    assert "not valid YAML" in caught.value.what


def test_not_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(UseCaseError, match="not a mapping"):
        load_usecase(file)


def test_name_must_match_file(tmp_path: Path) -> None:
    file = _write(tmp_path, "other", lambda d: None)
    renamed = file.rename(tmp_path / "different.yaml")
    with pytest.raises(UseCaseError) as caught:
        load_usecase(renamed)
    assert caught.value.field == "name"
    assert caught.value.fix is not None and "rename the file" in caught.value.fix


def test_unknown_usecase_lists_known(tmp_path: Path) -> None:
    _write(tmp_path, "alpha", lambda d: None)
    with pytest.raises(UnknownUseCaseError) as caught:
        Registry(tmp_path).get("beta")
    assert caught.value.fix is not None and "alpha" in caught.value.fix


def test_cli_validate_reports_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "good", lambda d: None)
    _write(tmp_path, "bad", lambda d: d["batch"].update(schedule="every night"))
    monkeypatch.setenv("MIGRATE_USECASES_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["usecases", "validate", "--no-tables"])  # the YAML only: no offline store here
    assert result.exit_code == 1
    assert "ok" in result.output and "good.yaml" in result.output
    assert "bad.yaml: batch.schedule" in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_usecase_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_USECASES_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["train", "nope"])
    assert result.exit_code == 1
    assert "no use case 'nope'" in result.output
    assert "Traceback" not in result.output
