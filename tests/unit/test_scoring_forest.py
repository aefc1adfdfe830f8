"""The NumPy forest of a HistGradientBoosting model: the estimator's scores bit for bit, or not used at all."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)

from migrate import forest_tables, scoring
from migrate.artifact import ArtifactStore
from migrate.examples.delivery_eta.training import make_estimator as delivery_eta_model
from migrate.examples.fraud_detection.training import classifier as fraud_detection_model
from migrate.examples.item_availability.training import make_estimator as item_availability_model
from migrate.forest_tables import CHUNK_ROWS, ForestTables
from migrate.registry import load_usecase
from migrate.scoring import (
    DECIDE_MAX_CELLS,
    FOREST_MAX_ROWS,
    TABLES_MIN_ROWS,
    Forest,
    Model,
    compile_forest,
    load_model,
    score,
)

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "usecases" / "item_availability.yaml"
N_FEATURES = 5


def _training(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, N_FEATURES))
    x[:, 3] = rng.integers(0, 8, 600)  # few distinct values: thresholds sit between integers
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values in training: both missing_go_to_left directions
    target = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 3]) + rng.normal(0, 0.3, 600)
    return x, target


def _classifier() -> HistGradientBoostingClassifier:
    x, target = _training(0)
    return HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=15, random_state=0).fit(x, target > 0.3)


def _regressor() -> HistGradientBoostingRegressor:
    x, target = _training(1)
    return HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=15, random_state=0).fit(x, 10 * target)


@pytest.fixture(scope="module", params=["binary", "regression"])
def fitted(request: pytest.FixtureRequest) -> tuple[Any, str]:
    return (_classifier(), "binary") if request.param == "binary" else (_regressor(), "regression")


def _sklearn(estimator: Any, label_kind: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if label_kind == "binary":
        return np.ascontiguousarray(estimator.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(estimator.predict(x), dtype=np.float64)


def _assert_same_bits(forest: Forest, estimator: Any, label_kind: str, x: np.ndarray[Any, Any]) -> None:
    got, expected = forest.score(x), _sklearn(estimator, label_kind, x)
    assert got.shape == expected.shape
    differ = np.flatnonzero(got.view(np.uint64) != expected.view(np.uint64))
    assert differ.size == 0, f"rows {differ[:5]}: forest {got[differ[:5]]} vs sklearn {expected[differ[:5]]}"


def _thresholds(forest: Forest) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    split = forest.children[1::2] != np.arange(len(forest.value))
    return forest.feature[split], forest.threshold[split]


@pytest.mark.parametrize("rows", [1, 7, 100])
def test_random_matrices_with_nan_score_bit_for_bit(fitted: tuple[Any, str], rows: int) -> None:
    estimator, label_kind = fitted
    forest = compile_forest(estimator, label_kind, N_FEATURES)
    assert forest is not None
    rng = np.random.default_rng(rows)
    for _ in range(20):
        x = rng.normal(size=(rows, N_FEATURES))
        x[:, 3] = rng.integers(-1, 9, rows)
        x[rng.random(x.shape) < 0.2] = np.nan
        _assert_same_bits(forest, estimator, label_kind, x)


@pytest.mark.parametrize("rows", [1, 7, 100])
@pytest.mark.parametrize("where", ["at", "above", "below"])
def test_values_at_and_next_to_every_threshold_score_bit_for_bit(
    fitted: tuple[Any, str], rows: int, where: str
) -> None:
    estimator, label_kind = fitted
    forest = compile_forest(estimator, label_kind, N_FEATURES)
    assert forest is not None
    columns, thresholds = _thresholds(forest)
    assert len(thresholds) > 50  # the trees really split, on every kind of column
    shifted = {
        "at": thresholds,
        "above": np.nextafter(thresholds, np.inf),
        "below": np.nextafter(thresholds, -np.inf),
    }[where]
    rng = np.random.default_rng(7)
    for start in range(0, len(thresholds), rows):
        count = min(rows, len(thresholds) - start)
        x = rng.normal(size=(rows, N_FEATURES))
        x[rng.random(x.shape) < 0.1] = np.nan
        x[np.arange(count), columns[start : start + count]] = shifted[start : start + count]
        _assert_same_bits(forest, estimator, label_kind, x)


def test_score_uses_the_walk_for_few_rows_the_tables_for_more_and_sklearn_without_either() -> None:
    class Estimator:
        def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return np.full(len(x), -1.0)

    class FakeForest:
        def __init__(self, tables: object) -> None:
            self.tables = tables

        def score(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return np.full(len(x), 1.0)

        def score_bulk(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return np.full(len(x), 2.0)

    model = Model("uc", "v1", "sha", ("a", "b"), "regression", Estimator(), FakeForest(None))  # type: ignore[arg-type]
    assert set(score(model, np.zeros((1, 2)))) == {1.0}
    assert set(score(model, np.zeros((FOREST_MAX_ROWS, 2)))) == {1.0}
    assert set(score(model, np.zeros((FOREST_MAX_ROWS + 1, 2)))) == {-1.0}
    assert set(score(Model("uc", "v1", "sha", ("a", "b"), "regression", Estimator()), np.zeros((1, 2)))) == {-1.0}
    tabled = Model("uc", "v1", "sha", ("a", "b"), "regression", Estimator(), FakeForest(object()))  # type: ignore[arg-type]
    assert set(score(tabled, np.zeros((TABLES_MIN_ROWS - 1, 2)))) == {1.0}
    assert set(score(tabled, np.zeros((TABLES_MIN_ROWS, 2)))) == {2.0}
    assert set(score(tabled, np.zeros((FOREST_MAX_ROWS + 1, 2)))) == {2.0}


def test_more_than_the_limit_scores_the_same_through_sklearn() -> None:
    estimator = _regressor()
    forest = compile_forest(estimator, "regression", N_FEATURES)
    model = Model("uc", "v1", "sha", tuple("abcde"), "regression", estimator, forest)
    x = np.random.default_rng(3).normal(size=(FOREST_MAX_ROWS + 1, N_FEATURES))
    np.testing.assert_array_equal(score(model, x), estimator.predict(x))


def test_models_the_forest_cannot_express_are_left_to_sklearn() -> None:
    x, target = _training(2)
    three_classes = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, np.digitize(target, [-0.5, 0.5]))
    assert Forest.compile(three_classes) is None
    assert compile_forest(object(), "binary", N_FEATURES) is None
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(np.nan_to_num(x), target > 0.3)
    assert compile_forest(forest, "binary", N_FEATURES) is None
    model = Model("uc", "v1", "sha", tuple("abcde"), "binary", forest)
    rows = np.random.default_rng(4).normal(size=(500, N_FEATURES))
    np.testing.assert_array_equal(score(model, rows), forest.predict_proba(rows)[:, 1])


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_both_walks_score_any_few_rows_as_sklearn_does(fitted: tuple[Any, str], data: st.DataObject) -> None:
    """`raw_decided` (every node decided first) and `raw_walked` (level by level) against each other and sklearn,
    on rows of thresholds, their neighbours, NaN, infinities and any other float."""
    estimator, label_kind = fitted
    forest = compile_forest(estimator, label_kind, N_FEATURES)
    assert forest is not None
    _, thresholds = _thresholds(forest)
    edges = np.concatenate([thresholds, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf)])
    cells = st.sampled_from(edges.tolist()) | st.floats(width=64) | st.sampled_from([np.nan, np.inf, -np.inf])
    rows = data.draw(st.integers(1, 2 * DECIDE_MAX_CELLS // len(forest.value)), label="rows")
    x = data.draw(hnp.arrays(np.float64, (rows, N_FEATURES), elements=cells), label="x")
    expected = _sklearn(estimator, label_kind, x).view(np.uint64).tolist()
    for walk in (forest.raw_decided, forest.raw_walked):
        assert forest.link(walk(x)).view(np.uint64).tolist() == expected, walk.__name__
    model = Model("uc", "v1", "sha", tuple("abcde"), label_kind, estimator, forest)  # type: ignore[arg-type]
    assert score(model, x[:3]).view(np.uint64).tolist() == expected[:3]


def test_raw_decides_every_node_for_a_few_rows_only(fitted: tuple[Any, str]) -> None:
    estimator, label_kind = fitted
    forest = compile_forest(estimator, label_kind, N_FEATURES)
    assert forest is not None
    most = DECIDE_MAX_CELLS // len(forest.value)
    calls: list[str] = []
    spy = dataclasses.replace(forest)  # its fields only: a cached `left` / `right` is not one
    object.__setattr__(spy, "raw_decided", lambda x: calls.append("decided") or forest.raw_decided(x))
    object.__setattr__(spy, "raw_walked", lambda x: calls.append("walked") or forest.raw_walked(x))
    spy.raw(np.zeros((most, N_FEATURES)))
    spy.raw(np.zeros((most + 1, N_FEATURES)))
    assert calls == ["decided", "walked"]


# --- large batches: the lookup tables (migrate/forest_tables.py) ---------------------------------------------


def _rows_with_edges(forest: Forest, rows: int, seed: int) -> np.ndarray[Any, Any]:
    """Random rows, a fifth NaN, with every threshold at, just above and just below itself, and infinities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 3] = rng.integers(-1, 9, rows)
    x[rng.random(x.shape) < 0.2] = np.nan
    columns, thresholds = _thresholds(forest)
    edges = np.concatenate([thresholds, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf)])
    at = rng.integers(0, rows, len(edges))
    x[at, np.tile(columns, 3)] = edges
    x[rng.integers(0, rows, 50), rng.integers(0, N_FEATURES, 50)] = np.inf
    x[rng.integers(0, rows, 50), rng.integers(0, N_FEATURES, 50)] = -np.inf
    return x


