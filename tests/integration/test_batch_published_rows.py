"""A whole batch run on each backend: the published rows are sklearn's own predict_proba on the snapshot."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lookup_tables import TableSpec, close_lookup_stores, open_lookup_store
from migrate.artifact import ArtifactStore
from migrate.batch import steps as batch
from migrate.batch.offline_store import open_offline
from migrate.batch.schedule import interval_ending
from migrate.batch.training import train
from migrate.examples.item_availability.generator import SimulationConfig, generate
from migrate.registry import Registry
from migrate.scoring import load_model
from migrate.settings import Settings, get_settings

pytestmark = pytest.mark.integration

# Feature values a text round trip or a tree walk could get wrong: missing, infinite, the extremes, -0.0.
HOSTILE = ["'nan'", "'inf'", "'-inf'", "1.7976931348623157e308", "-1.7976931348623157e308", "-0.0", "5e-324"]


@pytest.fixture
def settings(sql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGRATE_SQL_URL", sql_url)
    yield get_settings()
    close_lookup_stores()


def test_published_rows_are_sklearns_predict_proba_of_the_snapshot_bit_for_bit(settings: Settings) -> None:
    usecase = Registry(settings.usecases_dir).get("item_availability")
    summary = generate(settings.offline_store_path, SimulationConfig(stores=5, products=80, days=4, seed=11))
    cutoff = summary.last_batch_cutoff
    train(usecase, settings, cutoff)
    features = [f.name for f in usecase.batch_features.features]
    with open_offline(settings.offline_store_path, read_only=False) as con:
        for i, value in enumerate(HOSTILE):
            column = features[i % len(features)]
            con.execute(
                f'UPDATE item_features_daily SET "{column}" = CAST({value} AS DOUBLE) WHERE product_id % 11 = {i}'
            )
    interval = interval_ending(usecase.batch.schedule, cutoff)
    result = batch.run_batch(usecase, settings, interval, "published-rows", workers=2)
    assert result.activated and result.rows > 0

    snapshot = pq.read_table(settings.snapshots_dir / usecase.name / interval.key / "snapshot.parquet")
    estimator = load_model(usecase, ArtifactStore(settings.artifacts_dir, settings.project_dir)).fitted()
    matrix = np.column_stack([snapshot.column(name).to_numpy(zero_copy_only=False) for name in features])
    assert np.isnan(matrix).any() and np.isinf(matrix).any()  # the hostile values reached the model
    expected = estimator.predict_proba(matrix)[:, 1]  # sklearn's own loop, not the forest or its tables
    keys = list(zip(*(snapshot.column(k).to_pylist() for k in usecase.entity.key_names), strict=True))

    spec = TableSpec.for_usecase(usecase, settings)
    published = open_lookup_store(settings).export(spec, result.version)
    got = dict(
        zip(
            zip(*(published.column(k).to_pylist() for k in usecase.entity.key_names), strict=True),
            published.column("prediction").to_pylist(),
            strict=True,
        )
    )
    assert len(got) == published.num_rows == len(keys) == result.rows
    assert [struct.pack(">d", got[key]) for key in keys] == [struct.pack(">d", float(p)) for p in expected]
