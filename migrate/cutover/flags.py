"""Cutover flags: which path serves each use case, moved stage by stage with an audit row per change.

Stages, in order: ``batch`` → ``shadow`` → ``canary`` (1..99 % of entities) → ``online`` → ``online_only``.
Moving back is always allowed; moving forward past a stage needs ``force``. The flags live beside the lookup
tables (``cutover_flags``, one row per use case; ``cutover_audit``, append-only); a use case without a row is
at ``batch``. Serving workers read them from memory through `FlagWatcher`, never from the database.

The serving side needs this module (`route`, the `Flag` helpers, `FlagWatcher`) and `migrate.cutover.guardrail`
(`Guardrail`, `auto_rollback`). The store itself is `migrate.cutover.flag_store.FlagStore`.

`FlagWatcher.current` reads an immutable mapping swapped in whole by a poller thread: no lock, no database. A
change reaches every worker within one poll interval plus one reload (200 ms + a few ms by default). When the
store cannot be reached the last flags stay in force; failures are logged and counted, never raised.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol, SupportsIndex

from migrate.errors import InvalidFlagError
from migrate.revision_watcher import RevisionWatcher

__all__ = [
    "BUCKETS",
    "SOURCES",
    "AuditEntry",
    "Flag",
    "FlagSource",
    "FlagWatcher",
    "Route",
    "Stage",
    "bucket",
    "canonical_key",
    "check_change",
    "route",
    "skipped_stages",
]

BUCKETS = 10_000
SOURCES = ("cli", "api", "airflow", "auto_rollback", "verdict")
Route = Literal["batch", "online"]
KeyPart = str | SupportsIndex  # ints, numpy ints
_SOURCE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_USECASE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Stage(StrEnum):
    """Where a use case is in its move from batch predictions to real-time serving."""

    BATCH = "batch"
    SHADOW = "shadow"
    CANARY = "canary"
    ONLINE = "online"
    ONLINE_ONLY = "online_only"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)


_ORDER = tuple(Stage)


@dataclass(frozen=True)
class Flag:
    """One use case's stage (and canary percentage); ``revision`` 0 means never set, hence ``batch``."""

    usecase: str
    stage: Stage = Stage.BATCH
    percent: int | None = None
    revision: int = 0
    updated_at: datetime | None = None
    updated_by: str | None = None
    reason: str | None = None

    @property
    def reads_lookup(self) -> bool:
        """The lookup table may be read: to serve, to compare, or as the fallback. False only at online_only."""
        return self.stage is not Stage.ONLINE_ONLY

    @property
    def computes_online(self) -> bool:
        """The online model is called for (some) requests: every stage but batch."""
        return self.stage is not Stage.BATCH

    @property
    def logs_shadow(self) -> bool:
        """Both paths answer and both are logged, whichever served: shadow, canary and online (the comparator
        keeps measuring after the switch; online_only reads no lookup table, so it has nothing to compare)."""
        return self.stage in (Stage.SHADOW, Stage.CANARY, Stage.ONLINE)

    @property
    def falls_back(self) -> bool:
        """An online-routed request falls back to the lookup table on timeout or error (canary and online)."""
        return self.stage in (Stage.CANARY, Stage.ONLINE)

    def describe(self) -> str:
        """``"canary 10%"``, ``"online"``."""
        return f"{self.stage} {self.percent}%" if self.stage is Stage.CANARY else str(self.stage)


@dataclass(frozen=True)
class AuditEntry:
    """One attempted flag change, applied or refused; never updated nor deleted."""

    id: int
    usecase: str
    at: datetime
    actor: str
    source: str
    from_stage: str
    from_percent: int | None
    to_stage: str | None
    to_percent: int | None
    reason: str
    outcome: Literal["applied", "refused"]
    detail: str | None
    revision: int | None

    def describe_change(self) -> str:
        """``"shadow → canary 10%"``."""
        before = f"{self.from_stage} {self.from_percent}%" if self.from_percent is not None else self.from_stage
        after = self.to_stage or "(no stage)"
        after = f"{after} {self.to_percent}%" if self.to_percent is not None else after
        return f"{before} → {after}"


def canonical_key(key: KeyPart | tuple[KeyPart, ...]) -> bytes:
    """The key's stable byte form: a compact JSON array of ints and strings (``(3, "a")`` → ``[3,"a"]``).

    A scalar is a one-part key. numpy integers count as ints; floats and bools are refused, because their
    text forms are not one-to-one with the entity (1.0 vs 1, True vs 1).
    """
    parts = key if isinstance(key, tuple) else (key,)
    canonical: list[int | str] = []
    for part in parts:
        if isinstance(part, str):
            canonical.append(part)
        elif isinstance(part, bool):
            raise TypeError(f"key part {part!r} is a bool; entity keys are ints or strings")
        else:
            try:
                canonical.append(operator.index(part))
            except TypeError:
                raise TypeError(
                    f"key part {part!r} is a {type(part).__name__}; entity keys are ints or strings"
                ) from None
    return json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode()


