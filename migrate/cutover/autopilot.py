"""Acting on a verdict when the use case's policy says so (``cutover_policy.auto_promote: true``).

The comparator only recommends. With ``auto_promote``, the daily ``shadow_report__<usecase>`` DAG moves the flag
one step along the verdict, audited with source ``verdict``: ``promote`` takes shadow to canary at
``FIRST_CANARY_PERCENT`` and canary to online; ``rollback`` takes canary or online back to shadow; ``hold`` does
nothing. It never goes to ``online_only`` (that retires the lookup table: a person decides) and never leaves
``batch`` (shadow needs a person to start it, and data to judge by).
"""

from __future__ import annotations

from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Flag, Stage
from migrate.usecase import UseCase

__all__ = ["FIRST_CANARY_PERCENT", "act_on_verdict"]

FIRST_CANARY_PERCENT = 10


def act_on_verdict(store: FlagStore, usecase: UseCase, decision: str, reason: str) -> Flag | None:
    """Move the flag one step as `decision` says, if the policy allows it; the new flag, or None (no move)."""
    if not usecase.cutover_policy.auto_promote:
        return None
    current = store.get(usecase.name)
    why = f"verdict {decision} (auto_promote): {reason}"
    if decision == "promote":
        if current.stage is Stage.SHADOW:
            target, percent = Stage.CANARY, FIRST_CANARY_PERCENT
        elif current.stage is Stage.CANARY:
            target, percent = Stage.ONLINE, None
        else:
            return None
        return store.set(usecase.name, target, percent, actor="shadow_report", reason=why, source="verdict")
    if decision == "rollback" and current.stage in (Stage.CANARY, Stage.ONLINE):
        return store.set(usecase.name, Stage.SHADOW, None, actor="shadow_report", reason=why, source="verdict")
    return None
