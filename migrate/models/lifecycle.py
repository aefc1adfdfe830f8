"""The model lifecycle's moves — candidate, promote, rollback, reject — each after verifying the version it names.

A version is verified the way a serving worker loads it (`load_version`): the artifact's sha256 against the
manifest (and against the alias, which names it too), its declared features against the use case's, the estimator's
width against them, the NumPy forest checked bit for bit against the estimator, and a probe through `score` that
must answer one finite value per row. A version that fails is refused, audited with the reason, and no alias moves.
"""

from __future__ import annotations

import numpy as np

from migrate.artifact import ArtifactInfo, ArtifactStore
from migrate.errors import ArtifactError, InvalidAliasChangeError, ModelRefusedError
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import ModelAlias
from migrate.scoring import FloatArray, Model, model_from_artifact
from migrate.usecase import UseCase

__all__ = [
    "act_on_verdict",
    "find_version",
    "load_version",
    "promote",
    "reject_candidate",
    "rollback",
    "serving_default",
    "set_candidate",
    "versions",
]

_PROBE_ROWS = 256


def versions(usecase: UseCase, artifacts: ArtifactStore) -> list[ArtifactInfo]:
    """Every trained version of the use case, batch and online models, oldest first."""
    found = artifacts.list(usecase.name, "batch") + artifacts.list(usecase.name, "online")
    return sorted(found, key=lambda info: (info.trained_at, info.version))


def find_version(usecase: UseCase, artifacts: ArtifactStore, version: str) -> ArtifactInfo:
    """The manifest entry of ``version``; an unknown one is an error naming the known ones."""
    known = versions(usecase, artifacts)
    for info in known:
        if info.version == version:
            return info
    names = ", ".join(info.version for info in known[-5:]) or "none trained yet"
    raise InvalidAliasChangeError(
        f"{usecase.name}: no trained model version {version!r} in {artifacts.root / usecase.name}",
        fix=f"use one of the latest: {names} (`migrate models list {usecase.name}`), or `migrate train {usecase.name}`",
    )


def serving_default(usecase: UseCase, artifacts: ArtifactStore) -> tuple[str, str] | None:
    """(version, sha256) of what serves while no live alias is set: the latest online model, else the batch one."""
    try:
        _, sha256, info = artifacts.resolve(usecase, "online")
    except ArtifactError:
        return None
    return None if info is None else (info.version, sha256)


def load_version(usecase: UseCase, artifacts: ArtifactStore, version: str, sha256: str | None = None) -> Model:
    """Load and verify one version; raises `ModelRefusedError` saying which check failed (and the fix)."""
    info = find_version(usecase, artifacts, version)
    name = usecase.name
    if sha256 is not None and sha256 != info.sha256:
        raise ModelRefusedError(
            f"{name}: the alias names {version} with sha256 {sha256[:12]}…, the manifest records {info.sha256[:12]}…",
            fix=f"promote the version again so the alias names the file trained (`migrate models promote {name}`)",
        )
    declared = tuple(usecase.online_feature_names if info.role == "online" else usecase.feature_names)
    if tuple(info.feature_names) != declared:
        raise ModelRefusedError(
            f"{name}: model {version} was trained on {list(info.feature_names)}, "
            f"but the use case declares {list(declared)} for its {info.role} model",
            fix=f"retrain on the declared features (`migrate train {name}`) and promote that version",
        )
    path = artifacts.root / name / info.file
    try:
        model = model_from_artifact(
            usecase, artifacts, path=path, sha256=info.sha256, info=info, feature_names=declared, version=version
        )
    except ArtifactError as exc:  # a file missing or changed, or an estimator of another width than its manifest's
        raise ModelRefusedError(f"{name}: model {version} cannot load: {exc.what}", fix=exc.fix) from None
    _probe(model)
    return model


def _probe(model: Model) -> None:
    """Score a probe through the serving path (every split both ways and missing values, when a forest exists)."""
    rows: FloatArray = np.full((1, len(model.feature_names)), np.nan, dtype=np.float64)
    if model.forest is not None:
        rows = np.concatenate([rows, model.forest.probe(len(model.feature_names))[:_PROBE_ROWS]])
    try:
        scores = model.score(rows)
    except Exception as exc:  # any failure to score is a refusal, with its reason
        raise ModelRefusedError(
            f"{model.usecase}: model {model.version} fails to score a probe: {type(exc).__name__}: {exc}",
            fix=f"retrain with `migrate train {model.usecase}`",
        ) from None
    bad = scores.shape != (len(rows),) or not np.isfinite(scores).all()
    if model.label_kind == "binary" and not bad:
        bad = bool(((scores < 0) | (scores > 1)).any())
    if bad:
        raise ModelRefusedError(
            f"{model.usecase}: model {model.version} answers a probe of {len(rows)} rows with "
            f"{scores.shape[0]} values, not all finite{' probabilities' if model.label_kind == 'binary' else ''}",
            fix=f"retrain with `migrate train {model.usecase}`",
        )


