"""A trained forest is saved compiled beside its artifact, and a model loaded from it scores as scikit-learn does,
bit for bit, without importing scikit-learn (or skops) until a batch only the estimator can score.

The expectations are scikit-learn's own `predict_proba` / `predict`, computed in this process on the same matrices.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from migrate.artifact import ArtifactStore
from migrate.errors import ArtifactError
from migrate.models.lifecycle import load_version
from migrate.registry import load_usecase
from migrate.scoring import compile_forest, forest_file, load_model, read_forest, save_model
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)


@pytest.fixture
def usecase() -> UseCase:
    return load_usecase(ROOT / "usecases" / "item_availability.yaml")


def _data(width: int, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width)) * 10
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


def _classifier(width: int, seed: int = 1) -> HistGradientBoostingClassifier:
    x = _data(width, 400, seed)
    y = (np.nan_to_num(x[:, 0]) + np.random.default_rng(seed).normal(size=400) > 0).astype(int)
    return HistGradientBoostingClassifier(max_iter=30, random_state=seed).fit(x, y)


def _expected(estimator: Any, kind: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(estimator.predict_proba(x)[:, 1] if kind == "binary" else estimator.predict(x), dtype=np.float64)


@pytest.mark.parametrize(
    ("estimator", "kind"),
    [
        (lambda x, y: HistGradientBoostingClassifier(max_iter=25, random_state=0).fit(x, y > 0), "binary"),
        (lambda x, y: HistGradientBoostingRegressor(max_iter=25, random_state=0).fit(x, y), "regression"),
        (lambda x, y: HistGradientBoostingRegressor(loss="poisson", max_iter=25).fit(x, np.exp(y / 4)), "regression"),
    ],
    ids=["logit", "identity", "log"],
)
def test_the_forest_read_back_from_its_file_scores_as_sklearn_bit_for_bit(estimator: Any, kind: str) -> None:
    x = _data(6, 500, 3)
    fitted = estimator(x, np.nan_to_num(x[:, 1]) - np.nan_to_num(x[:, 2]))
    forest = compile_forest(fitted, kind, 6)
    assert forest is not None
    read = read_forest(forest_file(fitted, forest, kind, 6), kind, 6)
    assert read is not None and read.tables is not None and read.link_name == forest.link_name
    for rows in (1, 7, 100, 3_000):  # the decided walk, the level walk, the lookup tables
        matrix = _data(6, rows, rows)
        got = read.score_bulk(matrix) if rows >= 100 else read.score(matrix)
        assert np.array_equal(got.view(np.uint64), _expected(fitted, kind, matrix).view(np.uint64))


def test_a_file_whose_recorded_scores_differ_is_not_used(usecase: UseCase) -> None:
    fitted = _classifier(3)
    forest = compile_forest(fitted, "binary", 3)
    assert forest is not None
    with np.load(io.BytesIO(forest_file(fitted, forest, "binary", 3))) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["expected"] = np.nextafter(arrays["expected"], 2.0)  # one ulp off: another model's scores
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    assert read_forest(buffer.getvalue(), "binary", 3) is None
    assert read_forest(forest_file(fitted, forest, "binary", 3), "regression", 3) is None  # another label kind
    assert read_forest(forest_file(fitted, forest, "binary", 3), "binary", 4) is None  # another width
    assert read_forest(b"not an npz file", "binary", 3) is None
    del arrays["value"]  # an archive without the leaves' values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    assert read_forest(buffer.getvalue(), "binary", 3) is None


def test_save_model_writes_the_forest_beside_the_artifact_and_load_model_serves_from_it(
    usecase: UseCase, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    width = len(usecase.feature_names)
    fitted = _classifier(width)
    info = save_model(usecase, store, fitted, trained_as_of=AS_OF, metrics={})
    assert info.forest_file == f"{info.version}.forest.npz" and info.forest_sha256 is not None
    assert (tmp_path / "artifacts" / usecase.name / info.forest_file).exists()
    model = load_model(usecase, store)
    assert model.estimator is None and model.forest is not None and model.forest.tables is not None
    matrix = _data(width, 64, 9)
    assert np.array_equal(model.score(matrix), _expected(fitted, "binary", matrix))
    # A batch past the walk's size without tables goes to the estimator, deserialized then from the checked file.
    untabled = replace(model, forest=replace(model.forest, tables=None))
    big = _data(width, 400, 10)
    assert np.array_equal(untabled.score(big), _expected(fitted, "binary", big))
    assert type(untabled.fitted()) is HistGradientBoostingClassifier
    assert load_version(usecase, store, info.version).estimator is None  # the hot swap's loader too


def test_a_changed_forest_file_is_refused_like_a_changed_artifact(usecase: UseCase, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    info = save_model(usecase, store, _classifier(len(usecase.feature_names)), trained_as_of=AS_OF, metrics={})
    assert info.forest_file is not None
    path = tmp_path / "artifacts" / usecase.name / info.forest_file
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        load_model(usecase, store)


def test_a_model_without_a_forest_is_saved_and_loaded_as_before(usecase: UseCase, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    width = len(usecase.feature_names)
    x = np.nan_to_num(_data(width, 200, 4))
    linear = LogisticRegression().fit(x, x[:, 0] > 0)
    info = save_model(usecase, store, linear, trained_as_of=AS_OF, metrics={})
    assert info.forest_file is None and info.forest_sha256 is None
    model = load_model(usecase, store)
    assert model.forest is None and model.estimator is not None
    assert np.array_equal(model.score(x[:5]), linear.predict_proba(x[:5])[:, 1])


def test_a_model_loaded_from_its_forest_scores_without_importing_sklearn_or_skops(
    usecase: UseCase, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    width = len(usecase.feature_names)
    fitted = _classifier(width, seed=5)
    save_model(usecase, store, fitted, trained_as_of=AS_OF, metrics={})
    matrix = _data(width, 50, 11)
    np.save(tmp_path / "matrix.npy", matrix)
    script = f"""
import json, sys
import numpy as np
from migrate.artifact import ArtifactStore
from migrate.registry import load_usecase
from migrate.scoring import load_model
from pathlib import Path
usecase = load_usecase(Path({str(ROOT / "usecases" / "item_availability.yaml")!r}))
model = load_model(usecase, ArtifactStore(Path({str(tmp_path / "artifacts")!r}), Path({str(tmp_path)!r})))
scores = model.score(np.load({str(tmp_path / "matrix.npy")!r}))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "skops"))
print(json.dumps({{"scores": scores.tolist(), "modules": loaded}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    assert np.array_equal(np.array(result["scores"]), _expected(fitted, "binary", matrix))
