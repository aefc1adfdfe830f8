"""Hot swap: a serving process follows each use case's ``live`` model alias without a restart.

`AliasWatcher` calls `ModelSwitcher.apply` from its poller thread whenever the aliases change. A version not yet
in memory is loaded and verified there (`migrate.models.lifecycle.load_version`: sha256, declared features, the
NumPy forest bit for bit, a probe), off the request path; only then is the use case's predictor replaced, one
reference assignment, so a request in flight finishes with the model it started with and none fails. A version
that fails its checks is refused: the model serving keeps serving, the refusal is logged, counted, audited once per
process and version, and reported by ``/readyz`` (ready, degraded). The candidate is loaded ahead, so promoting
it is a reference swap; the versions no alias names any more are dropped from memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from migrate.artifact import ArtifactStore
from migrate.cutover.guardrail import Guardrail
from migrate.errors import MigrateError
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import Aliases, ModelAlias
from migrate.models.lifecycle import load_version
from migrate.scoring import Model
from migrate.usecase import UseCase
from online.serving.canary import CanaryPredictor
from online.serving.prediction_paths import Paths
from online.serving.predictor import OnlinePredictor

__all__ = ["ModelSwitcher"]

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # use case, version, sha256


class ModelSwitcher:
    """Keeps every served use case on the model its ``live`` alias names, once that model passes its checks."""

    def __init__(
        self,
        usecases: Mapping[str, UseCase],
        paths: Mapping[str, Paths],
        features: Any,
        artifacts: ArtifactStore,
        *,
        audit: AliasStore | None = None,
        registry: CollectorRegistry | None = None,
        actor: str | None = None,
    ) -> None:
        """``audit``: where refusals are recorded (the serving worker's store; None in the comparison process)."""
        self._usecases = usecases
        self._paths = paths
        self._features = features
        self._artifacts = artifacts
        self._audit = audit
        self._actor = actor or f"worker:{os.getpid()}"
        self._loaded: dict[Key, Model] = {}
        self._candidates: dict[str, OnlinePredictor] = {}
        self._refused: dict[Key, str] = {}
        self.problems: dict[str, str] = {}
        """use case → why the version its live alias names is not served (empty while all are)"""
        self._swaps = Counter(
            "migrate_model_swaps",
            "Model alias changes applied (swapped) or refused by this process, by use case.",
            ["usecase", "outcome"],
            registry=registry,
        )

    def apply(self, aliases: Aliases) -> None:
        """Follow ``aliases``: load the versions they name that are not in memory, then swap each live one in."""
        for name, paths in self._paths.items():
            named = {alias: a for (usecase, alias), a in aliases.items() if usecase == name}
            candidate = named.get("candidate")
            model = self._model(candidate) if candidate is not None else None  # loaded ahead: promoting it swaps
            self._set_candidate(name, model)
            live = named.get("live")
            if live is not None:
                self._follow(paths, live)
            self._serve_canary(name, paths, candidate if model is not None else None)
            keep = {(name, a.version, a.sha256) for a in named.values()}
            self._loaded = {k: m for k, m in self._loaded.items() if k[0] != name or k in keep}

    def candidate(self, usecase: str) -> OnlinePredictor | None:
        """The use case's candidate, loaded and checked, for the shadow comparison to score (None: none, or refused)."""
        return self._candidates.get(usecase)

    def _set_candidate(self, name: str, model: Model | None) -> None:
        current = self._candidates.get(name)
        if model is None:
            self._candidates.pop(name, None)
        elif current is None or current.model is not model:
            try:
                self._candidates[name] = OnlinePredictor(self._usecases[name], model, self._features)
            except ValueError as exc:  # features the use case cannot compute online: not scored, said once
                self._candidates.pop(name, None)
                log.error("%s: candidate %s cannot be scored online: %s", name, model.version, exc)

    def _serve_canary(self, name: str, paths: Paths, candidate: ModelAlias | None) -> None:
        """Serve the candidate to its canary share (wrapping the live predictor), or stop serving it."""
        current = paths.predictor
        if current is None:
            return
        base = current.live if isinstance(current, CanaryPredictor) else current
        scoring = self._candidates.get(name)
        if candidate is None or candidate.percent is None or scoring is None:
            if current is not base:
                paths.swap_predictor(base)
                log.warning("%s: the candidate no longer serves a canary", name)
            return
        if isinstance(current, CanaryPredictor) and (current.live, current.candidate, current.percent) == (
            base,
            scoring,
            candidate.percent,
        ):
            return
        guardrail = Guardrail.from_policy(self._usecases[name].cutover_policy)
        paths.swap_predictor(CanaryPredictor(base, scoring, candidate.percent, guardrail, self._breached(candidate)))
        log.warning("%s: candidate %s serves %d%% of entities", name, candidate.version, candidate.percent)

    def _breached(self, candidate: ModelAlias) -> Any:
        def reject(detail: str) -> None:
            log.error("%s: candidate %s breached its guardrail: %s", candidate.usecase, candidate.version, detail)
            self._swaps.labels(candidate.usecase, "canary_breach").inc()
            if self._audit is None:  # the comparison process: the worker beside it rejects the candidate
                return
            try:
                self._audit.reject_candidate(
                    candidate.usecase,
                    actor=self._actor,
                    reason=f"guardrail breached by candidate {candidate.version} serving its canary",
                    source="auto_rollback",
                )
            except MigrateError as exc:
                log.error("%s: could not reject candidate %s: %s", candidate.usecase, candidate.version, exc)

        return reject

    def served(self, usecase: str) -> str | None:
        """The version the use case's online path serves now (None while no model is loaded)."""
        predictor = self._paths[usecase].predictor
        return None if predictor is None else predictor.model.version

    def _follow(self, paths: Paths, live: ModelAlias) -> None:
        name = live.usecase
        current = paths.predictor.model if paths.predictor is not None else None
        if current is not None and (current.version, current.sha256) == (live.version, live.sha256):
            self.problems.pop(name, None)
            return
        model = self._model(live)
        if model is None:
            serving = current.version if current is not None else "nothing (lookup table only)"
            self.problems[name] = f"live alias {live.version} refused, {serving} serves: {self._refused[_key(live)]}"
            return
        try:
            predictor = OnlinePredictor(self._usecases[name], model, self._features)
        except ValueError as exc:  # a model taking features the use case cannot compute online
            self._refuse(live, str(exc))
            self.problems[name] = f"live alias {live.version} refused: {exc}"
            return
        paths.swap_predictor(predictor)
        self.problems.pop(name, None)
        self._swaps.labels(name, "swapped").inc()
        log.warning(
            "%s: now serving model %s (was %s)", name, model.version, current.version if current else "no model"
        )

    def _model(self, alias: ModelAlias) -> Model | None:
        """The verified model the alias names, from memory or loaded now; None (refused, recorded) if it fails."""
        key = _key(alias)
        model = self._loaded.get(key)
        if model is not None:
            return model
        current = self._paths[alias.usecase].predictor
        if current is not None and (current.model.version, current.model.sha256) == key[1:]:
            self._loaded[key] = current.model
            return current.model
        try:
            model = load_version(self._usecases[alias.usecase], self._artifacts, alias.version, alias.sha256)
        except Exception as exc:  # any failure keeps the model serving; retried at each reload, recorded once
            self._refuse(alias, exc.what if isinstance(exc, MigrateError) else f"{type(exc).__name__}: {exc}")
            return None
        self._refused.pop(key, None)
        self._loaded[key] = model
        return model

    def _refuse(self, alias: ModelAlias, why: str) -> None:
        key = _key(alias)
        if key in self._refused:
            return
        self._refused[key] = why
        self._swaps.labels(alias.usecase, "refused").inc()
        log.error("%s: model %s (%s alias) refused, not served: %s", alias.usecase, alias.version, alias.alias, why)
        if self._audit is None:
            return
        try:
            self._audit.record_refused(
                alias.usecase,
                action="refused_by_worker",
                version=alias.version,
                actor=self._actor,
                source="worker",
                reason=f"the {alias.alias} alias names a model that fails its checks",
                detail=why,
            )
        except MigrateError as exc:  # the refusal stands (logged above); the audit row is what failed
            log.error("%s: could not audit the refusal of %s: %s", alias.usecase, alias.version, exc)


def _key(alias: ModelAlias) -> Key:
    return (alias.usecase, alias.version, alias.sha256)
