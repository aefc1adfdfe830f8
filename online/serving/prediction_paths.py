"""The two prediction paths of a use case, each call timed and never raising: the lookup read and the live model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migrate.cutover.flags import Flag
from online.serving.batcher import AsyncBatcher, Batcher
from online.serving.predictor import OnlinePredictor, OnlineResult

Key = tuple[int | str, ...]


@dataclass
class Outcome:
    """What one path produced for the entities it was asked about (shadow_wire.py carries it to the shadow process)."""

    results: dict[int, Any]
    latency_ms: float
    error: str | None = None
    asked: frozenset[int] = frozenset()  # the entities this path was called for, answered or not

    def only(self, indexes: Sequence[int]) -> Outcome:
        """This outcome for the entities `indexes` alone, numbered 0, 1, ... in that order (a sampled request)."""
        at = {old: new for new, old in enumerate(indexes)}
        return Outcome(
            {at[i]: result for i, result in self.results.items() if i in at},
            self.latency_ms,
            self.error,
            frozenset(at[i] for i in self.asked if i in at),
        )


@dataclass(frozen=True)
class Request:
    """What the shadow comparison needs of one request."""

    id: str
    now: datetime
    flag: Flag
    keys: list[Key]
    entities: Sequence[dict[str, int | str]]
    context: dict[str, Any]
    sample_percent: float = 100.0  # the share of entities the shadow comparison logs (use case's shadow section)


NOTHING = Outcome({}, 0.0)


class Paths:
    """The lookup table and the online model of one use case.

    The blocking calls are methods (the shadow process calls them); the serving worker awaits the `*_async`
    variants, which coalesce concurrent requests into one feature read and one model call (online/serving/batcher.py).
    """

    def __init__(
        self,
        lookup: Any,
        lookup_spec: Any,
        predictor: OnlinePredictor | None,
        *,
        down: str | None = None,
        deadline_s: float | None = None,
        lookup_deadline_s: float | None = None,
    ) -> None:
        """`predictor` None: the online path is down (`down` says why); every online call answers that error.

        `deadline_s` bounds how long a request waits for the online path (`online_async`): the feature read may
        wait for its socket timeout times its tries (and a request may queue behind such a call), but the request
        stops waiting at the deadline and answers the timeout as the path's error.
        `lookup_deadline_s` bounds the lookup read (`lookup_read_async`) the same way: a database that stopped
        answering (a lock, a failover, a saturated server) holds the read's thread up to its statement timeout,
        never the request.
        """
        self.lookup = lookup
        self.deadline_s = deadline_s
        self.lookup_deadline_s = lookup_deadline_s
        self.spec = lookup_spec
        self.predictor = predictor
        self.down = None if predictor is not None else f"the online model is not loaded: {down or 'unknown reason'}"
        self._online_batcher: AsyncBatcher[tuple[Key, datetime, Mapping[str, Any]], OnlineResult] | None = None
        self._lookup_batcher: Batcher[Key, Any] | None = None
        self._active: int | None = None
        self._active_at = float("-inf")

    def active_version(self, max_age_s: float = 1.0) -> int | None:
        """The lookup version applications read now (cached for `max_age_s`), for shadow records of requests whose
        every entity missed: no row says which version was read. None when the store cannot say."""
        now = time.monotonic()
        if now - self._active_at > max_age_s:
            try:
                info = self.lookup.active(self.spec)
            except Exception:  # the shadow record then leaves the version to the comparator's timeline
                info = None
            self._active, self._active_at = (None if info is None else info.version), now
        return self._active

    def swap_predictor(self, predictor: OnlinePredictor) -> None:
        """Serve `predictor` from the next call on (one reference: a call in flight keeps the one it started with)."""
        self.predictor = predictor
        self.down = None

    def lookup_read(self, keys: Sequence[Key], indexes: Sequence[int]) -> Outcome:
        """The lookup rows of `keys[indexes]`; a failing store becomes the outcome's error."""
        started = time.perf_counter()
        asked = frozenset(indexes)
        try:
            rows = self.lookup.get_many(self.spec, [keys[i] for i in indexes]) if indexes else {}
        except Exception as exc:  # any store failure is a per-entity error, never a 500
            return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", asked)
        return Outcome({i: rows.get(keys[i]) for i in indexes}, (time.perf_counter() - started) * 1000, asked=asked)

    def online(
        self,
        keys: Sequence[Key],
        indexes: Sequence[int],
        now: datetime | Sequence[datetime],
        context: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    ) -> Outcome:
        """Live predictions of `keys[indexes]` as of `now` with `context` (one for all, or one per index: the
        shadow process compares several requests at once); a failing feature store or model becomes the error."""
        started = time.perf_counter()
        asked = frozenset(indexes)
        if self.predictor is None:
            return Outcome({}, 0.0, self.down, asked)
        try:
            results = self.predictor.predict([keys[i] for i in indexes], now, context) if indexes else []
        except Exception as exc:  # the online path may fail in any way; batch is the fallback
            return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", asked)
        return Outcome(dict(zip(indexes, results, strict=True)), (time.perf_counter() - started) * 1000, asked=asked)

    async def lookup_read_async(self, keys: Sequence[Key], indexes: Sequence[int]) -> Outcome:
        """`lookup_read`, one store query for the requests waiting together."""
        started = time.perf_counter()
        asked = frozenset(indexes)
        if self._lookup_batcher is None:
            self._lookup_batcher = Batcher(self._lookup_rows, name="migrate-lookup")
        if not indexes:
            return Outcome({}, 0.0, asked=asked)
        try:
            future = self._lookup_batcher.submit([keys[i] for i in indexes])
            async with asyncio.timeout(self.lookup_deadline_s):  # cancels `future` at the deadline (None: none)
                rows = await future
        except TimeoutError:  # the read goes on in its thread; its rows, when they come, are dropped (batcher.py)
            error = (
                f"TimeoutError: the lookup table did not answer within {self.lookup_deadline_s} s "
                "(MIGRATE_LOOKUP_TIMEOUT_S)"
            )
            return Outcome({}, (time.perf_counter() - started) * 1000, error, asked)
        except Exception as exc:  # any store failure is a per-entity error, never a 500
            return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", asked)
        return Outcome(dict(zip(indexes, rows, strict=True)), (time.perf_counter() - started) * 1000, asked=asked)

    async def online_async(
        self, keys: Sequence[Key], indexes: Sequence[int], now: datetime, context: Mapping[str, Any]
    ) -> Outcome:
        """`online`, one feature read and one model call for the requests waiting together."""
        started = time.perf_counter()
        asked = frozenset(indexes)
        if self.predictor is None:
            return Outcome({}, 0.0, self.down, asked)
        if self._online_batcher is None:
            self._online_batcher = AsyncBatcher(self._predict_items)
        if not indexes:
            return Outcome({}, 0.0, asked=asked)
        try:
            future = self._online_batcher.submit([(keys[i], now, context) for i in indexes])
            async with asyncio.timeout(self.deadline_s):  # cancels `future` at the deadline (None: no deadline)
                results = await future
        except TimeoutError:  # the call goes on in its task; its answer, when it comes, is dropped (batcher.py)
            error = f"TimeoutError: the online path did not answer within {self.deadline_s} s (MIGRATE_REDIS_TIMEOUT_S)"
            return Outcome({}, (time.perf_counter() - started) * 1000, error, asked)
        except Exception as exc:  # the online path may fail in any way; batch is the fallback
            return Outcome({}, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}", asked)
        return Outcome(dict(zip(indexes, results, strict=True)), (time.perf_counter() - started) * 1000, asked=asked)

    def _lookup_rows(self, keys: list[Key]) -> list[Any]:
        rows = self.lookup.get_many(self.spec, list(dict.fromkeys(keys)))
        return [rows.get(key) for key in keys]

    async def _predict_items(self, items: list[tuple[Key, datetime, Mapping[str, Any]]]) -> list[OnlineResult]:
        assert self.predictor is not None  # online_async answers for a missing model before batching
        return await self.predictor.predict_async([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])

    def close(self) -> None:
        """Stop the batchers: the lookup read's thread, and the online path's call in progress (on the loop)."""
        for batcher in (self._online_batcher, self._lookup_batcher):
            if batcher is not None:
                batcher.close()
