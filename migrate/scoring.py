"""The one scoring code path: the batch DAG and the online service both call `score`.

A scikit-learn ``HistGradientBoosting*`` model is also compiled into `Forest`, a NumPy evaluation of the same
trees for small matrices: sklearn's `predict_proba` costs ~0.65 ms on one row (a Python call per tree), the
forest ~0.1 ms. It makes the same comparisons and the same float64 additions in the same order (baseline, then
each tree's leaf value), then the estimator's own link function, so its results are the estimator's bit for bit;
`load_model` checks that on a probe matrix through every split and uses the forest only if they agree.

From `TABLES_MIN_ROWS` rows on, the same trees are scored as lookup tables instead (migrate/forest_tables.py),
checked on the same probe against the estimator bit for bit and dropped if they differ: measured on the online
example's model (100 trees, 13 features, one core), walk / tables / sklearn took 111 / 184 / 860 µs for one row,
123 / 107 / 774 µs for 4, 197 / 119 / 785 µs for 16 and 668 / 157 / 1,153 µs for 100. Without tables the walk
serves up to `FOREST_MAX_ROWS` rows and sklearn the rest.

The walk itself has two forms, both checked on the probe: for a few rows (`DECIDE_MAX_CELLS` rows × nodes) every
node's split is decided at once and the trees are followed through those decisions, one ``take`` per level
(`Forest.raw_decided`); for more rows, the trees are walked level by level (`Forest.raw_walked`). On the same
model, one row: 156 → 49 µs (in-process, alternated rounds, load 2–3.5; docs/serving.md).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from migrate.artifact import ArtifactInfo, ArtifactStore, Role, deserialize
from migrate.errors import ArtifactError
from migrate.forest_tables import ForestTables
from migrate.usecase import UseCase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
FOREST_MAX_ROWS = 100  # without lookup tables: above ~100 rows sklearn's compiled loop beats the walk
TABLES_MIN_ROWS = 4  # from 4 rows on the lookup tables beat the walk (measured: the module's docstring)
DECIDE_MAX_CELLS = 1 << 16  # rows × nodes up to which `Forest.raw` decides every node at once (a few rows)
log = logging.getLogger(__name__)


def _expit(raw: FloatArray) -> Any:
    # What sklearn's LogitLink calls, so the same bits.
    from scipy.special import expit  # noqa: PLC0415 - start-up cost: scipy only when a logistic model scores

    return expit(raw)


def inverse_link(name: str) -> Callable[[FloatArray], Any] | None:
    """The inverse of sklearn's link `name` (a class of ``sklearn._loss.link``) as that class computes it, with the
    same functions (so the same bits): identity, NumPy's exp, SciPy's expit; None for a link it does not know."""
    if name == "IdentityLink":
        return lambda raw: raw
    if name == "LogLink":
        return np.exp
    if name == "LogitLink":
        return _expit
    if name == "HalfLogitLink":
        return lambda raw: _expit(2 * raw)
    return None


@dataclass(frozen=True)
class Forest:
    """Every tree of a fitted HistGradientBoosting model in flat arrays, walked for all trees at once."""

    feature: IntArray  # per node (0 at leaves)
    threshold: FloatArray
    missing_left: npt.NDArray[np.bool_]
    children: IntArray  # node n's right child at 2n, its left child at 2n + 1; a leaf is its own child
    value: FloatArray
    roots: IntArray
    depth: int
    baseline: float
    link_name: str  # the estimator's inverse link, by its sklearn class name (`inverse_link`)
    tables: ForestTables | None = field(default=None, repr=False)  # large batches; None: sklearn scores them

    @classmethod
    def compile(cls, estimator: Any) -> Forest | None:
        """The forest of a single-output HistGradientBoosting model without categorical splits, else None."""
        # A model loaded from its compiled forest (`model_from_artifact`) is served without importing sklearn.
        from sklearn import ensemble  # noqa: PLC0415 - start-up cost: sklearn only when a forest is compiled

        if not isinstance(estimator, ensemble.HistGradientBoostingClassifier | ensemble.HistGradientBoostingRegressor):
            return None
        if estimator.n_trees_per_iteration_ != 1 or getattr(estimator, "_preprocessor", None) is not None:
            return None
        link_name = type(estimator._loss.link).__name__
        if inverse_link(link_name) is None:
            return None
        trees = [iteration[0].nodes for iteration in estimator._predictors]
        if not trees or any(nodes["is_categorical"].any() for nodes in trees):
            return None
        offsets = np.cumsum([0, *(len(nodes) for nodes in trees)])
        nodes = np.concatenate(trees)
        own = np.arange(len(nodes), dtype=np.intp)
        leaf = nodes["is_leaf"].astype(bool)
        shift = np.repeat(offsets[:-1], [len(t) for t in trees]).astype(np.intp)
        left = np.where(leaf, own, nodes["left"].astype(np.intp) + shift)
        right = np.where(leaf, own, nodes["right"].astype(np.intp) + shift)
        baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        return cls(
            feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
            threshold=nodes["num_threshold"].astype(np.float64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            children=np.column_stack([right, left]).ravel(),
            value=nodes["value"].astype(np.float64),
            roots=offsets[:-1].astype(np.intp),
            depth=int(max(int(t["depth"].max()) for t in trees)),
            baseline=baseline,
            link_name=link_name,
            tables=ForestTables.compile(trees, baseline),
        )

    @cached_property
    def left(self) -> IntArray:
        """Node n's left child (`children`' odd entries, contiguous for `raw_decided`); a leaf's is itself."""
        return np.ascontiguousarray(self.children[1::2])

    @cached_property
    def right(self) -> IntArray:
        """Node n's right child (`children`' even entries, contiguous)."""
        return np.ascontiguousarray(self.children[0::2])

    def raw(self, features: FloatArray) -> FloatArray:
        """The summed leaf values, shape (rows, 1), as sklearn's ``_raw_predict`` computes them."""
        if features.shape[0] * len(self.value) <= DECIDE_MAX_CELLS:
            return self.raw_decided(features)
        return self.raw_walked(features)

    def raw_decided(self, features: FloatArray) -> FloatArray:
        """`raw` for a few rows: every node's split decided at once, then the trees followed through the decisions.

        One row walked level by level cost ~10 NumPy calls per level (11 levels on the example model); deciding
        all ~3,000 nodes of the forest first is a handful of calls over small arrays, and following the trees is
        one ``take`` per level. Same comparisons, same leaves, same sum as `raw_walked`.
        """
        rows, nodes = features.shape[0], len(self.value)
        x = features.take(self.feature, axis=1)  # each node's input (leaves read column 0 and never use it)
        go_left = x <= self.threshold
        if np.isnan(features).any():  # NaN compares False, so it would go right: it follows missing_go_to_left
            go_left |= np.isnan(x) & self.missing_left
        start = np.arange(rows, dtype=np.intp)[:, None] * nodes  # row r's nodes at r × nodes in `flat`
        flat = (np.where(go_left, self.left, self.right) + start).ravel()  # each node's next node (a leaf: itself)
        node = self.roots + start
        for _ in range(self.depth):
            node = flat.take(node)
        return self._sum(rows, self.value.take(node - start))

    def raw_walked(self, features: FloatArray) -> FloatArray:
        """`raw` level by level, all trees and rows at once (for more rows than `raw_decided` takes)."""
        rows, trees = features.shape[0], len(self.roots)
        flat = features.ravel()
        row_start = (np.arange(rows, dtype=np.intp) * features.shape[1])[:, None]
        node = np.broadcast_to(self.roots, (rows, trees)).copy()
        for _ in range(self.depth):
            x = flat.take(row_start + self.feature.take(node))
            go_left = x <= self.threshold.take(node)
            missing = np.isnan(x)  # NaN compares False, so it would go right: it follows missing_go_to_left
            if missing.any():
                go_left |= missing & self.missing_left.take(node)
            node = self.children.take(2 * node + go_left)
        return self._sum(rows, self.value.take(node))

    def _sum(self, rows: int, leaves: FloatArray) -> FloatArray:
        # sklearn: zeros + baseline, then += each tree in order; accumulate adds left to right (not pairwise).
        terms = np.empty((rows, len(self.roots) + 1), dtype=np.float64)
        terms[:, 0] = np.float64(0.0) + np.float64(self.baseline)
        terms[:, 1:] = leaves
        return np.add.accumulate(terms, axis=1)[:, -1:]

    def score(self, features: FloatArray) -> FloatArray:
        """What `score` returns through the estimator, from `raw` (the tree walk) and the estimator's own link."""
        return self.link(self.raw(features))

    def score_bulk(self, features: FloatArray) -> FloatArray:
        """`score` through the lookup tables (for large batches); only when `tables` is set."""
        if self.tables is None:
            raise ValueError("this forest has no lookup tables: score large batches through the estimator")
        return self.link(self.tables.raw(features))

    @cached_property
    def _inverse(self) -> Callable[[FloatArray], Any]:
        inverse = inverse_link(self.link_name)
        assert inverse is not None  # `compile` and `read_forest` keep only the links it knows
        return inverse

    def link(self, raw: FloatArray) -> FloatArray:
        """Scores from summed leaf values (`raw`): the estimator's inverse link, as its loss applies it."""
        # What the loss's predict_proba writes into column 1 for a binary label (and what predict returns for a
        # regression), without building the two-column array.
        return np.asarray(self._inverse(raw.ravel()), dtype=np.float64)

    def probe(self, n_features: int, seed: int = 0) -> FloatArray:
        """Rows that take every split both ways and the missing way: at, just above and below each threshold."""
        split = self.children[1::2] != np.arange(len(self.value))
        columns, thresholds = self.feature[split], self.threshold[split]
        rng = np.random.default_rng(seed)
        per_column = [thresholds[columns == j] for j in range(n_features)]
        base = np.column_stack([rng.choice(t, 64) if len(t) else rng.standard_normal(64) for t in per_column]).astype(
            np.float64
        )
        rows = [base]
        for value in (thresholds, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf), np.nan):
            probe = base[rng.integers(0, len(base), len(columns))].copy()
            probe[np.arange(len(columns)), columns] = value
            rows.append(probe)
        return np.ascontiguousarray(np.concatenate(rows))


