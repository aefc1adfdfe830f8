"""The shadow comparison of requests: compute what the served path did not, log both as shadow records.

The comparison process takes the jobs that queued while it worked all at once (`compare_many`): one feature read
and one model call for the online predictions every request still needs, one lookup query for its missing rows and
one candidate call, as the serving worker coalesces requests (online/serving/batcher.py). Each request keeps its own
instant and context. Each record carries the latency of the call that computed each of its entity's answers: the
serving worker's for what it served, else this process's shared call's, a background latency the comparator reports
apart from the served one (comparisons/latency.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from online.serving.prediction_paths import NOTHING, Key, Outcome, Paths, Request
from online.serving.predictor import OnlinePredictor
from online.shadow.record import RequestRecords, WireRecord


class Logger(Protocol):
    """Where shadow records go (a `ShadowLogger`, or a test's recorder)."""

    def log_many(self, records: Sequence[WireRecord]) -> int:
        """Take a request's records; the number taken (the others are dropped, and counted by the logger)."""
        ...


@dataclass(frozen=True)
class Job:
    """One served request to compare: what was served per entity, and what each path already answered."""

    req: Request
    served: Sequence[str]
    online: Outcome
    batch: Outcome


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
    compare_many(paths, logger, usecase, [Job(req, served, online, batch)], candidate=candidate)


def compare_many(
    paths: Paths, logger: Logger, usecase: str, jobs: Sequence[Job], *, candidate: OnlinePredictor | None = None
) -> None:
    """`compare` for several requests of one use case: what they miss is computed in one call per path."""
    missing_online = [[i for i in range(len(j.req.keys)) if i not in j.online.asked] for j in jobs]
    missing_batch = [
        [i for i in range(len(j.req.keys)) if i not in j.batch.asked] if j.req.flag.reads_lookup else [] for j in jobs
    ]
    extra_online = _split(missing_online, _online(paths, jobs, missing_online))
    extra_batch = _split(missing_batch, paths.lookup_read(*_flat(jobs, missing_batch)))
    everyone = [list(range(len(j.req.keys))) for j in jobs]
    scored = _split(everyone, _candidate(candidate, jobs, everyone)) if candidate is not None else [NOTHING] * len(jobs)
    for job, more_online, more_batch, by_candidate in zip(jobs, extra_online, extra_batch, scored, strict=True):
        _log(
            paths,
            logger,
            usecase,
            job,
            extra_online=more_online,
            extra_batch=more_batch,
            scored=by_candidate,
            has_candidate=candidate is not None,
        )


def _flat(jobs: Sequence[Job], indexes: Sequence[Sequence[int]]) -> tuple[list[Key], list[int]]:
    keys = [j.req.keys[i] for j, wanted in zip(jobs, indexes, strict=True) for i in wanted]
    return keys, list(range(len(keys)))


def _moments(jobs: Sequence[Job], indexes: Sequence[Sequence[int]]) -> tuple[list[datetime], list[Mapping[str, Any]]]:
    """Each flattened entity's request time and context (its request's)."""
    nows = [j.req.now for j, wanted in zip(jobs, indexes, strict=True) for _ in wanted]
    contexts: list[Mapping[str, Any]] = [j.req.context for j, wanted in zip(jobs, indexes, strict=True) for _ in wanted]
    return nows, contexts


def _split(indexes: Sequence[Sequence[int]], shared: Outcome) -> list[Outcome]:
    """The outcome of one call for the flattened entities of several jobs, as each job's own (shared latency)."""
    out, position = [], 0
    for wanted in indexes:
        if not wanted:
            out.append(NOTHING)
            continue
        results = {i: shared.results[position + n] for n, i in enumerate(wanted) if position + n in shared.results}
        out.append(Outcome(results, shared.latency_ms, shared.error, frozenset(wanted)))
        position += len(wanted)
    return out


def _online(paths: Paths, jobs: Sequence[Job], indexes: Sequence[Sequence[int]]) -> Outcome:
    keys, flat = _flat(jobs, indexes)
    if not keys:
        return NOTHING
    return paths.online(keys, flat, *_moments(jobs, indexes))


def _candidate(candidate: OnlinePredictor, jobs: Sequence[Job], everyone: Sequence[Sequence[int]]) -> Outcome:
    """The candidate's predictions of every entity of the requests, as the live model's are computed."""
    keys, _ = _flat(jobs, everyone)
    nows, contexts = _moments(jobs, everyone)
    started = time.perf_counter()
    try:
        results = candidate.predict(keys, nows, contexts) if keys else []
    except Exception as exc:  # a failing candidate is evidence against it, never a failed comparison
        return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
    return Outcome(dict(enumerate(results)), (time.perf_counter() - started) * 1000)


def _latency(i: int, served: Outcome, extra: Outcome) -> float | None:
    """The latency of the call that computed entity `i`'s answer of a path: the serving worker's (`served`) or this
    comparison's (`extra`); None when neither asked for it. Never their sum: a served entity's latency is what its
    request waited for, and the comparison's call, over the entities of several requests, is not."""
    if i in served.asked:
        return served.latency_ms
    return extra.latency_ms if i in extra.asked else None


def _log(
    paths: Paths,
    logger: Logger,
    usecase: str,
    job: Job,
    *,
    extra_online: Outcome,
    extra_batch: Outcome,
    scored: Outcome,
    has_candidate: bool,
) -> None:
    req, served, online, batch = job.req, job.served, job.online, job.batch
    flag, now = req.flag, req.now
    # The version read for this request: every row of one read comes from one version, so a miss was read there too.
    read_version = next(
        (r.version for r in (*batch.results.values(), *extra_batch.results.values()) if r is not None), None
    )
    if read_version is None and flag.reads_lookup and not (batch.error or extra_batch.error):
        read_version = paths.active_version()  # every entity missed: the version applications read now
    # What the request's records share, once (the record's fields, sent as ShadowRecord(...)'s bytes, without the
    # model's cost); each entity's own fields below.
    records = RequestRecords(
        request_id=req.id,
        usecase=usecase,
        request_time=now,
        stage=str(flag.stage),
        percent=flag.percent or 0,
        sample_percent=req.sample_percent,
        batch_error=batch.error or extra_batch.error,
        candidate_error=scored.error,
        candidate_latency_ms=scored.latency_ms if has_candidate else None,
        context=req.context,
    )
    misses_counted = batch.error is None and flag.reads_lookup
    logged: list[WireRecord] = []
    for i, entity in enumerate(req.entities):
        on = online.results.get(i) or extra_online.results.get(i)
        row = batch.results.get(i) or extra_batch.results.get(i)
        c = scored.results.get(i)
        logged.append(
            records.record(
                key=entity,
                served_source=served[i],
                batch_prediction=None if row is None else row.prediction,
                batch_model_version=None if row is None else row.model_version,
                lookup_version=read_version if row is None else row.version,
                batch_latency_ms=_latency(i, batch, extra_batch),
                batch_data_age_s=None if row is None else (now - row.features_as_of).total_seconds(),
                batch_miss=row is None and misses_counted,
                online_prediction=None if on is None else on.prediction,
                online_model_version=None if on is None else on.model_version,
                online_feature_ages_s=None if on is None else on.feature_ages_s,
                online_features=None if on is None else on.features,
                online_latency_ms=_latency(i, online, extra_online),
                online_error=online.error if i in online.asked else extra_online.error,
                candidate_prediction=None if c is None else c.prediction,
                candidate_model_version=None if c is None else c.model_version,
            )
        )
    logger.log_many(logged)
