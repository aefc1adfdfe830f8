"""MIGRATE_PROFILE=production: a missing SQL, Redis or Kafka URL is a config error, never an embedded stand-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrate import settings as settings_module
from migrate.cli.main import app
from migrate.devservices.broker import resolve_bootstrap
from migrate.devservices.redis_server import resolve_redis_url
from migrate.devservices.shared_broker import shared_bootstrap
from migrate.errors import ConfigError
from migrate.settings import Settings, get_settings

pytestmark = pytest.mark.unit

URLS = {"sql_url": "sqlite:///x.db", "redis_url": "redis://127.0.0.1:6379/0", "kafka_bootstrap": "kafka:9092"}


@pytest.fixture(autouse=True)
def no_service_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MIGRATE_SQL_URL", "MIGRATE_REDIS_URL", "MIGRATE_KAFKA_BOOTSTRAP", "MIGRATE_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def production(tmp_path: Path, **urls: str) -> Settings:
    return get_settings(profile="production", state_dir=tmp_path / "state", **urls)


@pytest.mark.parametrize("missing", sorted(URLS))
def test_production_refuses_to_load_without_each_url_and_names_it(tmp_path: Path, missing: str) -> None:
    given = {name: url for name, url in URLS.items() if name != missing}
    with pytest.raises(ConfigError) as refused:
        production(tmp_path, **given)
    env = f"MIGRATE_{missing.upper()}"
    assert env in refused.value.what and refused.value.fix is not None and env in refused.value.fix
    assert production(tmp_path, **URLS).profile == "production"


def test_production_never_starts_a_stand_in_even_for_settings_copied_without_a_url(tmp_path: Path) -> None:
    loaded = production(tmp_path, **URLS)
    for setting, start in (
        ("redis_url", resolve_redis_url),
        ("kafka_bootstrap", shared_bootstrap),
        ("kafka_bootstrap", resolve_bootstrap),
    ):
        with pytest.raises(ConfigError, match=f"MIGRATE_{setting.upper()}"):
            start(loaded.model_copy(update={setting: None}))
    with pytest.raises(ConfigError, match="MIGRATE_SQL_URL"):
        _ = loaded.model_copy(update={"sql_url": None}).sql_url_value
    assert not (tmp_path / "state").exists()  # nothing was started, not even a folder for it


def test_the_cli_reports_the_missing_setting_and_exits_1(tmp_path: Path) -> None:
    env = {"MIGRATE_PROFILE": "production", "MIGRATE_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(app, ["services", "status"], env=env, terminal_width=400)
    assert result.exit_code == 1
    assert "MIGRATE_SQL_URL, MIGRATE_REDIS_URL, MIGRATE_KAFKA_BOOTSTRAP" in result.output


def test_dev_profile_says_once_that_sqlite_stands_in_for_the_sql_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "_warned", set())  # as in a fresh process
    dev = get_settings(state_dir=tmp_path / "state")
    with caplog.at_level(logging.WARNING, logger="migrate.settings"):
        assert dev.sql_url_value.startswith("sqlite:///")
        assert dev.sql_url_value.startswith("sqlite:///")
    lines = [r.getMessage() for r in caplog.records if r.name == "migrate.settings"]
    assert len(lines) == 1 and lines[0].startswith("MIGRATE_SQL_URL is not set: using a SQLite file")
