"""The live day's simulated clock: the feature-skew grace the demo and a rehearsal compare with scales by its speed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from migrate.clock import recorded_speed
from migrate.demo.live import LiveDay
from migrate.registry import Registry
from migrate.settings import Settings


def test_the_skew_grace_is_the_policy_grace_times_the_clock_speed(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    usecase = Registry(settings.usecases_dir).get("delivery_eta")
    policy = usecase.cutover_policy.model_copy(update={"feature_skew_grace": "2s"})
    usecase = usecase.model_copy(update={"cutover_policy": policy})
    start = datetime(2026, 1, 5, tzinfo=UTC)
    day = LiveDay(settings, usecase, start, 60.0, start + timedelta(hours=1))  # nothing starts before `with`
    # The stream lags in wall-clock time: 2 s of it are 2 simulated minutes at 60×.
    assert day.skew_grace == timedelta(minutes=2)


def test_the_day_records_its_clock_so_a_later_gate_judges_with_the_same_grace(tmp_path: Path) -> None:
    """The demo's and a rehearsal's comparisons pass no grace: they, and a `migrate gate` run on the state dir
    after them, read the speed the day recorded beside the shadow log (comparisons.comparison.compare scales the
    policy's grace by `recorded_speed`)."""
    settings = Settings(state_dir=tmp_path / "state")
    usecase = Registry(settings.usecases_dir).get("delivery_eta")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    shadow_root = settings.shadow_dir / usecase.name
    assert recorded_speed(shadow_root) == 1.0  # nothing recorded: the wall's clock
    LiveDay(settings, usecase, start, 60.0, start + timedelta(hours=1)).record_clock()
    assert recorded_speed(shadow_root) == 60.0
