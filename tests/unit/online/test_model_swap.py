"""The hot swap in one process: the online path follows the live alias, never fails a call, refuses bad models."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.ensemble import HistGradientBoostingClassifier

from migrate.artifact import ArtifactInfo, ArtifactStore
from migrate.models.aliases import ModelAlias
from migrate.models.lifecycle import load_version
from migrate.registry import load_usecase
from migrate.usecase import UseCase
from online.features.store import OnlineRead
from online.serving.model_swap import ModelSwitcher
from online.serving.prediction_paths import Paths
from online.serving.predictor import OnlinePredictor

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
KEYS = [(1, 1_000_001), (2, 1_000_002)]


class _NoFeatures:
    """A feature store that has nothing stored: every feature is missing (NaN), so scores depend on the model only."""

    def read_online(self, usecase: str, keys: Any, names: Any, group_keys: Any, partitions: int) -> OnlineRead:
        return OnlineRead([None] * len(keys), {group: [[] for _ in keys] for group in group_keys})


class _Audit:
    def __init__(self) -> None:
        self.refused: list[dict[str, Any]] = []

    def record_refused(self, usecase: str, **row: Any) -> None:
        self.refused.append({"usecase": usecase, **row})


def _fit(width: int, seed: int) -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(seed)
    x = rng.random((300, width))
    x[rng.random(x.shape) < 0.2] = np.nan  # missing values seen in training: NaN rows score differently per model
    y = (np.nan_to_num(x[:, 0], nan=0.9) + 0.3 * rng.random(300) > 0.6).astype(int)
    return HistGradientBoostingClassifier(max_iter=10, random_state=seed).fit(x, y)


@pytest.fixture
def usecase() -> UseCase:
    return load_usecase(ROOT / "usecases" / "item_availability.yaml")


@pytest.fixture
def world(tmp_path: Path, usecase: UseCase) -> tuple[ArtifactStore, ArtifactInfo, ArtifactInfo]:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    width = len(usecase.feature_names)
    a, b = (store.save(usecase, _fit(width, seed), trained_as_of=AS_OF, metrics={}) for seed in (1, 2))
    return store, a, b


def _alias(info: ArtifactInfo, alias: str = "live", sha256: str | None = None) -> ModelAlias:
    return ModelAlias(info.usecase, alias, info.version, sha256 or info.sha256, 1, AS_OF, "test", "test")  # type: ignore[arg-type]


def _aliases(*aliases: ModelAlias) -> dict[tuple[str, str], ModelAlias]:
    return {(a.usecase, a.alias): a for a in aliases}


def _setup(usecase: UseCase, files: ArtifactStore, first: ArtifactInfo) -> tuple[Paths, ModelSwitcher, _Audit]:
    features = _NoFeatures()
    predictor = OnlinePredictor(usecase, load_version(usecase, files, first.version), features)  # type: ignore[arg-type]
    paths = Paths(None, None, predictor)
    audit = _Audit()
    switcher = ModelSwitcher(
        {usecase.name: usecase},
        {usecase.name: paths},
        features,
        files,
        audit=audit,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        actor="worker:1",
    )
    return paths, switcher, audit


def _expected(files: ArtifactStore, usecase: UseCase, info: ArtifactInfo) -> float:
    """The version's score of a row with every feature missing, from its estimator (not the forest nor `score`)."""
    estimator = load_version(usecase, files, info.version).fitted()
    return float(estimator.predict_proba(np.full((1, len(usecase.feature_names)), np.nan))[0, 1])


def test_promote_and_roll_back_ten_times_under_concurrent_calls(usecase: UseCase, world: Any) -> None:
    files, a, b = world
    paths, switcher, _ = _setup(usecase, files, a)
    expected = {a.version: _expected(files, usecase, a), b.version: _expected(files, usecase, b)}
    assert expected[a.version] != expected[b.version]  # else the test could not tell the models apart
    seen: list[tuple[str, float]] = []
    errors: list[str] = []
    stop = threading.Event()

    def call() -> None:
        while not stop.is_set():
            outcome = paths.online(KEYS, [0, 1], NOW, {})
            if outcome.error is not None:
                errors.append(outcome.error)
            seen.extend((r.model_version, r.prediction) for r in outcome.results.values())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            for live, previous in ((b, a), (a, b)):
                switcher.apply(_aliases(_alias(live), _alias(previous, "previous")))
                # Once apply returns, the next call is answered by the new live model: no lag, no mix.
                after = paths.online(KEYS, [0, 1], NOW, {})
                assert {r.model_version for r in after.results.values()} == {live.version}
                assert switcher.served(usecase.name) == live.version and switcher.problems == {}
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(seen) > 40 and {version for version, _ in seen} == {a.version, b.version}
    # Every answer is its own model's score: never one model's version with the other's prediction.
    assert all(prediction == expected[version] for version, prediction in seen)


