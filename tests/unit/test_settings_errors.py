"""A malformed setting is a ConfigError naming the variable and the fix, and the CLI prints error:/fix: lines.

Before: ``MIGRATE_CHUNK_SIZE=500 migrate serve`` printed pydantic's traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrate.cli.main import app
from migrate.errors import ConfigError
from migrate.settings import get_settings

pytestmark = pytest.mark.unit


def test_a_value_out_of_range_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_CHUNK_SIZE", "500")
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert "MIGRATE_CHUNK_SIZE" in raised.value.what and "greater than or equal to 1000" in raised.value.what
    assert "'500'" in raised.value.what
    assert raised.value.fix is not None and "MIGRATE_CHUNK_SIZE" in raised.value.fix


def test_the_cli_prints_error_and_fix_lines_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_CHUNK_SIZE", "500")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert result.output.startswith("error: invalid settings: MIGRATE_CHUNK_SIZE"), result.output
    assert "\nfix: correct or unset MIGRATE_CHUNK_SIZE" in result.output
    assert "Traceback" not in result.output and "ValidationError" not in result.output


def test_a_secret_is_never_echoed_and_unknown_file_keys_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "migrate.yaml").write_text("admin_token: [hunter2]\nchunksize: 5000\n")
    monkeypatch.setenv("MIGRATE_PROJECT_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert "MIGRATE_ADMIN_TOKEN" in raised.value.what and "hunter2" not in raised.value.what
    assert "migrate.yaml key 'chunksize' is not a setting" in raised.value.what


def test_trusted_proxies_are_comma_separated_and_empty_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().trusted_proxies == []
    monkeypatch.setenv("MIGRATE_TRUSTED_PROXIES", "10.0.0.1, 10.1.0.0/16")
    assert get_settings().trusted_proxies == ["10.0.0.1", "10.1.0.0/16"]