@pytest.mark.parametrize("rows", [TABLES_MIN_ROWS, 17, FOREST_MAX_ROWS + 1, 3 * CHUNK_ROWS + 17])
def test_large_batches_score_bit_for_bit_through_the_tables(fitted: tuple[Any, str], rows: int) -> None:
    estimator, label_kind = fitted
    forest = compile_forest(estimator, label_kind, N_FEATURES)
    assert forest is not None and forest.tables is not None
    x = _rows_with_edges(forest, rows, seed=rows)
    got, expected = forest.score_bulk(x), _sklearn(estimator, label_kind, x)
    differ = np.flatnonzero(got.view(np.uint64) != expected.view(np.uint64))
    assert differ.size == 0, f"rows {differ[:5]}: tables {got[differ[:5]]} vs sklearn {expected[differ[:5]]}"
    model = Model("uc", "v1", "sha", tuple("abcde"), label_kind, estimator, forest)  # type: ignore[arg-type]
    assert score(model, x).view(np.uint64).tolist() == expected.view(np.uint64).tolist()


@pytest.mark.parametrize(
    ("make", "label_kind", "n_features"),
    [
        (item_availability_model, "binary", 5),
        (delivery_eta_model, "regression", 6),
        (fraud_detection_model, "binary", 12),
        (lambda: HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=48, random_state=0), "regression", 4),
    ],
    ids=["item_availability", "delivery_eta", "fraud_detection", "48_leaves_in_64_bit_masks"],
)
def test_the_examples_models_score_bit_for_bit_through_the_tables(make: Any, label_kind: str, n_features: int) -> None:
    rng = np.random.default_rng(n_features)
    x = rng.normal(size=(4_000, n_features))
    x[:, 0] = rng.integers(0, 30, len(x))  # a count-like column: many ties, thresholds between integers
    x[rng.random(x.shape) < 0.1] = np.nan
    target = np.nan_to_num(x[:, 0]) / 10 + np.nan_to_num(x[:, 1]) + rng.normal(0, 0.5, len(x))
    estimator = make().fit(x, target > 1.5 if label_kind == "binary" else target)
    forest = compile_forest(estimator, label_kind, n_features)
    assert forest is not None and forest.tables is not None
    assert forest.tables.bits == (64 if int(np.diff(forest.roots).max()) > 63 else 32)
    rows = rng.normal(size=(20_000, n_features))
    rows[:, 0] = rng.integers(-2, 33, len(rows))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    expected = _sklearn(estimator, label_kind, rows)
    assert forest.score_bulk(rows).view(np.uint64).tolist() == expected.view(np.uint64).tolist()