@dataclass(frozen=True)
class Model:
    """A verified, loaded model with the facts every prediction carries."""

    usecase: str
    version: str
    sha256: str
    feature_names: tuple[str, ...]
    label_kind: Literal["binary", "regression"]
    estimator: Any  # None for a model loaded from its compiled forest: `fitted` deserializes it when first needed
    forest: Forest | None = field(default=None, repr=False, compare=False)
    loader: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def score(self, features: FloatArray) -> FloatArray:
        """Predictions for a 2-D matrix whose columns are `feature_names`, in order."""
        return score(self, features)

    def fitted(self) -> Any:
        """The scikit-learn estimator: `estimator`, or (loaded from its compiled forest) the verified artifact
        deserialized on the first call, which imports scikit-learn then."""
        return self.estimator if self.estimator is not None else self._deserialized

    @cached_property
    def _deserialized(self) -> Any:
        assert self.loader is not None, "a model without an estimator is loaded with its loader"
        return self.loader()


def score(model: Model, features: FloatArray) -> FloatArray:
    """Score a feature matrix: probability of the positive class for binary labels, else the value."""
    if features.ndim != 2 or features.shape[1] != len(model.feature_names):
        raise ArtifactError(
            f"model {model.version} of {model.usecase!r} takes {len(model.feature_names)} features "
            f"{list(model.feature_names)}, got a matrix of shape {features.shape}",
            fix="pass the columns named in the use case's batch_features, in that order",
        )
    if features.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    forest = model.forest
    rows = features.shape[0]
    if forest is not None and forest.tables is not None and rows >= TABLES_MIN_ROWS:
        return forest.score_bulk(np.asarray(features, dtype=np.float64))
    if forest is not None and (rows <= FOREST_MAX_ROWS or forest.tables is not None):
        return forest.score(np.asarray(features, dtype=np.float64))
    return _estimator_score(model.fitted(), model.label_kind, features)


