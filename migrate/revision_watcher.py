"""Follow a store's rows in memory by polling its revision: what serving workers do for the cutover flags and
the model aliases (migrate/cutover/flags.py, migrate/models/aliases.py).

The store offers ``revision()`` (a number that moves with every write) and ``get_all()`` (every row by name).
A watcher loads them at start, then polls the revision every ``interval_s`` and reloads when it moved. It also
reloads whole every ``full_reload_s`` and after the store recovers from failures, so a revision that went back
(tables recreated, a restored backup) cannot hide a change for long. While the store cannot be read the last
rows stay in force; failures are counted and logged (the first, then every 50th), never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Generic, Protocol, Self, TypeVar

K = TypeVar("K")
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)

__all__ = ["RevisionSource", "RevisionWatcher"]

log = logging.getLogger(__name__)
_LOG_EVERY = 50  # consecutive failures between two log lines while the store stays down (~10 s at 200 ms)


class RevisionSource(Protocol[K, V_co]):
    """What a watcher reads: a revision that moves with every write, and every row by its key."""

    def revision(self) -> int: ...

    def get_all(self) -> Mapping[K, V_co]: ...


class RevisionWatcher(Generic[K, V]):
    """Every row of `store` in memory, followed by polling; ``on_change`` is called from the poller thread with
    every row whenever they differ from the last ones, and also on each full reload when ``notify_reloads`` (a
    subscriber that could not apply a change retries it then). A failing subscriber is logged, never fatal."""

    def __init__(
        self,
        store: RevisionSource[K, V],
        *,
        what: str,
        interval_s: float = 0.2,
        full_reload_s: float = 30.0,
        on_change: Callable[[Mapping[K, V]], None] | None = None,
        notify_reloads: bool = False,
    ) -> None:
        if interval_s <= 0 or full_reload_s <= 0:
            raise ValueError(f"interval_s ({interval_s}) and full_reload_s ({full_reload_s}) must be positive")
        self._store = store
        self.what = what  # in log lines and the thread's name: "cutover flags", "model aliases"
        self.interval_s = interval_s
        self.full_reload_s = full_reload_s
        self._on_change = on_change
        self._notify_reloads = notify_reloads
        self._rows: Mapping[K, V] = MappingProxyType({})
        self._revision = -1
        self._loaded_at = 0.0
        self._last_success = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.reloads = 0
        self.last_error: str | None = None
        self._consecutive_errors = 0

    @property
    def rows(self) -> Mapping[K, V]:
        """Every row as last loaded (read-only); no I/O, no lock."""
        return self._rows

    @property
    def revision(self) -> int:
        """The store revision the rows in memory reflect (-1 before the first load)."""
        return self._revision

    @property
    def staleness_s(self) -> float:
        """Seconds since the last successful poll: alert when it grows past a few intervals."""
        return time.monotonic() - self._last_success if self._last_success else float("inf")

    def start(self) -> Self:
        """Load the rows now (raising if the store cannot be read), then keep polling in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError(f"this watcher of the {self.what} is already started")
        self._load(self._store.revision(), reload=True)
        name = f"migrate-{self.what.replace(' ', '-')}-watcher"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop polling and wait (at most ``timeout_s``) for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def poll(self) -> bool:
        """One poll: reload if the revision moved (or a reload is due); True if the rows changed."""
        try:
            revision = self._store.revision()
            due = self._consecutive_errors > 0 or time.monotonic() - self._loaded_at >= self.full_reload_s
            changed = self._load(revision, reload=due) if revision != self._revision or due else False
        except Exception as exc:  # the watcher must outlive any store failure: keep the last rows
            self.errors += 1
            self._consecutive_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._consecutive_errors == 1 or self._consecutive_errors % _LOG_EVERY == 0:
                log.warning(
                    "%s not refreshed (%d consecutive failures; the last ones stay in force): %s",
                    self.what,
                    self._consecutive_errors,
                    self.last_error,
                )
            return False
        self._last_success = time.monotonic()
        if self._consecutive_errors:
            log.warning("%s refreshed again after %d failures", self.what, self._consecutive_errors)
            self._consecutive_errors = 0
        return changed

    def _load(self, revision: int, *, reload: bool) -> bool:
        # A change landing between revision() and get_all() is loaded now and reloaded once more next poll.
        loaded: Mapping[K, V] = MappingProxyType(dict(self._store.get_all()))
        changed = loaded != self._rows or revision != self._revision
        self._rows, self._revision = loaded, revision
        self._loaded_at = self._last_success = time.monotonic()
        self.reloads += 1
        if (changed or (reload and self._notify_reloads)) and self._on_change is not None:
            try:
                self._on_change(loaded)
            except Exception:  # a failing subscriber must not stop the polling
                retry = "retried at the next reload" if self._notify_reloads else "applied with the next change"
                log.exception("applying the %s failed; %s", self.what, retry)
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
