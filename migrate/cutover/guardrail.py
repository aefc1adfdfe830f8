"""Guardrails on the online path, and the automatic rollback to ``shadow`` they trigger.

The serving code records every online call (``guardrail.record(ok, latency_ms)``); the first call that finds
the window in breach of the use case's ``cutover_policy`` gets a `Breach` back and calls `auto_rollback`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from migrate.cutover.flags import Flag, Stage
from migrate.usecase import CutoverPolicy

if TYPE_CHECKING:
    from migrate.cutover.flag_store import FlagStore

__all__ = ["ROLLBACK_FROM", "Breach", "Guardrail", "auto_rollback"]

ROLLBACK_FROM = frozenset({"canary", "online", "online_only"})


@dataclass(frozen=True)
class Breach:
    """The online path broke a threshold over the guardrail's window."""

    kind: Literal["error_rate", "p99_latency"]
    samples: int
    errors: int
    p99_ms: float
    max_error_rate: float
    max_p99_latency_ms: float
    window_s: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.samples

    def __str__(self) -> str:
        if self.kind == "error_rate":
            what = f"error rate {self.error_rate:.2%} > {self.max_error_rate:.2%}"
        else:
            what = f"p99 latency {self.p99_ms:.1f} ms > {self.max_p99_latency_ms:g} ms"
        return f"{what} over the last {self.samples} online calls (window {self.window_s:g} s)"


class Guardrail:
    """A sliding window of online outcomes; reports the first breach of the error-rate or p99 threshold.

    The window holds the calls of the last ``window_s`` seconds, at most ``max_samples`` of them. Nothing is
    reported before ``min_samples`` calls are in it, nor on fewer than ``min_bad`` offending calls (errors for
    the error rate, calls slower than T for the p99): with nearest-rank p99 over 100 calls, 2 slow calls were a
    breach, so a single stall of the machine (every call in flight slow at once) rolled a healthy path back.
    p99 > T is decided exactly, without sorting, by counting calls slower than T: with nearest-rank p99 it holds
    iff more than ``n - ceil(0.99 n)`` calls are. So `record` is O(1) amortised (each call enters and leaves the
    window once). Thread-safe.

    A breach latches: `record` returns it once, then None until `reset` (call it when the flag moves back).
    """

    def __init__(
        self,
        *,
        max_error_rate: float,
        max_p99_latency_ms: float,
        window_s: float = 60.0,
        max_samples: int = 10_000,
        min_samples: int = 100,
        min_bad: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (0 <= max_error_rate <= 1 and max_p99_latency_ms > 0 and window_s > 0):
            raise ValueError("need 0 <= max_error_rate <= 1, max_p99_latency_ms > 0 and window_s > 0")
        if not 1 <= min_samples <= max_samples:
            raise ValueError(f"need 1 <= min_samples ({min_samples}) <= max_samples ({max_samples})")
        if min_bad < 1:
            raise ValueError(f"need min_bad >= 1, not {min_bad}")
        self.max_error_rate = max_error_rate
        self.max_p99_latency_ms = max_p99_latency_ms
        self.window_s = window_s
        self.max_samples = max_samples
        self.min_samples = min_samples
        self.min_bad = min_bad
        self._clock = clock
        self._lock = threading.Lock()
        self._window: deque[tuple[float, bool, float]] = deque()
        self._errors = 0
        self._slow = 0
        self._breach: Breach | None = None

    @classmethod
    def from_policy(
        cls,
        policy: CutoverPolicy,
        *,
        window_s: float = 60.0,
        max_samples: int = 10_000,
        min_samples: int = 100,
        min_bad: int = 10,
    ) -> Guardrail:
        """A guardrail with the use case's ``max_error_rate`` and ``max_p99_latency_ms``; as served, a breach
        takes at least ``min_bad`` offending calls."""
        return cls(
            max_error_rate=policy.max_error_rate,
            max_p99_latency_ms=policy.max_p99_latency_ms,
            window_s=window_s,
            max_samples=max_samples,
            min_samples=min_samples,
            min_bad=min_bad,
        )

    @property
    def breach(self) -> Breach | None:
        """The latched breach, if any."""
        return self._breach

    @property
    def samples(self) -> int:
        return len(self._window)

    def window(self) -> tuple[int, int, int]:
        """The calls in the window now: (calls, errors, calls slower than the p99 limit)."""
        with self._lock:
            return len(self._window), self._errors, self._slow

    def describe(self) -> str:
        """The latched breach in words, or the window's state: what an auto rollback records as its detail."""
        with self._lock:
            if self._breach is not None:
                return str(self._breach)
            n = len(self._window)
            return f"{n} online calls, {self._errors} errors, {self._slow} over {self.max_p99_latency_ms:g} ms"

    def record(self, ok: bool, latency_ms: float) -> Breach | None:
        """Add one online call; returns the breach the first time the window is in breach, else None."""
        now = self._clock()
        with self._lock:
            self._window.append((now, ok, latency_ms))
            self._errors += not ok
            self._slow += latency_ms > self.max_p99_latency_ms
            self._evict(now)
            if self._breach is not None:
                return None
            self._breach = self._judge()
            return self._breach

    def check(self) -> Breach | None:
        """The breach (latched or new) after dropping calls older than the window; for periodic checks."""
        with self._lock:
            self._evict(self._clock())
            if self._breach is None:
                self._breach = self._judge()
            return self._breach

    def reset(self) -> None:
        """Empty the window and clear the latched breach."""
        with self._lock:
            self._window.clear()
            self._errors = self._slow = 0
            self._breach = None

    def _evict(self, now: float) -> None:
        window, oldest = self._window, now - self.window_s
        while window and (window[0][0] < oldest or len(window) > self.max_samples):
            _, ok, latency_ms = window.popleft()
            self._errors -= not ok
            self._slow -= latency_ms > self.max_p99_latency_ms

    def _judge(self) -> Breach | None:
        n = len(self._window)
        if n < self.min_samples:
            return None
        kind: Literal["error_rate", "p99_latency"]
        if self._errors > self.max_error_rate * n and self._errors >= self.min_bad:
            kind = "error_rate"
        elif self._slow > n - _rank99(n) and self._slow >= self.min_bad:
            kind = "p99_latency"
        else:
            return None
        # Only once per breach: the exact p99 for the message.
        latencies = sorted(latency for _, _, latency in self._window)
        p99 = latencies[_rank99(n) - 1]
        return Breach(kind, n, self._errors, p99, self.max_error_rate, self.max_p99_latency_ms, self.window_s)


def _rank99(n: int) -> int:
    """The nearest rank of p99 among ``n`` values, ``ceil(0.99 n)``, in integers (no float rounding)."""
    return (99 * n + 99) // 100


def auto_rollback(
    store: FlagStore, usecase: str, reason: str, detail: str | None = None, *, actor: str = "guardrail"
) -> Flag:
    """Move a use case at canary, online or online_only back to ``shadow``, audited with source ``auto_rollback``.

    A no-op (nothing written) at batch or shadow; atomic against a concurrent change. Returns the flag now in
    force.
    """
    return store.set(
        usecase,
        Stage.SHADOW,
        None,
        actor=actor,
        reason=reason,
        source="auto_rollback",
        detail=detail,
        only_from={Stage(stage) for stage in ROLLBACK_FROM},
    )
