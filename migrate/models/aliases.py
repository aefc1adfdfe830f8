"""Model aliases: which trained version of a use case's model is ``live``, the ``candidate`` and the ``previous``.

An alias names an artifact version and its sha256 (the artifact manifests hold the files). ``live`` is what the
online path serves; a use case without a ``live`` alias serves as before aliases existed (its latest trained
online model, else the batch one). ``promote`` makes a version live and keeps the one it replaces as
``previous``; ``rollback`` swaps ``live`` and ``previous`` back, so a second rollback undoes the first.

Serving workers read the aliases from memory through `AliasWatcher`, which polls the store's revision the way
`migrate.cutover.flags.FlagWatcher` polls the flags' (every 200 ms by default), never per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from migrate.errors import InvalidAliasChangeError
from migrate.revision_watcher import RevisionWatcher

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


class AliasSource(Protocol):
    """What the watcher needs from an `AliasStore`."""

    def revision(self) -> int: ...

    def get_all(self) -> dict[tuple[str, str], ModelAlias]: ...


class AliasWatcher(RevisionWatcher[tuple[str, str], ModelAlias]):
    """Keeps every alias in memory, polling ``store.revision()`` every ``interval_s`` seconds
    (migrate/revision_watcher.py).

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
        super().__init__(
            store,
            what="model aliases",
            interval_s=interval_s,
            full_reload_s=full_reload_s,
            on_change=on_change,
            notify_reloads=True,
        )

    @property
    def aliases(self) -> Aliases:
        """Every alias as last loaded (read-only); no I/O, no lock."""
        return self.rows