def _verified(
    store: AliasStore,
    artifacts: ArtifactStore,
    usecase: UseCase,
    version: str,
    sha256: str | None,
    *,
    action: str,
    actor: str,
    source: str,
    reason: str,
) -> Model:
    try:
        return load_version(usecase, artifacts, version, sha256)
    except ModelRefusedError as exc:
        store.record_refused(
            usecase.name, action=action, version=version, actor=actor, source=source, reason=reason, detail=exc.what
        )
        raise


def set_candidate(
    store: AliasStore,
    artifacts: ArtifactStore,
    usecase: UseCase,
    version: str,
    *,
    actor: str,
    reason: str,
    source: str,
    percent: int | None = None,
) -> ModelAlias:
    """Name a verified version the candidate: scored beside live, and served to ``percent`` % of entities."""
    model = _verified(
        store, artifacts, usecase, version, None, action="candidate", actor=actor, source=source, reason=reason
    )
    target = (model.version, model.sha256)
    return store.set_candidate(usecase.name, target, actor=actor, reason=reason, source=source, percent=percent)


def promote(
    store: AliasStore,
    artifacts: ArtifactStore,
    usecase: UseCase,
    version: str | None = None,
    *,
    actor: str,
    reason: str,
    source: str,
) -> dict[str, ModelAlias]:
    """Make ``version`` (default: the candidate) live once verified; the live one becomes ``previous``."""
    sha256 = None
    if version is None:
        candidate = store.get(usecase.name).get("candidate")
        if candidate is None:
            raise InvalidAliasChangeError(
                f"{usecase.name}: there is no candidate model to promote",
                fix=f"name a version: `migrate models promote {usecase.name} --version V` "
                f"(`migrate models list {usecase.name}`)",
            )
        version, sha256 = candidate.version, candidate.sha256
    model = _verified(
        store, artifacts, usecase, version, sha256, action="promote", actor=actor, source=source, reason=reason
    )
    return store.promote(
        usecase.name,
        (model.version, model.sha256),
        actor=actor,
        reason=reason,
        source=source,
        serving=serving_default(usecase, artifacts),
    )


def rollback(
    store: AliasStore, artifacts: ArtifactStore, usecase: UseCase, *, actor: str, reason: str, source: str
) -> dict[str, ModelAlias]:
    """Serve the previous version again, once verified (its file may have changed since it served)."""
    previous = store.get(usecase.name).get("previous")
    if previous is not None:
        _verified(
            store,
            artifacts,
            usecase,
            previous.version,
            previous.sha256,
            action="rollback",
            actor=actor,
            source=source,
            reason=reason,
        )
    return store.rollback(usecase.name, actor=actor, reason=reason, source=source)


def reject_candidate(store: AliasStore, usecase: UseCase, *, actor: str, reason: str, source: str) -> ModelAlias | None:
    """Clear the candidate (nothing to verify: no model serves because of it)."""
    return store.reject_candidate(usecase.name, actor=actor, reason=reason, source=source)


def act_on_verdict(
    store: AliasStore,
    artifacts: ArtifactStore,
    usecase: UseCase,
    decision: str,
    reason: str,
    *,
    actor: str,
    source: str,
) -> dict[str, ModelAlias] | ModelAlias | None:
    """Act on the verdict on the candidate: ``promote`` makes it live, ``rollback`` rejects it, ``hold`` waits.

    The caller decides whether to act (a person with ``--apply``, or the policy's ``auto_promote``).
    """
    if store.get(usecase.name).get("candidate") is None:
        return None
    why = f"verdict {decision} on the candidate: {reason}"
    if decision == "promote":
        return promote(store, artifacts, usecase, None, actor=actor, reason=why, source=source)
    if decision == "rollback":
        return reject_candidate(store, usecase, actor=actor, reason=why, source=source)
    return None
