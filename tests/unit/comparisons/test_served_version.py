"""The version that served: with two nightly lookup versions inside one window, misses are new or known against
the cutoff of the version that answered each request, waste counts each version's rows against the requests it
served, and a batch run published after the window changes neither."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from comparison_fixtures import publish_lookup, record, write_shadow

from comparisons.comparison import Comparison, compare
from lookup_tables import close_lookup_stores
from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

DAY = datetime(2026, 11, 14, tzinfo=UTC)
LISTED = {  # (store, product) → listed at
    (1, 1): DAY - timedelta(days=30),
    (1, 2): DAY - timedelta(days=30),
    (1, 3): DAY + timedelta(hours=1),  # after version 1's cutoff (00:00), before version 2's (04:00)
    (1, 4): DAY + timedelta(hours=5),  # after version 2's cutoff
    (1, 9): DAY - timedelta(days=30),  # listed long ago, but never scored: a known miss
}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, UseCase, int, int]:
    settings = get_settings(state_dir=tmp_path / "state")
    settings.ensure_state_dir()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    with duckdb.connect(str(settings.offline_store_path)) as con:
        con.execute("CREATE TABLE store_products (store_id BIGINT, product_id BIGINT, listed_at TIMESTAMP)")
        for (store, product), listed in LISTED.items():
            con.execute("INSERT INTO store_products VALUES (?, ?, ?)", [store, product, listed.replace(tzinfo=None)])
    first = publish_lookup(settings, usecase, DAY, [(1, 1), (1, 2)])
    second = publish_lookup(settings, usecase, DAY + timedelta(hours=4), [(1, 1), (1, 2), (1, 3)])
    # Requests 06:00-07:59 were answered by the first version (the second went live at 08:00), then by the second.
    served = [  # (minutes after 06:00, product, answered by the lookup table)
        *[(m, 1, True) for m in range(0, 120, 20)],
        *[(m + 5, 3, False) for m in range(0, 120, 30)],  # new to version 1
        *[(m + 7, 9, False) for m in range(0, 120, 60)],  # known to version 1, missing
        *[(120 + m, 3, True) for m in range(0, 120, 40)],
        *[(120 + m + 5, 4, False) for m in range(0, 120, 30)],  # new to version 2
        *[(120 + m + 7, 9, False) for m in range(0, 120, 60)],  # known to version 2, missing
    ]
    records = []
    for n, (minutes, product, hit) in enumerate(served):
        one = record(n, 360 + minutes, product=product, bp=0.5 if hit else None, op=0.5)
        records.append(one.model_copy(update={"lookup_version": first if minutes < 120 else second}))
    write_shadow(settings, records)
    yield settings, usecase, first, second
    close_lookup_stores()


def _numbers(result: Comparison) -> tuple[object, ...]:
    c, w = result.coverage, result.waste
    return (c.misses, c.misses_new, c.misses_known, w.versions, w.rows, w.never_requested, w.share)


def test_misses_and_waste_follow_the_version_that_served_and_a_later_run_changes_nothing(
    world: tuple[Settings, UseCase, int, int],
) -> None:
    settings, usecase, first, second = world
    before = compare(usecase, settings)
    # Misses: version 1 missed (1,3) 4× (new: listed after its cutoff) and (1,9) 2× (known); version 2 missed (1,4)
    # 4× (new) and (1,9) 2× (known). Judged against the newest version alone, (1,3)'s misses would count as known.
    assert (before.coverage.misses, before.coverage.misses_new, before.coverage.misses_known) == (12, 8, 4)
    # Waste: version 1's rows (1,1), (1,2) against what it served: (1,2) unread; version 2's (1,1), (1,2), (1,3)
    # against what it served: (1,1), (1,2) unread. 3 of 5.
    assert (before.waste.versions, before.waste.rows, before.waste.never_requested) == ([first, second], 5, 3)
    assert before.waste.share == pytest.approx(0.6)
    assert before.lookup_version in (first, second)
    # The next night's run scores everyone and becomes active: the report over the same window is unchanged.
    publish_lookup(settings, usecase, DAY + timedelta(hours=28), list(LISTED))
    after = compare(usecase, settings)
    assert _numbers(after) == _numbers(before)
    assert after.noise_floor.active_version == before.noise_floor.active_version
