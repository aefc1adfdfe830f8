"""The feature-skew check on a stream a moment behind: a live window that misses only the events of the last
moment before its request (`feature_skew_grace`) is counted apart as `behind`, not as skew; a wrong value still is.
Found on the flight trial's rehearsal: departures stamped at the request's own minute, published milliseconds
before it, made 19.6 % of one window "skewed" and held the verdict. Values by hand, from the scans below."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest
from comparison_fixtures import T0, record, write_shadow

from comparisons.comparison import compare
from comparisons.skew import Skew
from migrate.clock import SPEED_FILE, record_speed, recorded_speed
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

SCANS = [  # (product, seconds before T0, found); store 1
    (10, 600, True),
    (10, 300, False),
    (10, 0.3, True),  # the last moment: the stream had not applied it when the request came
    (11, 1200, True),
    (12, 1200, True),
    (12, 0.3, True),
    (13, 1200, True),
    (13, 0.8, False),  # applied when the request came
    (13, 0.3, True),  # not yet
    (14, 1790, False),  # 05:30:10, bucket 05:30: in the 30-minute window until the 06:00 bucket begins
    (14, 900, True),
    (14, 0, False),  # 06:00:00 sharp, for a request at 06:00:00.4
]
# Logged by the live path at T0 (scans_30m, found_rate_30m). By hand at T0: product 10 has 3 scans, 2 found; at
# T0 - 1 s: 2 scans, 1 found. Product 11: 1 scan, found. Product 12: 2 scans, both found; it logged 5 (wrong).
# Product 13: 3 scans, 2 found at T0; 1 scan at T0 - 1 s; 2 scans, 1 found just after T0 - 0.8 s, which it logged
# (a value inside the grace, neither at its start nor at its end).
# Product 14, asked at T0 + 0.4 s: 2 scans, 1 found (05:45 and 06:00); its stream had rolled the window at 06:00
# (05:30:10 out) but not applied the 06:00 scan: 1 scan, found, a value held only from the boundary to that scan.
LOGGED = {10: (2.0, 0.5), 11: (1.0, 1.0), 12: (5.0, 1.0), 13: (2.0, 0.5), 14: (1.0, 1.0)}
ASKED = {14: 0.4 / 60}  # minutes after T0; the others at T0


@pytest.fixture
def world(settings: Settings, usecase: UseCase) -> Settings:
    settings.ensure_state_dir()
    with duckdb.connect(str(settings.offline_store_path)) as con:
        names = usecase.feature_names
        keys = ["store_id BIGINT", "product_id BIGINT", "as_of TIMESTAMP"]
        columns = ", ".join([*keys, *(f"{n} DOUBLE" for n in names)])
        con.execute(f"CREATE TABLE item_features_daily ({columns})")
        for product in LOGGED:
            con.execute(
                f"INSERT INTO item_features_daily VALUES (1, ?, ?, {', '.join(['0.5'] * len(names))})",
                [product, (T0 - timedelta(days=1)).replace(tzinfo=None)],
            )
        con.execute(
            "CREATE TABLE scan_events "
            "(event_id VARCHAR, event_time TIMESTAMP, store_id BIGINT, product_id BIGINT, found BOOLEAN)"
        )
        for i, (product, before, found) in enumerate(SCANS):
            moment = (T0 - timedelta(seconds=before)).replace(tzinfo=None)
            con.execute("INSERT INTO scan_events VALUES (?, ?, 1, ?, ?)", [f"s{i}", moment, product, found])
    records = [
        record(i, ASKED.get(product, 0), product=product, features={"scans_30m": scans, "found_rate_30m": rate})
        for i, (product, (scans, rate)) in enumerate(LOGGED.items())
    ]
    write_shadow(settings, records)
    return settings


def _counts(skew: Skew) -> dict[str, tuple[int, int, int]]:
    return {f.feature: (f.compared, f.mismatches, f.behind) for f in skew.features}


def test_a_window_behind_by_the_last_moment_is_counted_apart_and_a_wrong_one_is_skew(
    world: Settings, usecase: UseCase
) -> None:
    judged = compare(usecase, world)  # the policy's grace: 1 s
    skew = judged.feature_skew
    assert skew.available and skew.sampled == 5 and skew.grace_s == 1.0, skew.reason
    # Products 10, 13 and 14 are behind on both windows; product 12's count is wrong; product 11 agrees.
    assert _counts(skew) == {"scans_30m": (2, 1, 3), "found_rate_30m": (2, 0, 3)}
    assert judged.verdict.evidence.feature_skew_share == pytest.approx(1 / 5)
    assert judged.verdict.evidence.feature_skew_feature == "scans_30m"


def test_without_a_grace_or_further_behind_than_it_the_moment_behind_is_skew(world: Settings, usecase: UseCase) -> None:
    strict = compare(usecase, world, skew_grace=timedelta(0)).feature_skew
    assert _counts(strict) == {"scans_30m": (5, 4, 0), "found_rate_30m": (5, 3, 0)}
    # Behind by more than the grace is skew too: 0.2 s of grace does not reach back past the 0.3 s scans, nor
    # product 14's 06:00 boundary.
    short = compare(usecase, world, skew_grace=timedelta(seconds=0.2)).feature_skew
    assert _counts(short) == {"scans_30m": (5, 4, 0), "found_rate_30m": (5, 3, 0)}


def test_a_batch_model_serving_live_needs_no_event_history(settings: Settings, usecase: UseCase) -> None:
    """The answers logged batch features only (a batch model served live): the check compares them without the
    offline event table, which it used to require for windows no answer used. An answer that logged a window
    value needs the table, and the check says which is missing."""
    settings.ensure_state_dir()
    names = usecase.feature_names
    with duckdb.connect(str(settings.offline_store_path)) as con:
        columns = ", ".join(
            ["store_id BIGINT", "product_id BIGINT", "as_of TIMESTAMP", *(f"{n} DOUBLE" for n in names)]
        )
        con.execute(f"CREATE TABLE item_features_daily ({columns})")
        for product in (10, 11):
            con.execute(
                f"INSERT INTO item_features_daily VALUES (1, ?, ?, {', '.join(['0.5'] * len(names))})",
                [product, (T0 - timedelta(days=1)).replace(tzinfo=None)],
            )
    logged = {10: dict.fromkeys(names, 0.5), 11: {**dict.fromkeys(names, 0.5), names[0]: 0.9}}  # 11: one off
    write_shadow(settings, [record(i, 0, product=p, features=f) for i, (p, f) in enumerate(logged.items())])
    skew = compare(usecase, settings).feature_skew
    assert skew.available and skew.sampled == 2, skew.reason
    assert {f.feature: (f.compared, f.mismatches) for f in skew.features} == {
        name: (2, int(name == names[0])) for name in names
    }
    # One answer that took a window: its offline value needs scan_events, which this store lacks.
    write_shadow(settings, [record(0, 0, product=10, features={**logged[10], "scans_30m": 1.0})])
    missing = compare(usecase, settings).feature_skew
    assert not missing.available and "scan_events" in missing.reason


def test_a_log_written_on_a_simulated_clock_is_judged_with_its_grace_scaled(
    world: Settings, usecase: UseCase, caplog: pytest.LogCaptureFixture
) -> None:
    """A rehearsal at 0.2× the wall's speed recorded its clock beside its log: judged again later (`migrate gate`,
    no grace passed), the grace is the policy's 1 s × 0.2, as the rehearsal's own verdict had it: the counts of
    the 0.2 s case above, by hand. An unreadable record is logged and leaves the policy's grace."""
    shadow_root = world.shadow_dir / usecase.name
    record_speed(shadow_root, 0.2)
    assert recorded_speed(shadow_root) == 0.2
    scaled = compare(usecase, world).feature_skew
    assert scaled.grace_s == pytest.approx(0.2)
    assert _counts(scaled) == {"scans_30m": (5, 4, 0), "found_rate_30m": (5, 3, 0)}
    (shadow_root / SPEED_FILE).write_text('{"speed": "fast"}')
    with caplog.at_level("WARNING", logger="migrate.clock"):
        assert compare(usecase, world).feature_skew.grace_s == 1.0
    assert SPEED_FILE in caplog.text
