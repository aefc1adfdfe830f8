"""The candidate in the shadow record: scored beside the live model off the critical path, readable beside old logs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from migrate.artifact import ArtifactStore
from migrate.cutover.flags import Flag, Stage
from migrate.models.lifecycle import load_version
from migrate.registry import load_usecase
from online.features.store import OnlineRead
from online.serving import predictor as predictor_module
from online.serving.prediction_paths import NOTHING, Paths, Request
from online.serving.predictor import OnlinePredictor
from online.serving.shadow_compare import compare
from online.shadow.parquet import shadow_table, write_durably
from online.shadow.record import ShadowRecord, WireRecord

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
ENTITIES: list[dict[str, int | str]] = [{"store_id": 1, "product_id": 7}, {"store_id": 2, "product_id": 8}]


class _NoFeatures:
    def read_online(self, usecase: str, keys: Any, names: Any, group_keys: Any, partitions: int) -> OnlineRead:
        return OnlineRead([None] * len(keys), {group: [[] for _ in keys] for group in group_keys})


class _EmptyLookup:
    def get_many(self, spec: Any, keys: Any) -> dict[Any, Any]:
        return {}

    def active(self, spec: Any) -> None:
        return None


class _Broken:
    model = None

    def predict(self, *args: Any) -> Any:
        raise RuntimeError("the candidate cannot score")


def _fit(width: int, seed: int) -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(seed)
    x = rng.random((300, width))
    x[rng.random(x.shape) < 0.2] = np.nan
    y = (np.nan_to_num(x[:, 0], nan=0.9) + 0.3 * rng.random(300) > 0.6).astype(int)
    return HistGradientBoostingClassifier(max_iter=10, random_state=seed).fit(x, y)


def _records(tmp_path: Path, candidate: Any) -> tuple[list[ShadowRecord], dict[str, float], dict[str, str]]:
    usecase = load_usecase(ROOT / "usecases" / "item_availability.yaml")
    files = ArtifactStore(tmp_path / "artifacts", tmp_path)
    width = len(usecase.feature_names)
    live, cand = (files.save(usecase, _fit(width, s), trained_as_of=AS_OF, metrics={}) for s in (1, 2))
    features = _NoFeatures()
    models = {i.version: load_version(usecase, files, i.version) for i in (live, cand)}
    paths = Paths(_EmptyLookup(), None, OnlinePredictor(usecase, models[live.version], features))  # type: ignore[arg-type]
    scoring = OnlinePredictor(usecase, models[cand.version], features) if candidate == "model" else candidate  # type: ignore[arg-type]
    logged: list[ShadowRecord] = []

    class _Log:
        def log_many(self, records: Sequence[WireRecord]) -> int:
            logged.extend(record.decode() for record in records)  # as the sink reads them off the topic
            return len(records)

    flag = Flag(usecase.name, Stage.SHADOW, revision=1)
    request = Request("r1", NOW, flag, [(1, 7), (2, 8)], ENTITIES, {})
    compare(
        paths,
        _Log(),
        usecase.name,
        request,
        served=["batch", "batch"],
        online=NOTHING,
        batch=NOTHING,
        candidate=scoring,
    )
    nan_row = np.full((1, width), np.nan)
    expected = {v: float(m.fitted().predict_proba(nan_row)[0, 1]) for v, m in models.items()}
    return logged, expected, {"live": live.version, "candidate": cand.version}


def test_the_candidate_is_scored_beside_the_live_model_for_every_entity(tmp_path: Path) -> None:
    records, expected, versions = _records(tmp_path, "model")
    assert len(records) == 2
    for record in records:
        assert record.online_model_version == versions["live"]
        assert record.online_prediction == expected[versions["live"]]
        assert record.candidate_model_version == versions["candidate"]
        assert record.candidate_prediction == expected[versions["candidate"]]  # the estimator's own score
        assert record.candidate_error is None and record.candidate_latency_ms is not None
    assert expected[versions["live"]] != expected[versions["candidate"]]


def test_a_failing_candidate_is_logged_as_its_error_and_the_live_record_stands(tmp_path: Path) -> None:
    records, expected, versions = _records(tmp_path, _Broken())
    assert [r.candidate_error for r in records] == ["RuntimeError: the candidate cannot score"] * 2
    assert all(r.candidate_prediction is None and r.online_prediction == expected[versions["live"]] for r in records)


def test_without_a_candidate_the_record_is_as_before(tmp_path: Path) -> None:
    records, _, _ = _records(tmp_path, None)
    assert all(r.candidate_prediction is None and r.candidate_model_version is None for r in records)
    old = {k: v for k, v in records[0].model_dump().items() if not k.startswith("candidate_")}
    assert ShadowRecord.model_validate(old) == records[0]  # a record of an older writer still reads


def test_logs_written_before_the_candidate_columns_read_beside_new_ones(tmp_path: Path) -> None:
    records, _, versions = _records(tmp_path, "model")
    new = shadow_table(records, [0, 0], [1, 2])
    old = new.drop_columns([c for c in new.column_names if c.startswith("candidate_")])
    write_durably(old, tmp_path / "shadow" / "old.parquet")
    write_durably(new, tmp_path / "shadow" / "new.parquet")
    with duckdb.connect() as db:
        rows = db.execute(
            f"SELECT filename LIKE '%new.parquet', candidate_model_version, online_model_version "
            f"FROM read_parquet('{tmp_path / 'shadow' / '*.parquet'}', union_by_name = true, filename = true)"
        ).fetchall()
    assert sorted(rows) == sorted(
        [(False, None, versions["live"])] * 2 + [(True, versions["candidate"], versions["live"])] * 2
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_model_answering_a_non_finite_number_is_an_online_error_never_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    usecase = load_usecase(ROOT / "usecases" / "item_availability.yaml")
    files = ArtifactStore(tmp_path / "artifacts", tmp_path)
    info = files.save(usecase, _fit(len(usecase.feature_names), 1), trained_as_of=AS_OF, metrics={})
    predictor = OnlinePredictor(usecase, load_version(usecase, files, info.version), _NoFeatures())  # type: ignore[arg-type]
    paths = Paths(_EmptyLookup(), None, predictor)
    keys = [(1, 7), (2, 8)]
    assert paths.online(keys, [0, 1], NOW, {}).error is None  # the model itself answers
    real_score = predictor_module.score
    monkeypatch.setattr(predictor_module, "score", lambda model, x: np.where([False, True], bad, real_score(model, x)))
    outcome = paths.online(keys, [0, 1], NOW, {})
    assert outcome.results == {} and outcome.error is not None
    assert (
        outcome.error.startswith("ModelOutputError")
        and "1 of 2 entities" in outcome.error
        and "(2, 8)" in outcome.error
    )
