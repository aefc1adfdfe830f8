"""The online model: trained on batch + real-time features with the processor's window code, no leakage."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from migrate.artifact import ArtifactStore
from migrate.event_history import online_training_frame, realtime_feature_table
from migrate.offline import open_offline
from migrate.scoring import load_model
from migrate.training import train

pytestmark = pytest.mark.integration


def test_online_model_trains_on_batch_and_realtime_features_and_serves_by_role(world: Any) -> None:
    usecase, settings = world.usecase, world.settings
    info = train(usecase, settings, world.cutoff, role="online")
    assert info.role == "online" and list(info.feature_names) == usecase.online_feature_names
    assert 0.5 < info.metrics["auc"] <= 1.0
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    online, batch = load_model(usecase, store, "online"), load_model(usecase, store)
    assert online.feature_names == tuple(usecase.online_feature_names) and online.version == info.version
    assert batch.feature_names == tuple(usecase.feature_names) and batch.version != online.version


def test_realtime_training_features_see_only_earlier_events(world: Any) -> None:
    usecase = world.usecase
    with open_offline(world.settings.offline_store_path) as con:
        frame = online_training_frame(con, usecase, world.cutoff - timedelta(days=3), world.cutoff)
        table = realtime_feature_table(con, usecase, world.cutoff)
        events = con.sql(
            "SELECT event_id, store_id, product_id, event_time FROM scan_events WHERE event_time < $end "
            "ORDER BY store_id, product_id, event_time, event_id",
            params={"end": world.cutoff.replace(tzinfo=None)},
        ).fetchall()
    by_id = {row["event_id"]: row for row in table.to_pylist()}
    # The first event of each entity knows nothing real-time (no leakage of its own outcome).
    firsts, previous = [], None
    for event_id, store, product, _ in events:
        if (store, product) != previous:
            firsts.append(event_id)
            previous = (store, product)
    assert firsts and all(math.isnan(by_id[e]["scans_120m"]) for e in firsts)
    # The frame carries exactly the table's values for its labelled events.
    for row in frame.select(["event_id", *usecase.realtime_feature_names]).to_pylist()[:500]:
        expected = by_id[row["event_id"]]
        for name in usecase.realtime_feature_names:
            assert np.isclose(row[name], expected[name], equal_nan=True), (row, expected)
