"""The shadow comparison of one request: compute what the served path did not, log both as shadow records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from online.serving.prediction_paths import NOTHING, Outcome, Paths, Request
from online.serving.predictor import OnlinePredictor
from online.shadow.record import ShadowRecord


class Logger(Protocol):
    """Where shadow records go (a `ShadowLogger`, or a test's recorder)."""

    def log(self, record: ShadowRecord) -> bool: ...


def compare(
    paths: Paths,
    logger: Logger,
    usecase: str,
    req: Request,
    *,
    served: Sequence[str],
    online: Outcome,
    batch: Outcome,
    candidate: OnlinePredictor | None = None,
) -> None:
    """Log one shadow record per entity with both paths' answers; only what neither path was asked for is
    computed here, so a path that already failed is not retried. A `candidate` model scores every entity too."""
    keys, flag, now = req.keys, req.flag, req.now
    missing_online = [i for i in range(len(keys)) if i not in online.asked]
    missing_batch = [i for i in range(len(keys)) if i not in batch.asked] if flag.reads_lookup else []
    extra_online = paths.online(keys, missing_online, now, req.context) if missing_online else NOTHING
    extra_batch = paths.lookup_read(keys, missing_batch) if missing_batch else NOTHING
    scored = _candidate(candidate, req) if candidate is not None else NOTHING
    # The version read for this request: every row of one read comes from one version, so a miss was read there too.
    read_version = next(
        (r.version for r in (*batch.results.values(), *extra_batch.results.values()) if r is not None), None
    )
    if read_version is None and flag.reads_lookup and not (batch.error or extra_batch.error):
        read_version = paths.active_version()  # every entity missed: the version applications read now
    for i, entity in enumerate(req.entities):
        on = online.results.get(i) or extra_online.results.get(i)
        row = batch.results.get(i) or extra_batch.results.get(i)
        logger.log(
            ShadowRecord(
                request_id=req.id,
                usecase=usecase,
                key=dict(entity),
                request_time=now,
                stage=str(flag.stage),
                percent=flag.percent or 0,
                served_source=served[i],
                batch_prediction=None if row is None else row.prediction,
                batch_model_version=None if row is None else row.model_version,
                lookup_version=read_version if row is None else row.version,
                batch_data_age_s=None if row is None else (now - row.features_as_of).total_seconds(),
                batch_miss=row is None and batch.error is None and flag.reads_lookup,
                online_prediction=None if on is None else on.prediction,
                online_model_version=None if on is None else on.model_version,
                online_feature_ages_s={} if on is None else on.feature_ages_s,
                online_features={} if on is None else on.features,
                batch_latency_ms=batch.latency_ms + extra_batch.latency_ms,
                online_latency_ms=online.latency_ms + extra_online.latency_ms,
                batch_error=batch.error or extra_batch.error,
                online_error=online.error if i in online.asked else extra_online.error,
                candidate_prediction=None if (c := scored.results.get(i)) is None else c.prediction,
                candidate_model_version=None if c is None else c.model_version,
                candidate_error=scored.error,
                candidate_latency_ms=scored.latency_ms if candidate is not None else None,
                context=req.context,
            )
        )


def _candidate(candidate: OnlinePredictor, req: Request) -> Outcome:
    """The candidate's predictions of every entity of the request, as the live model's are computed."""
    started = time.perf_counter()
    try:
        results = candidate.predict(req.keys, req.now, req.context)
    except Exception as exc:  # a failing candidate is evidence against it, never a failed comparison
        return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
    return Outcome(dict(enumerate(results)), (time.perf_counter() - started) * 1000)
