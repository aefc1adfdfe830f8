"""`migrate demo --fast`: the whole story runs on embedded services and says what it found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.clock import recorded_speed

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_demo_fast_tells_the_whole_story_and_can_run_twice(tmp_path: Path) -> None:
    env = {**os.environ, "MIGRATE_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "160"}
    env.pop("MIGRATE_REDIS_URL", None)
    env.pop("MIGRATE_KAFKA_BOOTSTRAP", None)
    migrate = str(Path(sys.executable).parent / "migrate")
    try:
        for _ in range(2):  # the second run starts over from the first one's state dir
            done = subprocess.run(
                [migrate, "demo", "--fast"], env=env, capture_output=True, text=True, timeout=900, check=False
            )
            out = done.stdout + done.stderr
            assert done.returncode == 0, out[-5000:]
        for step in ("batch_predictions__item_availability", "materialize_features__item_availability", "verdict:"):
            assert step in out, out[-5000:]
        assert "flag: canary 10%" in out and "flag: online" in out
        assert "the five costs of batch" in out
        for cost in ("staleness", "waste", "coverage", "response lag", "accuracy (AUC)"):
            assert cost in out
        report = tmp_path / "state" / "reports" / "item_availability" / "report.html"
        assert report.is_file() and f"report: {report}" in out.replace("\n", "")
        assert list((tmp_path / "state" / "shadow" / "item_availability").rglob("*.parquet"))
        # The live day ran on a simulated clock and recorded it: `migrate gate` on this state dir afterwards scales
        # the feature-skew grace as the demo's own verdict did.
        assert recorded_speed(tmp_path / "state" / "shadow" / "item_availability") > 1
        assert list((tmp_path / "state" / "labels" / "item_availability").rglob("*.parquet"))
        # The second act: card fraud judged from history alone, its verdict stated with its numbers.
        assert "migrate backtest fraud_detection --from" in out and "verdict from history: PROMOTE" in out, out[-3000:]
        assert list((tmp_path / "state" / "backtests" / "fraud_detection" / "shadow").rglob("*.parquet"))
    finally:
        subprocess.run([migrate, "services", "stop"], env=env, capture_output=True, timeout=60, check=False)
