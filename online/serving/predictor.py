"""The online path: features at the request's instant, scored by the one scoring function.

Per request, one feature-store round trip brings the entity's batch features and the window states of every
real-time feature group the request has a key for (the entity's own, and e.g. its store's or its merchant's);
each window is evaluated at the request's instant with `migrate.feature_windows.evaluate`, the function training
evaluates at each prediction time. Context values come from the request body.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from migrate.errors import ModelOutputError
from migrate.feature_windows import Group, evaluate, groups_of
from migrate.scoring import Model, score
from migrate.usecase import UseCase
from online.features.store import BatchRow, EntityKey, FeatureStore, OnlineRead
from online.serving.validation import context_values

_BATCH, _CONTEXT, _WINDOW = 0, 1, 2  # a model column's kind of source
BATCH_GROUP = "batch"  # the materialized batch features, beside the real-time groups (a reserved group name)


@dataclass(frozen=True, slots=True)  # slots: 100 answers per call, each built in ~1.4 µs instead of ~2 µs
class OnlineResult:
    """One entity's live prediction and the age of each feature behind it."""

    prediction: float
    model_version: str
    feature_ages_s: dict[str, float] = field(default_factory=dict)
    features: dict[str, float | None] = field(default_factory=dict)  # the values scored (None: missing → NaN)
    # What the predict answer tells the client: the model inputs scored as missing, and each group's data age
    # (``batch``, ``entity``, each declared group; None: the group holds nothing for this entity).
    missing: list[str] = field(default_factory=list)
    group_ages_s: dict[str, float | None] = field(default_factory=dict)
    # The call that answered it (shared by the entities scored together): the feature read and window evaluation,
    # then the model, in milliseconds — the Server-Timing header's `features` and `model`.
    features_ms: float = 0.0
    model_ms: float = 0.0

    @property
    def data_age_s(self) -> float | None:
        """Age of the oldest feature used (None when the entity had no stored feature at all)."""
        return max(self.feature_ages_s.values()) if self.feature_ages_s else None