def bucket(usecase: str, key: KeyPart | tuple[KeyPart, ...]) -> int:
    """The entity's canary bucket in ``0..9999``: blake2b of the use case and the canonical key.

    Stable across processes, machines and Python versions (unlike ``hash()``). The use case salts it, so one
    entity is not in the first canary of every use case.
    """
    digest = hashlib.blake2b(canonical_key(key), digest_size=8, key=usecase.encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_shadow_sample(usecase: str, key: KeyPart | tuple[KeyPart, ...], percent: float) -> bool:
    """Whether the shadow comparison logs ``key`` when it samples ``percent`` of the entities (``shadow``).

    A hash of its own (blake2b personalised apart from the canary's `bucket`), so the sample holds entities of
    both canary groups in their shares; in ``0..9999``, as the canary's, and stable across processes.
    """
    if percent >= 100:
        return True
    digest = hashlib.blake2b(canonical_key(key), digest_size=8, key=usecase.encode(), person=b"shadow-sample").digest()
    return int.from_bytes(digest, "big") % BUCKETS < percent * (BUCKETS // 100)


def route(flag: Flag, key: KeyPart | tuple[KeyPart, ...]) -> Route:
    """Which path serves ``key``: ``online`` at online/online_only, and at canary iff bucket < percent × 100.

    Raising a canary's percent keeps every entity already online there (the buckets below grow).
    """
    stage = flag.stage
    if stage is Stage.BATCH or stage is Stage.SHADOW:
        return "batch"
    if stage is Stage.CANARY:
        return "online" if bucket(flag.usecase, key) < (flag.percent or 0) * (BUCKETS // 100) else "batch"
    return "online"


def check_change(
    usecase: str, stage: str | Stage, percent: int | None, *, reason: str, actor: str, source: str
) -> tuple[Stage, int | None]:
    """The requested stage and percent, validated on their own (not against the current flag)."""
    if not isinstance(usecase, str) or not _USECASE.match(usecase):
        raise InvalidFlagError(
            f"{usecase!r} is not a use-case name", fix="use the name of a registered use case (`migrate usecases list`)"
        )
    try:
        target = Stage(stage)
    except ValueError:
        raise InvalidFlagError(
            f"{usecase}: {stage!r} is not a cutover stage", fix=f"use one of: {', '.join(s.value for s in Stage)}"
        ) from None
    if target is Stage.CANARY:
        if percent is None:
            raise InvalidFlagError(
                f"{usecase}: the canary stage needs a percentage of entities to serve online",
                fix="pass --percent N with N from 1 to 99 (e.g. --percent 5)",
            )
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
            raise InvalidFlagError(
                f"{usecase}: canary percent {percent!r} is out of range",
                fix="use a whole number from 1 to 99; for 0 % use stage shadow, for 100 % use stage online",
            )
    elif percent is not None:
        raise InvalidFlagError(
            f"{usecase}: a percent ({percent}) only applies to the canary stage, not {target}",
            fix=f"drop --percent, or use --stage canary --percent {percent}",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidFlagError(
            f"{usecase}: a flag change needs a reason", fix='pass --reason "why", e.g. --reason "shadow metrics OK"'
        )
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidFlagError(f"{usecase}: a flag change needs an actor", fix="pass --actor NAME (default: $USER)")
    if not _SOURCE.match(source):
        raise InvalidFlagError(
            f"{usecase}: source {source!r} is not a source name", fix=f"use one of {', '.join(SOURCES)}"
        )
    return target, percent


def skipped_stages(current: Stage, target: Stage) -> list[Stage]:
    """The stages a forward move jumps over (``batch`` → ``canary`` skips ``shadow``); none going back."""
    return list(_ORDER[current.rank + 1 : target.rank])


# -- in a serving worker's memory -------------------------------------------------------------------------------


class FlagSource(Protocol):
    """What the watcher needs from a `FlagStore`."""

    def revision(self) -> int: ...

    def get_all(self) -> dict[str, Flag]: ...


class FlagWatcher(RevisionWatcher[str, Flag]):
    """Keeps every use case's flag in memory, polling ``store.revision()`` every ``interval_s`` seconds
    (migrate/revision_watcher.py: full reloads every ``full_reload_s`` and after failures; the last flags stay in
    force while the store cannot be read). ``on_change`` is called from the poller thread with the new flags
    whenever they differ from the last ones.
    """

    def __init__(
        self,
        store: FlagSource,
        *,
        interval_s: float = 0.2,
        full_reload_s: float = 30.0,
        on_change: Callable[[Mapping[str, Flag]], None] | None = None,
    ) -> None:
        super().__init__(
            store, what="cutover flags", interval_s=interval_s, full_reload_s=full_reload_s, on_change=on_change
        )

    # -- hot path ----------------------------------------------------------------------------------------------

    def current(self, usecase: str) -> Flag:
        """The use case's flag as last loaded (``batch`` if never set); no I/O, no lock."""
        flag = self.rows.get(usecase)
        return flag if flag is not None else Flag(usecase)

    @property
    def flags(self) -> Mapping[str, Flag]:
        """Every flag as last loaded (read-only)."""
        return self.rows