@pytest.mark.parametrize(("limit", "value"), [("MAX_LEAVES", 8), ("MAX_MASK_BYTES", 1_000)])
def test_a_forest_too_big_for_tables_scores_large_batches_through_sklearn(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int
) -> None:
    estimator = _regressor()  # 15 leaves per tree, ~100 thresholds
    monkeypatch.setattr(forest_tables, limit, value)
    forest = compile_forest(estimator, "regression", N_FEATURES)
    assert forest is not None and forest.tables is None
    with pytest.raises(ValueError, match="no lookup tables"):
        forest.score_bulk(np.zeros((1, N_FEATURES)))
    model = Model("uc", "v1", "sha", tuple("abcde"), "regression", estimator, forest)
    x = np.random.default_rng(5).normal(size=(1_000, N_FEATURES))
    np.testing.assert_array_equal(score(model, x), estimator.predict(x))


def test_tables_one_ulp_off_are_dropped_at_load_and_sklearn_scores_large_batches(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    estimator = _classifier()
    right = ForestTables.raw

    def wrong(self: ForestTables, features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        raw = right(self, features)
        raw[len(raw) // 2] = np.nextafter(raw[len(raw) // 2], -np.inf)
        return raw

    monkeypatch.setattr(forest_tables.ForestTables, "raw", wrong)
    forest = compile_forest(estimator, "binary", N_FEATURES)
    assert forest is not None and forest.tables is None  # the tree walk agreed: it stays for small batches
    assert any("forest tables of" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    model = Model("uc", "v1", "sha", tuple("abcde"), "binary", estimator, forest)
    x = np.random.default_rng(6).normal(size=(1_000, N_FEATURES))
    np.testing.assert_array_equal(score(model, x), estimator.predict_proba(x)[:, 1])


def _store_with_model(tmp_path: Path) -> tuple[Any, ArtifactStore, HistGradientBoostingClassifier]:
    usecase = load_usecase(EXAMPLE)
    rng = np.random.default_rng(0)
    x = rng.random((300, len(usecase.feature_names)))
    x[rng.random(x.shape) < 0.05] = np.nan
    fitted = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, np.nan_to_num(x[:, 0]) > 0.5)
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    store.save(usecase, fitted, trained_as_of=datetime(2026, 11, 14, 2, tzinfo=UTC), metrics={})
    return usecase, store, fitted


def test_load_model_compiles_a_forest_that_agrees(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    usecase, store, fitted = _store_with_model(tmp_path)
    model = load_model(usecase, store)
    assert model.forest is not None
    assert not [r for r in caplog.records if "differs from the estimator" in r.getMessage()]
    x = np.random.default_rng(1).random((3, len(usecase.feature_names)))
    assert score(model, x).view(np.uint64).tolist() == fitted.predict_proba(x)[:, 1].view(np.uint64).tolist()


@pytest.mark.parametrize("walk", ["raw_walked", "raw_decided"])
def test_a_forest_one_ulp_off_is_caught_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, walk: str
) -> None:
    usecase, store, fitted = _store_with_model(tmp_path)
    right = getattr(Forest, walk)

    def wrong(self: Forest, features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        raw = right(self, features)
        raw[-1] = np.nextafter(raw[-1], np.inf)  # one row, one ulp: the probe must still see it
        return raw

    monkeypatch.setattr(scoring.Forest, walk, wrong)
    model = load_model(usecase, store)
    assert model.forest is None
    assert any(r.levelname == "WARNING" and "differs from the estimator" in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(1).random((3, len(usecase.feature_names)))
    np.testing.assert_array_equal(score(model, x), fitted.predict_proba(x)[:, 1])
