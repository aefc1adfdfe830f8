"""auto_promote: the verdict moves the flag one step, audited; without it, nothing moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from migrate.cutover.autopilot import act_on_verdict
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration


@pytest.fixture
def store(sql_url: str) -> Iterator[FlagStore]:
    flags = FlagStore.from_settings(get_settings(sql_url=sql_url))
    flags.ensure_schema()
    yield flags
    flags.close()


def usecase(auto: bool) -> UseCase:
    base = Registry(get_settings().usecases_dir).get("item_availability")
    policy = base.cutover_policy.model_copy(update={"auto_promote": auto})
    return base.model_copy(update={"cutover_policy": policy})


def test_promote_walks_shadow_to_canary_to_online_and_stops(store: FlagStore) -> None:
    uc = usecase(True)
    store.set(uc.name, Stage.SHADOW, actor="t", reason="start", source="cli")
    first = act_on_verdict(store, uc, "promote", "better")
    assert first is not None and (first.stage, first.percent) == (Stage.CANARY, 10)
    second = act_on_verdict(store, uc, "promote", "still better")
    assert second is not None and second.stage is Stage.ONLINE
    assert act_on_verdict(store, uc, "promote", "again") is None  # never to online_only by itself
    assert store.get(uc.name).stage is Stage.ONLINE
    audit = [e for e in store.history(uc.name) if e.source == "verdict"]
    assert len(audit) == 2 and all(e.actor == "shadow_report" and "auto_promote" in e.reason for e in audit)


def test_rollback_returns_to_shadow_and_hold_does_nothing(store: FlagStore) -> None:
    uc = usecase(True)
    store.set(uc.name, Stage.SHADOW, actor="t", reason="start", source="cli")
    store.set(uc.name, Stage.CANARY, 20, actor="t", reason="go", source="cli")
    assert act_on_verdict(store, uc, "hold", "few labels") is None
    back = act_on_verdict(store, uc, "rollback", "worse")
    assert back is not None and back.stage is Stage.SHADOW


def test_without_auto_promote_nothing_moves(store: FlagStore) -> None:
    uc = usecase(False)
    store.set(uc.name, Stage.SHADOW, actor="t", reason="start", source="cli")
    assert act_on_verdict(store, uc, "promote", "better") is None
    assert store.get(uc.name).stage is Stage.SHADOW