def _estimator_score(estimator: Any, label_kind: str, features: FloatArray) -> FloatArray:
    if label_kind == "binary":
        return np.ascontiguousarray(estimator.predict_proba(features)[:, 1], dtype=np.float64)
    return np.asarray(estimator.predict(features), dtype=np.float64)


def compile_forest(estimator: Any, label_kind: str, n_features: int) -> Forest | None:
    """The estimator's `Forest` if it reproduces the estimator's scores bit for bit on a probe, else None.

    Its lookup tables are checked on the same probe, and dropped (large batches go to sklearn) if they differ.
    """
    forest = Forest.compile(estimator)
    if forest is None:
        return None
    probe = forest.probe(n_features)
    return checked_forest(forest, probe, _estimator_score(estimator, label_kind, probe), type(estimator).__name__)


FOREST_FILE_FORMAT = 1  # `forest_file`'s layout; `read_forest` refuses another


def forest_file(estimator: Any, forest: Forest, label_kind: str, n_features: int) -> bytes:
    """`forest` as a NumPy ``.npz`` file (no pickles), with the probe that `compile_forest` checked it on and the
    estimator's scores of that probe: `read_forest` rebuilds it and checks it against those scores, without sklearn.
    """
    probe = forest.probe(n_features)
    arrays: dict[str, Any] = {
        "format": np.array([FOREST_FILE_FORMAT]),
        "feature": forest.feature,
        "threshold": forest.threshold,
        "missing_left": forest.missing_left,
        "children": forest.children,
        "value": forest.value,
        "roots": forest.roots,
        "depth": np.array([forest.depth]),
        "baseline": np.array([forest.baseline], dtype=np.float64),
        "link": np.array(forest.link_name),
        "label_kind": np.array(label_kind),
        "probe": probe,
        "expected": _estimator_score(estimator, label_kind, probe),
    }
    tables = forest.tables
    if tables is not None:
        arrays["tables_columns"] = np.array(tables.columns, dtype=np.int64)
        arrays["tables_values"] = tables.values
        arrays["tables_bits"] = np.array([tables.bits])
        arrays["tables_baseline"] = np.array([tables.baseline], dtype=np.float64)
        for i, (thresholds, masks) in enumerate(zip(tables.thresholds, tables.masks, strict=True)):
            arrays[f"tables_thresholds_{i}"] = thresholds
            arrays[f"tables_masks_{i}"] = masks
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_forest(data: bytes, label_kind: str, n_features: int) -> Forest | None:
    """The forest `forest_file` wrote, checked bit for bit against the estimator's scores of its probe as
    `compile_forest` checks a forest it compiles (its tables dropped if they alone differ); None when the file is of
    another format, label kind or width, names an unknown link, cannot be rebuilt, or its walk differs: the estimator
    is deserialized and scores the model then (a warning says why)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        probe, expected = arrays["probe"], arrays["expected"]
        if (
            int(arrays["format"][0]) != FOREST_FILE_FORMAT
            or str(arrays["label_kind"]) != label_kind
            or probe.ndim != 2
            or probe.shape[1] != n_features
            or inverse_link(str(arrays["link"])) is None
        ):
            log.warning("the compiled forest is of another format, model or link: the estimator scores the model")
            return None
        tables = None
        if "tables_columns" in arrays:
            count = len(arrays["tables_columns"])
            tables = ForestTables(
                thresholds=tuple(arrays[f"tables_thresholds_{i}"] for i in range(count)),
                columns=tuple(int(c) for c in arrays["tables_columns"]),
                masks=tuple(arrays[f"tables_masks_{i}"] for i in range(count)),
                values=arrays["tables_values"],
                bits=int(arrays["tables_bits"][0]),
                baseline=float(arrays["tables_baseline"][0]),
            )
        forest = Forest(
            feature=arrays["feature"].astype(np.intp),
            threshold=arrays["threshold"],
            missing_left=arrays["missing_left"],
            children=arrays["children"].astype(np.intp),
            value=arrays["value"],
            roots=arrays["roots"].astype(np.intp),
            depth=int(arrays["depth"][0]),
            baseline=float(arrays["baseline"][0]),
            link_name=str(arrays["link"]),
            tables=tables,
        )
        return checked_forest(forest, probe, expected, "compiled forest")
    # Not an .npz file, one holding pickles, or arrays missing or of other shapes than `forest_file` writes.
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("the compiled forest cannot be read (%s): the estimator scores the model", exc)
        return None


def checked_forest(forest: Forest, probe: FloatArray, expected: FloatArray, source: str) -> Forest | None:
    """`forest` if both its walks give `expected` on `probe` bit for bit (its tables dropped if they alone
    differ), else None."""
    decided_rows = max(1, DECIDE_MAX_CELLS // len(forest.value))
    for raw, chunk_rows in ((forest.raw_walked, FOREST_MAX_ROWS), (forest.raw_decided, decided_rows)):
        for start in range(0, len(probe), chunk_rows):
            chunk = probe[start : start + chunk_rows]
            bits = forest.link(raw(chunk)).view(np.uint64)
            if not np.array_equal(bits, expected[start : start + len(chunk)].view(np.uint64)):
                log.warning("the NumPy forest of the %s differs from the estimator: sklearn scores it", source)
                return None
    if forest.tables is not None:
        bits = forest.score_bulk(probe).view(np.uint64)
        if not np.array_equal(bits, expected.view(np.uint64)):
            log.warning("the forest tables of the %s differ from the estimator: sklearn scores large batches", source)
            return replace(forest, tables=None)
    return forest


def save_model(
    usecase: UseCase,
    store: ArtifactStore,
    estimator: Any,
    *,
    trained_as_of: datetime,
    metrics: dict[str, float],
    role: Role = "batch",
) -> ArtifactInfo:
    """Save a trained estimator as the use case's next `role` version, with its compiled forest when it has one
    (`forest_file`): what `migrate train` and every trainer write."""
    names = usecase.feature_names if role == "batch" else usecase.online_feature_names
    forest = compile_forest(estimator, usecase.label.kind, len(names))
    compiled = None if forest is None else forest_file(estimator, forest, usecase.label.kind, len(names))
    return store.save(usecase, estimator, trained_as_of=trained_as_of, metrics=metrics, role=role, compiled=compiled)


def model_from_artifact(
    usecase: UseCase,
    store: ArtifactStore,
    *,
    path: Path,
    sha256: str,
    info: ArtifactInfo | None,
    feature_names: tuple[str, ...],
    version: str,
) -> Model:
    """The model of a verified artifact. With a compiled forest in its manifest entry (sha256-checked, then checked
    bit for bit against the scores recorded with it: `read_forest`), the forest scores it and scikit-learn is not
    imported until a batch only the estimator can score (`Model.fitted`); else the artifact is deserialized and its
    forest compiled (`compile_forest`). The artifact's own sha256 is checked either way, before anything is used.

    Raises:
        ArtifactError: a file is missing, its sha256 is not the recorded one, or the estimator takes another number
            of features than `feature_names`.
    """
    data = store.load_bytes(path, sha256, usecase.name)
    kind = usecase.label.kind
    if info is not None and info.forest_file is not None and info.forest_sha256 is not None:
        compiled = store.load_bytes(store.root / usecase.name / info.forest_file, info.forest_sha256, usecase.name)
        forest = read_forest(compiled, kind, len(feature_names))
        if forest is not None:
            return Model(
                usecase.name, version, sha256, feature_names, kind, None, forest, lambda: deserialize(data, path)
            )
    estimator = deserialize(data, path)
    width = getattr(estimator, "n_features_in_", len(feature_names))
    if width != len(feature_names):
        raise ArtifactError(
            f"model {path} of {usecase.name!r} takes {width} features, its manifest declares {len(feature_names)}",
            fix=f"the file does not match its manifest: retrain with `migrate train {usecase.name}`",
        )
    forest = compile_forest(estimator, kind, len(feature_names))
    return Model(usecase.name, version, sha256, feature_names, kind, estimator, forest)


def load_model(usecase: UseCase, store: ArtifactStore, role: Role = "batch") -> Model:
    """Load the use case's current `role` artifact, verifying its sha256 before using it (`model_from_artifact`).

    The online role falls back to the batch model while no online model has been trained.
    """
    path, expected, info = store.resolve(usecase, role)
    feature_names = info.feature_names if info is not None else tuple(usecase.feature_names)
    declared = usecase.online_feature_names if info is not None and info.role == "online" else usecase.feature_names
    if tuple(feature_names) != tuple(declared):
        raise ArtifactError(
            f"model {path} of {usecase.name!r} was trained on {list(feature_names)}, "
            f"but the use case declares {usecase.feature_names}",
            fix=f"retrain with `migrate train {usecase.name}`",
        )
    version = info.version if info is not None else f"pinned-{expected[:12]}"
    return model_from_artifact(
        usecase, store, path=path, sha256=expected, info=info, feature_names=tuple(feature_names), version=version
    )
