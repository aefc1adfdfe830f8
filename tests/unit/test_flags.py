"""Cutover flags without a database: routing per stage, canary buckets, transition rules."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest

from migrate.cutover.flags import (
    BUCKETS,
    Flag,
    Stage,
    bucket,
    canonical_key,
    check_change,
    in_shadow_sample,
    route,
    skipped_stages,
)
from migrate.errors import InvalidFlagError

pytestmark = pytest.mark.unit

UC = "item_availability"


def _keys(n: int, seed: int = 11) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return list({(rng.randrange(1_000), rng.randrange(1_000_000)) for _ in range(n * 2)})[:n]


# -- routing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "routed", "reads_lookup", "computes_online", "logs_shadow", "falls_back"),
    [
        (Stage.BATCH, "batch", True, False, False, False),
        (Stage.SHADOW, "batch", True, True, True, False),
        (Stage.ONLINE, "online", True, True, True, True),
        (Stage.ONLINE_ONLY, "online", False, True, False, False),
    ],
)
def test_each_stage_routes_every_key_the_same_way(
    stage: Stage, routed: str, reads_lookup: bool, computes_online: bool, logs_shadow: bool, falls_back: bool
) -> None:
    flag = Flag(UC, stage)
    assert {route(flag, key) for key in _keys(500)} == {routed}
    assert (flag.reads_lookup, flag.computes_online, flag.logs_shadow, flag.falls_back) == (
        reads_lookup,
        computes_online,
        logs_shadow,
        falls_back,
    )


def test_canary_routes_by_bucket_and_keeps_the_lookup_and_the_shadow() -> None:
    flag = Flag(UC, Stage.CANARY, 30)
    for key in _keys(2_000):
        assert route(flag, key) == ("online" if bucket(UC, key) < 3_000 else "batch")
    assert flag.reads_lookup and flag.computes_online and flag.logs_shadow and flag.falls_back
    assert flag.describe() == "canary 30%"


def test_a_never_set_flag_is_batch() -> None:
    flag = Flag(UC)
    assert (flag.stage, flag.percent, flag.revision) == (Stage.BATCH, None, 0)
    assert route(flag, (1, 2)) == "batch"


# -- canary buckets ------------------------------------------------------------------------------------------------


def test_raising_the_canary_keeps_every_entity_already_online() -> None:
    keys = _keys(10_000)
    online = {p: {k for k in keys if route(Flag(UC, Stage.CANARY, p), k) == "online"} for p in range(1, 100)}
    assert online[10] <= online[25] <= online[50]
    assert all(online[p] <= online[p + 1] for p in range(1, 99))


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_canary_shares_match_the_percentage(percent: int) -> None:
    keys = _keys(10_000)
    share = sum(route(Flag(UC, Stage.CANARY, percent), k) == "online" for k in keys) / len(keys)
    # A uniform hash makes the online count Binomial(n, p): 5 standard deviations (0.5 points at 10 %,
    # 2.5 at 50 %) is never exceeded by chance (p < 1e-6), yet a biased hash or a wrong threshold is caught.
    p = percent / 100
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / len(keys)), share


def test_buckets_are_uniform() -> None:
    counts = np.bincount([bucket(UC, k) // 1_000 for k in _keys(10_000)], minlength=10)
    # Chi-square with 9 degrees of freedom: 27.9 is its 99.9th percentile.
    expected = 1_000
    assert float(((counts - expected) ** 2 / expected).sum()) < 27.9, counts


def test_the_hash_is_pinned_and_stable_across_processes() -> None:
    # Pinned: changing the encoding or the hash would move every canary entity at once.
    assert canonical_key((12, "é")) == '[12,"é"]'.encode()
    assert bucket(UC, (12, 345)) == 6240
    assert bucket(UC, (12, "345")) == 5771  # "345" and 345 are different entities
    assert bucket("other", (12, 345)) == 4680  # salted by use case
    assert bucket(UC, 7) == bucket(UC, (7,)) == 1487
    assert bucket(UC, (np.int64(12), 345)) == 6240
    code = "from migrate.cutover.flags import bucket; print(bucket('item_availability', (12, 345)))"
    # A fresh interpreter with another hash seed: hash() would differ, blake2b does not.
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert done.stdout.strip() == "6240"
    assert 0 <= bucket(UC, ("x" * 1000,)) < BUCKETS


@pytest.mark.parametrize("bad", [1.5, True, None, b"x"])
def test_keys_are_ints_or_strings(bad: object) -> None:
    with pytest.raises(TypeError, match="ints or strings"):
        canonical_key((1, bad))  # type: ignore[arg-type]


# -- transitions ---------------------------------------------------------------------------------------------------


def _check(stage: str, percent: int | None = None, reason: str = "ok", usecase: str = UC) -> tuple[Stage, int | None]:
    return check_change(usecase, stage, percent, reason=reason, actor="alice", source="cli")


def test_valid_changes() -> None:
    assert _check("shadow") == (Stage.SHADOW, None)
    assert _check("canary", 1) == (Stage.CANARY, 1)
    assert _check("canary", 99) == (Stage.CANARY, 99)
    assert _check(Stage.ONLINE_ONLY) == (Stage.ONLINE_ONLY, None)


@pytest.mark.parametrize(
    ("stage", "percent", "reason", "usecase", "what", "fix"),
    [
        ("canary", None, "ok", UC, "canary stage needs a percentage", "--percent N"),
        ("canary", 0, "ok", UC, "percent 0 is out of range", "use stage shadow"),
        ("canary", 100, "ok", UC, "percent 100 is out of range", "use stage online"),
        ("canary", True, "ok", UC, "percent True is out of range", "whole number from 1 to 99"),
        ("online", 50, "ok", UC, "only applies to the canary stage, not online", "--stage canary --percent 50"),
        ("live", None, "ok", UC, "'live' is not a cutover stage", "batch, shadow, canary, online, online_only"),
        ("shadow", None, "  ", UC, "needs a reason", "--reason"),
        ("shadow", None, "ok", "Bad Name", "'Bad Name' is not a use-case name", "migrate usecases list"),
    ],
)
def test_malformed_changes_say_what_and_how_to_fix(
    stage: str, percent: int | None, reason: str, usecase: str, what: str, fix: str
) -> None:
    with pytest.raises(InvalidFlagError) as caught:
        _check(stage, percent, reason, usecase)
    assert what in caught.value.what
    assert caught.value.fix is not None and fix in caught.value.fix


def test_bad_actor_and_source_are_refused() -> None:
    with pytest.raises(InvalidFlagError, match="actor"):
        check_change(UC, "shadow", None, reason="ok", actor="", source="cli")
    with pytest.raises(InvalidFlagError, match="source"):
        check_change(UC, "shadow", None, reason="ok", actor="a", source="Not a source")


def test_skipped_stages_only_counts_forward_jumps() -> None:
    assert skipped_stages(Stage.BATCH, Stage.SHADOW) == []
    assert skipped_stages(Stage.SHADOW, Stage.CANARY) == []
    assert skipped_stages(Stage.CANARY, Stage.CANARY) == []
    assert skipped_stages(Stage.BATCH, Stage.CANARY) == [Stage.SHADOW]
    assert skipped_stages(Stage.BATCH, Stage.ONLINE_ONLY) == [Stage.SHADOW, Stage.CANARY, Stage.ONLINE]
    assert skipped_stages(Stage.ONLINE_ONLY, Stage.BATCH) == []  # going back is always allowed
    assert skipped_stages(Stage.ONLINE, Stage.SHADOW) == []


@pytest.mark.parametrize("percent", [0.5, 10.0, 50.0])
def test_the_shadow_sample_takes_its_share_apart_from_the_canary(percent: float) -> None:
    keys = _keys(40_000)
    taken = [k for k in keys if in_shadow_sample(UC, k, percent)]
    p = percent / 100
    assert abs(len(taken) / len(keys) - p) < 5 * math.sqrt(p * (1 - p) / len(keys)), len(taken)
    # A larger sample holds every entity of a smaller one (raising it keeps the entities already compared).
    assert {k for k in keys if in_shadow_sample(UC, k, percent / 2)} <= set(taken)
    # Independent of the canary's buckets: the sampled entities' canary share at 30 % is the population's.
    canary = sum(bucket(UC, k) < 3_000 for k in taken) / len(taken)
    assert abs(canary - 0.3) < 5 * math.sqrt(0.3 * 0.7 / len(taken)), canary
    assert all(in_shadow_sample(UC, k, 100.0) for k in keys[:100])