class OnlinePredictor:
    """Scores entities live for one use case: one feature read, one model call for the whole batch."""

    def __init__(self, usecase: UseCase, model: Model, features: FeatureStore) -> None:
        self.usecase = usecase
        self.model = model
        self.features = features
        names = list(model.feature_names)
        self._names = names
        self._batch = [n for n in usecase.feature_names if n in names]
        self._groups = [g for g in groups_of(usecase) if g.spec.features]
        # The answer's group order: the batch features first, then the real-time groups as declared.
        self._group_names = [*([BATCH_GROUP] if self._batch else []), *(g.name for g in self._groups)]
        self._context = [c.name for c in usecase.context if c.is_input]
        self._key_names = usecase.entity.key_names
        declared = usecase.realtime_features
        # Window states live in one hash field per partition: read as many as the widest stream has.
        streams = [] if declared is None else [declared.events, *(s.events for s in declared.streams)]
        self._partitions = max((s.partitions for s in streams if s is not None), default=1)
        # Each model feature's kind of source (a small int: the per-entity loop compares it), the source and the
        # index in it: (_BATCH, -1, position in the read's batch row), (_WINDOW, group index, feature index) or
        # (_CONTEXT, -1, index).
        where: dict[str, tuple[int, int, int]] = {n: (_BATCH, -1, i) for i, n in enumerate(self._batch)}
        self._none_stored = BatchRow([None] * len(self._batch), [None] * len(self._batch))
        for g, group in enumerate(self._groups):
            for f, name in enumerate(group.spec.names):
                where[name] = (_WINDOW, g, f)
        for c, name in enumerate(self._context):
            where[name] = (_CONTEXT, -1, c)
        unknown = [n for n in names if n not in where]
        if unknown:
            raise ValueError(f"model of {usecase.name!r} takes {unknown}, which the use case does not declare")
        # Per model column: its index, name, kind, source and index in the source (the per-entity loop's plan).
        self._plan = [(c, n, *where[n]) for c, n in enumerate(names)]
        # The groups whose windows the model reads: the others' windows are not evaluated (their ages still are).
        # E.g. the batch model, served online until an online model is trained, reads no window at all.
        self._evaluated = [
            any(kind == _WINDOW and source == g for _, _, kind, source, _ in self._plan)
            for g in range(len(self._groups))
        ]

    def _group_key(self, group: Group, key: EntityKey, context: Mapping[str, Any]) -> EntityKey | None:
        if group.is_entity:
            return key
        entity = dict(zip(self._key_names, key, strict=True))
        parts = [entity[c] if c in entity else context.get(c) for c in group.key]
        return None if any(p is None for p in parts) else tuple(p for p in parts if p is not None)

    def predict(
        self,
        keys: Sequence[EntityKey],
        now: datetime | Sequence[datetime],
        context: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[OnlineResult]:
        """Live predictions for `keys`, in order, as of `now` with `context` (one of each for all keys, or one per
        key: coalesced requests each keep their own); raises the feature store's error when it cannot answer."""
        started = time.perf_counter()
        nows, contexts, group_keys = self._request(keys, now, context)
        read = self.features.read_online(self.usecase.name, keys, self._batch, group_keys, self._partitions)
        return self._scored(keys, nows, contexts, read, started)

    async def predict_async(
        self,
        keys: Sequence[EntityKey],
        now: datetime | Sequence[datetime],
        context: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[OnlineResult]:
        """`predict` on the serving worker's event loop: the feature read awaited there
        (`FeatureStore.read_online_async`), the windows and the model computed as `predict` computes them."""
        started = time.perf_counter()
        nows, contexts, group_keys = self._request(keys, now, context)
        read = await self.features.read_online_async(self.usecase.name, keys, self._batch, group_keys, self._partitions)
        return self._scored(keys, nows, contexts, read, started)

    def _request(
        self,
        keys: Sequence[EntityKey],
        now: datetime | Sequence[datetime],
        context: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[datetime], list[Mapping[str, Any]], dict[str, list[EntityKey | None]]]:
        """Each key's instant and context, and each group's key per entity (what the feature read takes)."""
        nows = [now] * len(keys) if isinstance(now, datetime) else list(now)
        contexts: list[Mapping[str, Any]] = (
            [context or {}] * len(keys) if context is None or isinstance(context, Mapping) else list(context)
        )
        group_keys: dict[str, list[EntityKey | None]] = {
            g.name: list(keys)
            if g.is_entity
            else [self._group_key(g, k, c) for k, c in zip(keys, contexts, strict=True)]
            for g in self._groups
        }
        return nows, contexts, group_keys

    def _scored(
        self,
        keys: Sequence[EntityKey],
        nows: Sequence[datetime],
        contexts: Sequence[Mapping[str, Any]],
        read: OnlineRead,
        started: float,
    ) -> list[OnlineResult]:
        """The windows evaluated at each key's instant, the model's inputs assembled and scored: one result each."""
        width = len(self._names)
        cells: list[list[float]] = []  # the model's rows as Python lists: one NumPy array made at the end
        ages: list[dict[str, float]] = []
        used: list[dict[str, float | None]] = []
        absent: list[list[str]] = []
        groups: list[dict[str, float | None]] = []
        last_at: datetime | None = None
        at_s = 0.0
        batch_ages: dict[datetime, float] = {}  # per event time, as of `last_at`: an entity's features share a few
        for row in range(len(keys)):
            at = nows[row]
            if at is not last_at:  # coalesced requests each keep their own instant; one request shares one
                last_at, at_s, batch_ages = at, at.timestamp(), {}
            stored_values, stored_times = read.features[row] or self._none_stored
            windows: list[list[float]] = []
            entity_ages: dict[str, float] = {}
            group_ages: dict[str, float | None] = dict.fromkeys(self._group_names)
            for group, evaluated in zip(self._groups, self._evaluated, strict=True):
                partials = read.states[group.name][row]
                windows.append(evaluate(group.spec, partials, at_s) if evaluated else [])
                if not partials:  # no event yet: no window age
                    continue
                newest = None  # the newest event of any partition (a loop: a generator per entity cost more)
                for partial in partials:
                    stamp = partial[0]
                    if stamp is not None and (newest is None or stamp > newest):
                        newest = stamp
                if newest is not None:
                    age = at_s - float(newest)
                    entity_ages.update(dict.fromkeys(group.spec.names, age))
                    group_ages[group.name] = age
            inputs = context_values(self.usecase, dict(contexts[row])) if self._context else []
            entity_values: dict[str, float | None] = {}
            missing: list[str] = []
            batch_age: float | None = None
            row_cells = [math.nan] * width
            for column, name, kind, source, index in self._plan:
                if kind == _BATCH:
                    event_time = stored_times[index]
                    if event_time is None:  # the entity's record does not hold this feature
                        missing.append(name)
                        continue
                    value = stored_values[index]
                    known = batch_ages.get(event_time)
                    if known is None:
                        known = batch_ages[event_time] = (at - event_time).total_seconds()
                    age = known
                    entity_ages[name] = age
                    batch_age = age if batch_age is None or age > batch_age else batch_age
                elif kind == _CONTEXT:
                    value = inputs[index]
                else:
                    value = windows[source][index]
                if value is not None and value == value:  # noqa: PLR0124 - NaN is the one value unequal to itself
                    row_cells[column] = value
                    entity_values[name] = value
                else:
                    entity_values[name] = None
                    missing.append(name)
            if self._batch:
                group_ages[BATCH_GROUP] = batch_age
            cells.append(row_cells)
            ages.append(entity_ages)
            used.append(entity_values)
            absent.append(missing)
            groups.append(group_ages)
        matrix = np.array(cells, dtype=np.float64).reshape(len(keys), width)
        assembled = time.perf_counter()
        predictions = score(self.model, matrix)
        finite = np.isfinite(predictions)
        if not finite.all():  # never served, never logged as an answer: the call fails, batch is the fallback
            bad = np.flatnonzero(~finite)
            raise ModelOutputError(
                f"model {self.model.version} of {self.usecase.name!r} answered {bad.size} of {len(keys)} entities "
                f"with a non-finite prediction (first: {keys[int(bad[0])]!r}: {predictions[int(bad[0])]!r})",
                fix=f"check the model and its inputs; `migrate models rollback {self.usecase.name}` serves the "
                "previous version",
            )
        features_ms, model_ms = (assembled - started) * 1000, (time.perf_counter() - assembled) * 1000
        return [
            OnlineResult(
                float(p), self.model.version, entity_ages, entity_values, missing, group_ages, features_ms, model_ms
            )
            for p, entity_ages, entity_values, missing, group_ages in zip(
                predictions, ages, used, absent, groups, strict=True
            )
        ]
