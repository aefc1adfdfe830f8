"""A rehearsal never runs on the team's services: its settings drop the configured Redis and Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from migrate.demo.rehearse import rehearsal_settings
from migrate.errors import ConfigError
from migrate.registry import Registry
from migrate.settings import Settings


def test_a_rehearsal_on_a_production_profile_gets_its_own_redis_and_broker_never_the_configured_ones(
    tmp_path: Path,
) -> None:
    live = Settings(
        profile="production",
        state_dir=tmp_path / "state",
        sql_url=SecretStr("postgresql+psycopg://db.internal/lookup"),
        redis_url=SecretStr("redis://features.internal:6379/0"),
        kafka_bootstrap="kafka.internal:9092",
    )
    with pytest.raises(ConfigError, match="MIGRATE_REDIS_URL"):
        live.model_copy(update={"redis_url": None}).stand_in("redis_url")  # the live profile refuses stand-ins
    usecase = Registry(live.usecases_dir).get("delivery_eta")
    rehearsal = rehearsal_settings(live, usecase)
    # Window states, batch features and replayed events would otherwise land under the live keys and topic.
    assert (rehearsal.redis_url, rehearsal.kafka_bootstrap, rehearsal.kafka_bootstrap_file) == (None, None, None)
    assert rehearsal.sql_url_value == f"sqlite:///{tmp_path / 'state' / 'rehearsals' / 'delivery_eta' / 'lookup.db'}"
    for setting in ("redis_url", "kafka_bootstrap"):
        rehearsal.stand_in(setting)  # its own embedded services, allowed
