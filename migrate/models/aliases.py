"""Model aliases: which trained version of a use case's model is ``live``, the ``candidate`` and the ``previous``.

An alias names an artifact version and its sha256 (the artifact manifests hold the files). ``live`` is what the
online path serves; a use case without a ``live`` alias serves as before aliases existed (its latest trained
online model, else the batch one). ``promote`` makes a version live and keeps the one it replaces as
``previous``; ``rollback`` swaps ``live`` and ``previous`` back, so a second rollback undoes the first.

Serving workers read the aliases from memory through `AliasWatcher`, which polls the store's revision the way
`migrate.cutover.flags.FlagWatcher` polls the flags' (every 200 ms by default), never per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Literal, Protocol

from migrate.errors import InvalidAliasChangeError

__all__ = [
    "ACTIONS",
    "ALIASES",
    "Alias",
    "AliasEntry",
    "AliasSource",
    "AliasWatcher",
    "Aliases",
    "ModelAlias",
    "check_request",
]

Alias = Literal["live", "candidate", "previous"]
ALIASES: tuple[Alias, ...] = ("live", "candidate", "previous")
ACTIONS = ("promote", "rollback", "candidate", "reject", "refused_by_worker")
_SOURCE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_USECASE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelAlias:
    """One alias of one use case: the artifact version it names, and who moved it there, when and why."""

    usecase: str
    alias: Alias
    version: str
    sha256: str
    revision: int
    updated_at: datetime
    updated_by: str
    reason: str
    percent: int | None = None
    """candidate only: the share of entities (1..99, sticky by entity) it serves as a canary; None: shadow only"""


Aliases = Mapping[tuple[str, str], ModelAlias]
"""Every alias set, by (use case, alias)."""


@dataclass(frozen=True)
class AliasEntry:
    """One attempted alias change, applied or refused; never updated nor deleted."""

    id: int
    usecase: str
    at: datetime
    actor: str
    source: str
    action: str
    version: str | None
    live_before: str | None
    live_after: str | None
    reason: str
    outcome: Literal["applied", "refused"]
    detail: str | None
    revision: int | None

    def describe_change(self) -> str:
        """``"live v1 → v2"``, or the action and its version when live did not move."""
        if self.live_before != self.live_after:
            return f"live {self.live_before or '(default)'} → {self.live_after or '(default)'}"
        return f"{self.action} {self.version or ''}".strip()


def check_request(
    usecase: str, *, reason: str, actor: str, source: str, version: str | None = None, percent: int | None = None
) -> None:
    """Refuse a malformed change before anything is read or written."""
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99):
        raise InvalidAliasChangeError(
            f"{usecase}: canary percent {percent!r} is out of range",
            fix="use a whole number from 1 to 99, or no --canary to score the candidate in the shadow only",
        )
    if not isinstance(usecase, str) or not _USECASE.match(usecase):
        raise InvalidAliasChangeError(
            f"{usecase!r} is not a use-case name", fix="use the name of a registered use case (`migrate usecases list`)"
        )
    if version is not None and not _VERSION.match(version):
        raise InvalidAliasChangeError(
            f"{usecase}: {version!r} is not a model version",
            fix=f"use a version that `migrate models list {usecase}` shows, e.g. v3-0123456789ab",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidAliasChangeError(
            f"{usecase}: a model alias change needs a reason", fix='pass --reason "why", e.g. --reason "better MAE"'
        )
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidAliasChangeError(f"{usecase}: an alias change needs an actor", fix="pass --actor NAME")
    if not _SOURCE.match(source):
        raise InvalidAliasChangeError(
            f"{usecase}: source {source!r} is not a source name", fix="use cli, api, airflow, worker or auto_rollback"
        )


# -- in a serving worker's memory -------------------------------------------------------------------------------

log = logging.getLogger(__name__)
_LOG_EVERY = 50  # consecutive failures between two log lines while the store stays down (~10 s at 200 ms)


class AliasSource(Protocol):
    """What the watcher needs from an `AliasStore`."""

    def revision(self) -> int: ...

    def get_all(self) -> dict[tuple[str, str], ModelAlias]: ...


class AliasWatcher:
    """Keeps every alias in memory, polling ``store.revision()`` every ``interval_s`` seconds.

    ``on_change`` is called from the poller thread with every alias whenever they differ from the last ones, and
    on every full reload (each ``full_reload_s``), so a worker can retry what it could not apply before. When the
    store cannot be read the last aliases stay in force; failures are logged and counted, never raised.
    """

    def __init__(
        self,
        store: AliasSource,
        *,
        interval_s: float = 0.2,
        full_reload_s: float = 30.0,
        on_change: Callable[[Aliases], None] | None = None,
    ) -> None:
        if interval_s <= 0 or full_reload_s <= 0:
            raise ValueError(f"interval_s ({interval_s}) and full_reload_s ({full_reload_s}) must be positive")
        self._store = store
        self.interval_s = interval_s
        self.full_reload_s = full_reload_s
        self._on_change = on_change
        self._aliases: Aliases = MappingProxyType({})
        self._revision = -1
        self._loaded_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._consecutive_errors = 0

    @property
    def aliases(self) -> Aliases:
        """Every alias as last loaded (read-only); no I/O, no lock."""
        return self._aliases

    @property
    def revision(self) -> int:
        """The store revision the aliases in memory reflect (-1 before the first load)."""
        return self._revision

    def start(self) -> AliasWatcher:
        """Load the aliases now (raising if the store cannot be read), then keep polling in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("this AliasWatcher is already started")
        self._load(self._store.revision(), force=True)
        self._thread = threading.Thread(target=self._run, name="migrate-alias-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop polling and wait (at most ``timeout_s``) for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def poll(self) -> bool:
        """One poll: reload if the revision moved (or a reload is due); True if the aliases changed."""
        try:
            revision = self._store.revision()
            due = self._consecutive_errors > 0 or time.monotonic() - self._loaded_at >= self.full_reload_s
            changed = self._load(revision, force=due) if revision != self._revision or due else False
        except Exception as exc:  # the watcher must outlive any store failure: keep the last aliases
            self.errors += 1
            self._consecutive_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._consecutive_errors == 1 or self._consecutive_errors % _LOG_EVERY == 0:
                log.warning(
                    "model aliases not refreshed (%d consecutive failures; the last ones stay in force): %s",
                    self._consecutive_errors,
                    self.last_error,
                )
            return False
        self._consecutive_errors = 0
        return changed

    def _load(self, revision: int, *, force: bool = False) -> bool:
        loaded: Aliases = MappingProxyType(dict(self._store.get_all()))
        changed = loaded != self._aliases or revision != self._revision
        self._aliases, self._revision = loaded, revision
        self._loaded_at = time.monotonic()
        if (changed or force) and self._on_change is not None:
            try:
                self._on_change(loaded)
            except Exception:  # a failing subscriber must not stop the polling: it is retried on the next reload
                log.exception("applying the model aliases failed; retried at the next reload")
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