def test_a_tampered_live_alias_is_refused_and_the_live_model_keeps_serving(usecase: UseCase, world: Any) -> None:
    files, a, b = world
    path = files.root / usecase.name / b.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    paths, switcher, audit = _setup(usecase, files, a)
    for _ in range(3):  # every reload retries; the refusal is audited once
        switcher.apply(_aliases(_alias(b), _alias(a, "previous")))
    assert switcher.served(usecase.name) == a.version
    assert paths.online(KEYS, [0, 1], NOW, {}).error is None
    assert b.version in switcher.problems[usecase.name] and "sha256" in switcher.problems[usecase.name]
    assert len(audit.refused) == 1
    assert audit.refused[0]["version"] == b.version and audit.refused[0]["actor"] == "worker:1"
    assert "sha256" in audit.refused[0]["detail"]
    switcher.apply(_aliases(_alias(a), _alias(b, "previous")))  # rolled back: nothing refused any more
    assert switcher.problems == {}


def test_a_feature_incompatible_or_mislabelled_live_alias_is_refused(usecase: UseCase, world: Any) -> None:
    files, a, _ = world
    narrow = files.save(usecase, _fit(len(usecase.feature_names) - 1, 3), trained_as_of=AS_OF, metrics={})
    paths, switcher, audit = _setup(usecase, files, a)
    switcher.apply(_aliases(_alias(narrow)))
    assert switcher.served(usecase.name) == a.version
    assert f"takes {len(usecase.feature_names) - 1} features" in switcher.problems[usecase.name]
    switcher.apply(_aliases(_alias(a, sha256="0" * 64)))  # the alias names another file than the manifest's
    assert "the manifest records" in switcher.problems[usecase.name]
    assert [r["version"] for r in audit.refused] == [narrow.version, a.version]
    assert paths.online(KEYS, [0, 1], NOW, {}).error is None


def test_the_candidate_is_loaded_ahead_so_promoting_it_needs_no_file(usecase: UseCase, world: Any) -> None:
    files, a, b = world
    _, switcher, _ = _setup(usecase, files, a)
    switcher.apply(_aliases(_alias(a), _alias(b, "candidate")))
    (files.root / usecase.name / b.file).unlink()  # from here on B can only come from memory
    switcher.apply(_aliases(_alias(b), _alias(a, "previous")))
    assert switcher.served(usecase.name) == b.version and switcher.problems == {}


# -- the candidate as a canary ------------------------------------------------------------------------------------

MANY = [(store, product) for store in range(1, 11) for product in range(200)]


def _canary(info: ArtifactInfo, percent: int) -> ModelAlias:
    return ModelAlias(info.usecase, "candidate", info.version, info.sha256, 1, AS_OF, "t", "t", percent)


def _served_by(paths: Paths) -> dict[tuple[int, int], str]:
    outcome = paths.online(MANY, range(len(MANY)), NOW, {})
    assert outcome.error is None
    return {MANY[i]: r.model_version for i, r in outcome.results.items()}


def test_a_canary_candidate_serves_a_sticky_share_that_grows_without_moving_anyone_back(
    usecase: UseCase, world: Any
) -> None:
    files, a, b = world
    paths, switcher, _ = _setup(usecase, files, a)
    switcher.apply(_aliases(_alias(a), _canary(b, 20)))
    first = _served_by(paths)
    share = sum(v == b.version for v in first.values()) / len(MANY)
    assert 0.15 < share < 0.25, share  # 2,000 entities: 20 % give or take sampling
    assert _served_by(paths) == first  # sticky: the same entities, call after call
    other_paths, other, _ = _setup(usecase, files, a)  # another worker process chooses the same entities
    other.apply(_aliases(_alias(a), _canary(b, 20)))
    assert _served_by(other_paths) == first
    switcher.apply(_aliases(_alias(a), _canary(b, 50)))
    wider = _served_by(paths)
    assert all(wider[key] == b.version for key, version in first.items() if version == b.version)
    assert sum(v == b.version for v in wider.values()) > sum(v == b.version for v in first.values())
    switcher.apply(_aliases(_alias(a), _alias(b, "candidate")))  # no percent: shadow only, nobody served by it
    assert set(_served_by(paths).values()) == {a.version}


def test_a_failing_canary_falls_back_to_live_and_its_guardrail_calls_for_rejection(
    usecase: UseCase, world: Any
) -> None:
    from migrate.cutover.guardrail import Guardrail  # noqa: PLC0415 - this test alone builds one by hand
    from online.serving.canary import CanaryPredictor  # noqa: PLC0415 - this test alone builds one by hand

    files, a, _ = world
    live = OnlinePredictor(usecase, load_version(usecase, files, a.version), _NoFeatures())  # type: ignore[arg-type]

    class _Failing:
        model = live.model

        def predict(self, *args: Any) -> Any:
            raise RuntimeError("candidate down")

    breaches: list[str] = []
    done = threading.Event()

    def on_breach(detail: str) -> None:
        breaches.append(detail)
        done.set()

    guardrail = Guardrail(max_error_rate=0.01, max_p99_latency_ms=1e9, min_samples=5, min_bad=5)
    canary = CanaryPredictor(live, _Failing(), 99, guardrail, on_breach)  # type: ignore[arg-type]
    for _ in range(5):
        results = canary.predict(MANY[:50], NOW)
        assert {r.model_version for r in results} == {a.version}  # every entity answered, by live
    assert done.wait(10) and len(breaches) == 1 and "error rate" in breaches[0]
