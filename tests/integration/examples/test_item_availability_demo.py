"""The example at its demo size, end to end: generate, snapshot at the last batch run, train, stream."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from migrate.batch.offline_store import open_offline, snapshot_features
from migrate.examples.item_availability.generator import SimulationConfig, generate, iter_events
from migrate.examples.item_availability.training import train
from migrate.registry import load_usecase

pytestmark = pytest.mark.integration

USECASE_FILE = Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml"


def test_demo_size_end_to_end(tmp_path: Path) -> None:
    usecase = load_usecase(USECASE_FILE)
    summary = generate(tmp_path / "offline.duckdb", SimulationConfig())
    assert summary.rows["stores"] == 20
    assert summary.rows["products"] == 400
    assert 5_000 < summary.rows["store_products"] < 8_000
    assert 300_000 < summary.rows["scan_events"] < 1_000_000
    assert summary.new_products == 12

    batch_as_of = summary.last_batch_cutoff.replace(hour=0)
    con = open_offline(summary.path)
    try:
        snapshot = snapshot_features(con, usecase, batch_as_of)
        listed_later = con.sql(
            "SELECT count(*) FROM store_products WHERE listed_at > $a", params={"a": batch_as_of.replace(tzinfo=None)}
        ).fetchall()[0][0]
    finally:
        con.close()
    assert snapshot.num_rows == summary.rows["store_products"] - listed_later
    assert listed_later > 0  # the long tail the lookup table cannot cover

    model = train(usecase, summary.path, batch_as_of)
    assert model.metrics["auc"] > 0.65
    assert model.metrics["n_train"] > 100_000

    snapshot_keys = set(zip(snapshot["store_id"].to_pylist(), snapshot["product_id"].to_pylist(), strict=True))
    after_cutoff = iter_events(summary.path, summary.last_batch_cutoff, summary.last_batch_cutoff + timedelta(hours=20))
    unseen = {(e["store_id"], e["product_id"]) for e in after_cutoff} - snapshot_keys
    assert unseen  # events arrive for entities without a lookup row
