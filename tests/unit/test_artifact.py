"""Model artifacts: versioned, hash recorded, refused when the hash does not match or types are foreign."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from migrate.artifact import ArtifactStore, sha256_of
from migrate.errors import ArtifactError
from migrate.registry import load_usecase
from migrate.scoring import load_model, score
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "usecases" / "item_availability.yaml"
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)


@pytest.fixture
def usecase() -> UseCase:
    return load_usecase(EXAMPLE)


@pytest.fixture
def fitted(usecase: UseCase) -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(0)
    x = rng.random((300, len(usecase.feature_names)))
    y = (x[:, 0] + 0.1 * rng.random(300) > 0.5).astype(int)
    return HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)


def test_save_then_load_scores_the_same(tmp_path: Path, usecase: UseCase, fitted: object) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    info = store.save(usecase, fitted, trained_as_of=AS_OF, metrics={"auc": 0.9})
    assert info.version.startswith("v1-") and info.number == 1
    data = (tmp_path / "artifacts" / usecase.name / info.file).read_bytes()
    assert sha256_of(data) == info.sha256
    model = load_model(usecase, store)
    assert model.version == info.version
    x = np.random.default_rng(1).random((5, len(usecase.feature_names)))
    expected = fitted.predict_proba(x)[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(score(model, x), expected)
    second = store.save(usecase, fitted, trained_as_of=AS_OF, metrics={})
    assert second.number == 2
    assert [e.number for e in store.list(usecase.name)] == [1, 2]


def test_tampered_artifact_is_refused(tmp_path: Path, usecase: UseCase, fitted: object) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    info = store.save(usecase, fitted, trained_as_of=AS_OF, metrics={})
    path = tmp_path / "artifacts" / usecase.name / info.file
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as caught:
        load_model(usecase, store)
    assert info.sha256 in caught.value.what and "refusing to load" in caught.value.what
    assert caught.value.fix is not None and "migrate train item_availability" in caught.value.fix


def test_pinned_artifact_with_wrong_hash_is_refused(tmp_path: Path, usecase: UseCase, fitted: object) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    info = store.save(usecase, fitted, trained_as_of=AS_OF, metrics={})
    pinned_path = f"artifacts/{usecase.name}/{info.file}"
    pinned = usecase.model_copy(
        update={"model": usecase.model.model_copy(update={"artifact": pinned_path, "sha256": "0" * 64})}
    )
    with pytest.raises(ArtifactError, match="expected 0000"):
        load_model(pinned, store)
    good = usecase.model_copy(
        update={"model": usecase.model.model_copy(update={"artifact": pinned_path, "sha256": info.sha256})}
    )
    assert load_model(good, store).sha256 == info.sha256


def test_no_trained_model_says_how_to_train(tmp_path: Path, usecase: UseCase) -> None:
    with pytest.raises(ArtifactError) as caught:
        load_model(usecase, ArtifactStore(tmp_path / "artifacts", tmp_path))
    assert caught.value.fix == "run `migrate train item_availability`"


class Foreign:
    """A type outside scikit-learn and NumPy."""


def test_foreign_types_are_refused(tmp_path: Path, usecase: UseCase) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    store.save(usecase, {"payload": Foreign()}, trained_as_of=AS_OF, metrics={})
    with pytest.raises(ArtifactError, match="outside scikit-learn"):
        load_model(usecase, store)


def test_score_checks_the_feature_count(tmp_path: Path, usecase: UseCase, fitted: object) -> None:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    store.save(usecase, fitted, trained_as_of=AS_OF, metrics={})
    model = load_model(usecase, store)
    with pytest.raises(ArtifactError, match="takes 8 features"):
        score(model, np.zeros((2, 3)))
    assert score(model, np.zeros((0, 8))).shape == (0,)
