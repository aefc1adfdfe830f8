"""The candidate model as a canary: served to a sticky share of entities beside the live model, under a guardrail.

`CanaryPredictor` stands where the online path's predictor stands (`Paths.swap_predictor`). Each entity whose
candidate bucket (`migrate.cutover.flags.bucket`, salted apart from the cutover's canary) falls under the
candidate alias's ``percent`` is scored by the candidate, the rest by the live model; a raised percent keeps
every entity already on the candidate. The candidate never fails a request: if it raises, its entities are scored
by the live model. Its calls feed a guardrail of the use case's cutover policy (error rate, p99 latency); the
first breach calls ``on_breach`` once, on a thread of its own (the serving worker rejects the candidate,
audited, and every worker stops serving it within a second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from migrate.cutover.flags import BUCKETS, bucket
from migrate.cutover.guardrail import Guardrail
from online.features.store import EntityKey
from online.serving.predictor import OnlinePredictor, OnlineResult

__all__ = ["CanaryPredictor", "serves_candidate"]

log = logging.getLogger(__name__)


def serves_candidate(usecase: str, key: EntityKey, percent: int) -> bool:
    """The entity is in the candidate's canary share (stable across processes and machines)."""
    return bucket(f"{usecase}.candidate", key) < percent * (BUCKETS // 100)


class CanaryPredictor(OnlinePredictor):
    """The live model for most entities, the candidate for ``percent`` % of them (sticky per entity).

    An `OnlinePredictor` by substitution (the online path holds one): it keeps none of its state, and delegates.
    """

    def __init__(
        self,
        live: OnlinePredictor,
        candidate: OnlinePredictor,
        percent: int,
        guardrail: Guardrail,
        on_breach: Callable[[str], None],
    ) -> None:  # no super().__init__(): the two predictors it delegates to hold the state
        self.live, self.candidate, self.percent = live, candidate, percent
        self.model = live.model  # the live alias's model: what the hot swap compares against
        self.usecase = live.usecase
        self.features = live.features
        self.guardrail = guardrail
        self._on_breach = on_breach

    def predict(
        self,
        keys: Sequence[EntityKey],
        now: datetime | Sequence[datetime],
        context: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[OnlineResult]:
        """`OnlinePredictor.predict`, each entity by the model its bucket chooses."""
        name = self.usecase.name
        chosen = [i for i, key in enumerate(keys) if serves_candidate(name, key, self.percent)]
        if not chosen:
            return self.live.predict(keys, now, context)
        nows = [now] * len(keys) if isinstance(now, datetime) else list(now)
        contexts: list[Mapping[str, Any]] = (
            [context or {}] * len(keys) if context is None or isinstance(context, Mapping) else list(context)
        )
        picked = set(chosen)
        rest = [i for i in range(len(keys)) if i not in picked]
        results: dict[int, OnlineResult] = {}
        if rest:
            live = self.live.predict([keys[i] for i in rest], [nows[i] for i in rest], [contexts[i] for i in rest])
            results.update(zip(rest, live, strict=True))
        args = ([keys[i] for i in chosen], [nows[i] for i in chosen], [contexts[i] for i in chosen])
        started = time.perf_counter()
        try:
            canary = self.candidate.predict(*args)
            ok = True
        except Exception as exc:  # the candidate never fails a request: its entities go to the live model
            log.warning("%s: candidate %s failed, live answers: %s", name, self.candidate.model.version, exc)
            canary, ok = self.live.predict(*args), False
        breach = self.guardrail.record(ok, (time.perf_counter() - started) * 1000)
        if breach is not None:
            threading.Thread(target=self._on_breach, args=(str(breach),), name="migrate-canary-breach").start()
        results.update(zip(chosen, canary, strict=True))
        return [results[i] for i in range(len(keys))]
