"""Every metric on a small shadow log whose answers were worked out by hand (see the comments)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from comparison_fixtures import USECASE, at, label, record, write_shadow

from comparisons import accuracy, agreement, coverage, hourly, latency, segments, staleness, waste
from comparisons.shadow_rows import Rows, Window, load
from migrate.errors import InvalidWindowError, NoShadowDataError
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.shadow.record import ShadowRecord

pytestmark = pytest.mark.unit

# Five requests (label delay 1 h), one duplicate delivery of r1:
#   r1 06:00 (1,10) batch .8 live .9  batch age 1 h  live ages 60/120 s -> 120   labeled 1 (label at 06:30)
#   r2 06:10 (1,11) batch .3 live .6  batch age 2 h  live age 30             unlabeled (labels at 06:10, 07:15)
#   r3 06:20 (1,12) miss     live .4                 live age 10             labeled 0 (06:50), no pair
#   r4 07:10 (1,10) batch .2 live .1  batch age 3 h  live age 90             labeled 0 (08:20)
#   r5 07:20 (2,20) batch .6 live error (fallback)  batch age 4 h           pending (watermark 08:15 < 08:20)
RECORDS = [
    record(1, 0, bp=0.8, op=0.9, batch_age=3600, ages={"found_rate_1d": 60, "scans_1d": 120}, batch_ms=1, online_ms=4),
    record(2, 10, product=11, bp=0.3, op=0.6, batch_age=7200, ages={"found_rate_1d": 30}, batch_ms=2, online_ms=6),
    record(3, 20, product=12, bp=None, op=0.4, ages={"found_rate_1d": 10}, batch_ms=3, online_ms=8),
    record(4, 70, bp=0.2, op=0.1, batch_age=10800, ages={"found_rate_1d": 90}, batch_ms=4, online_ms=10),
    record(5, 80, store=2, product=20, bp=0.6, op=None, batch_age=14400, batch_ms=5, online_ms=50,
           online_error="timeout", served="batch_fallback"),
    record(1, 0, bp=0.8, op=0.9, batch_age=3600, ages={"found_rate_1d": 60, "scans_1d": 120}),  # delivered twice
]  # fmt: skip
LABELS = [
    label(30, 1.0),
    label(10, 1.0, product=11),  # at r2's request time: not after it, so not r2's label
    label(75, 1.0, product=11),  # after r2's window (06:10, 07:10]
    label(50, 0.0, product=12),
    label(100, 0.0),
    label(135, 1.0, store=9, product=9),  # the watermark: 08:15
]


@pytest.fixture
def rows(settings: Settings, usecase: UseCase) -> Rows:
    write_shadow(settings, RECORDS, LABELS)
    loaded = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    yield loaded
    loaded.con.close()


def test_rows_are_deduplicated_and_labeled_by_the_first_label_in_the_window(rows: Rows) -> None:
    assert rows.rows == 5
    assert rows.files == 2
    assert rows.label_watermark == at(135)
    got = sorted(rows.con.execute("SELECT request_time, label_state, label FROM s ORDER BY request_time").fetchall())
    assert [(t.astimezone(UTC), state, value) for t, state, value in got] == [
        (at(0), "labeled", 1.0),
        (at(10), "unlabeled", None),
        (at(20), "labeled", 0.0),
        (at(70), "labeled", 0.0),
        (at(80), "pending", None),
    ]


def test_staleness_by_hand(rows: Rows) -> None:
    result = staleness.measure(rows)
    # batch ages 3600, 7200, 10800, 14400: p50 = 9000, p95 = 10800 + 0.85 × 3600, max 14400
    assert result.batch.n == 4
    assert result.batch.p50 == pytest.approx(9000)
    assert result.batch.p95 == pytest.approx(13860)
    assert result.batch.max == 14400
    # live data age = the newest data behind the answer: min(60, 120), 30, 10, 90 → p50 = 45, max 90
    assert (result.live.n, result.live.p50, result.live.max) == (4, pytest.approx(45), 90)
    assert sum(result.histogram.counts["batch"]) == 4 and sum(result.histogram.counts["live"]) == 4
    # The batch features' group: its oldest feature, max(60, 120), 30, 10, 90 → p50 = 60
    batch_features = next(g for g in result.groups if g.kind == "batch features")
    assert (batch_features.age.n, batch_features.age.p50) == (4, pytest.approx(60))


def test_freshness_per_feature_group_counts_quiet_keys_apart(settings: Settings, usecase: UseCase) -> None:
    """Live features minutes old, batch features hours old: the live path's data age shows it; a key without an
    event within its group's window (or without any) is counted as such, not as old data."""
    nine_hours = 9 * 3600.0
    batch = dict.fromkeys(usecase.feature_names, nine_hours)
    realtime = usecase.realtime_feature_names
    world = [
        record(1, 0, product=1, batch_age=9.5 * 3600, ages=batch | dict.fromkeys(realtime, 120.0)),  # scanned 2 min ago
        record(2, 1, product=2, batch_age=9.5 * 3600, ages=batch | dict.fromkeys(realtime, 5 * 3600.0)),  # 5 h ago
        record(3, 2, product=3, batch_age=9.5 * 3600, ages=batch),  # never scanned since the stream started
    ]
    write_shadow(settings, world, [label(600, 0.0, store=9, product=9)])
    loaded = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        result = staleness.measure(loaded)
    finally:
        loaded.con.close()
    assert result.batch.p50 == pytest.approx(9.5 * 3600)
    assert (
        result.live.p50 == pytest.approx(5 * 3600) and result.live.p50 < result.batch.p50
    )  # median of 2 min, 5 h, 9 h
    groups = {g.group: g for g in result.groups}
    assert groups["batch features"].age.p50 == pytest.approx(nine_hours)
    entity = groups["entity"]
    assert entity.window_s == 7200  # the longest window, 120 min
    assert (entity.age.n, entity.age.p50) == (1, pytest.approx(120))  # only the key with an event within 2 h
    assert (entity.no_event_in_window, entity.no_event_share) == (2, pytest.approx(2 / 3))


def test_coverage_by_hand_with_new_and_known_misses(settings: Settings, usecase: UseCase) -> None:
    """The miss r3 (1,12) at 06:20 is judged against the cutoff of the version that served it: version 1 (cutoff
    02:00), published at 02:30 — whatever was published later."""
    write_shadow(settings, RECORDS, LABELS)
    published = [(1, datetime(2026, 11, 14, 2, 30, tzinfo=UTC)), (2, at(60 * 5))]  # version 2 after the window
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window(), published=published)
    try:
        without = coverage.measure(rows, versions_loaded=True, entities_loaded=False)
        assert (without.requests, without.batch_answered, without.misses, without.live_answered) == (5, 4, 1, 4)
        assert without.batch_share == pytest.approx(0.8) and without.live_share == pytest.approx(0.8)
        assert (without.live_answered_on_misses, without.entities, without.missed_entities) == (1, 4, 1)
        assert without.misses_new is None and "could not be read" in without.miss_split
        rows.con.register(
            "versions",
            pa.table(
                {
                    "version": pa.array([1, 2], pa.int64()),
                    "cutoff": pa.array(
                        [datetime(2026, 11, 14, 2, tzinfo=UTC), at(60 * 4)], pa.timestamp("us", tz="UTC")
                    ),
                }
            ),
        )
        rows.con.execute(
            "CREATE TEMP TABLE entities AS SELECT * FROM (VALUES (1, 10, TIMESTAMP '2026-01-01'), "
            "(1, 12, TIMESTAMP '2026-11-14 03:00')) t(k_store_id, k_product_id, created_at)"
        )
        split = coverage.measure(rows, versions_loaded=True, entities_loaded=True)
        assert (split.misses_new, split.misses_known) == (1, 0)  # (1,12) was listed after version 1's cutoff
        rows.con.execute("UPDATE entities SET created_at = TIMESTAMP '2026-11-13' WHERE k_product_id = 12")
        assert coverage.measure(rows, versions_loaded=True, entities_loaded=True).misses_known == 1
    finally:
        rows.con.close()


def test_accuracy_by_hand(rows: Rows) -> None:
    result = accuracy.measure(rows, confidence=0.95)
    assert (result.labeled, result.pairs, result.unlabeled, result.pending) == (3, 2, 1, 1)
    brier, log_loss, auc = result.score("brier"), result.score("log_loss"), result.score("auc")
    assert brier is not None and log_loss is not None and auc is not None
    # pairs: (y=1, batch .8, live .9) and (y=0, batch .2, live .1)
    assert (brier.batch, brier.live) == (pytest.approx(0.04), pytest.approx(0.01))
    assert (log_loss.batch, log_loss.live) == (pytest.approx(-math.log(0.8)), pytest.approx(-math.log(0.9)))
    assert (auc.batch, auc.live) == (1.0, 1.0)
    assert brier.improvement == pytest.approx(0.03) and not brier.higher_is_better
    assert brier.improvement_low is not None and brier.improvement_low <= 0.03 <= (brier.improvement_high or 0)
    assert sum(result.calibration["batch"].count) == 2


def test_agreement_by_hand(rows: Rows) -> None:
    result = agreement.measure(rows, threshold=0.5, disagreement_threshold=0.2, basis="test")
    # pairs r1, r2, r4: |Δ| .1, .3, .1; r2 flips at 0.5 (.3 → .6) and exceeds 0.2; both rankings agree
    assert result.pairs == 3
    assert result.mean_abs_delta == pytest.approx(0.5 / 3)
    assert (result.flips, result.flip_share) == (1, pytest.approx(1 / 3))
    assert (result.disagreements, result.disagreement_share) == (1, pytest.approx(1 / 3))
    assert result.rank_correlation == pytest.approx(1.0)
    assert result.abs_delta.max == pytest.approx(0.3)


def test_latency_errors_and_fallbacks_by_hand(rows: Rows) -> None:
    result = latency.measure(rows)
    # The lookup table served every row (four batch, one batch_fallback): its latencies 1-5 ms are all served ones.
    assert (result.batch.latency_ms.n, result.batch.latency_ms.p50, result.batch.latency_ms.max) == (5, 3, 5)
    assert result.batch.background_ms.n == 0
    # The live path was asked on the request only for the fallback (it timed out after 50 ms); the 4, 6, 8 and
    # 10 ms of the four batch-served rows are the shadow comparison's, reported apart.
    assert (result.live.latency_ms.n, result.live.latency_ms.p99) == (1, 50)
    assert (result.live.background_ms.n, result.live.background_ms.p50, result.live.background_ms.max) == (4, 7, 10)
    assert sum(result.histogram.counts["live (background)"]) == 4 and sum(result.histogram.counts["live"]) == 1
    assert (result.live.asked, result.live.errors, result.live.error_rate) == (5, 1, pytest.approx(0.2))
    assert (result.batch.errors, result.fallbacks, result.fallback_rate) == (0, 1, pytest.approx(0.2))
    assert result.served == {"batch": 4, "batch_fallback": 1}


def test_a_fork_measures_the_same_rows_on_a_connection_of_its_own(rows: Rows) -> None:
    # The comparison runs the latency and the segments on a fork, on a thread, while its other queries run.
    fork = rows.fork()
    try:
        assert fork.con is not rows.con
        assert latency.measure(fork) == latency.measure(rows)
        assert segments.measure(fork, "auc") == segments.measure(rows, "auc")
        # The fork reads table s only: the first connection's temporary tables stay its own.
        assert fork.con.execute("SELECT count(*) FROM s").fetchall() == [(rows.rows,)]
    finally:
        fork.con.close()
    assert rows.con.execute("SELECT count(*) FROM ages").fetchall()[0][0] > 0  # the first connection still works


def test_waste_counts_lookup_rows_nobody_requested(rows: Rows) -> None:
    table = pa.table({"store_id": [1, 1, 3], "product_id": [10, 11, 30], "prediction": [0.1, 0.2, 0.3]})
    rows.con.register("arrow_lookup", table)
    rows.con.execute("CREATE TEMP TABLE lookup_v7 AS SELECT * FROM arrow_lookup")
    # No record names a version and none was published: nothing served by version 7, all its rows unread.
    assert waste.measure(rows, [7]).never_requested == 3
    served = rows.con.sql("SELECT * REPLACE (CAST(7 AS BIGINT) AS lv) FROM s").to_arrow_table()
    rows.con.unregister("s")
    rows.con.register("s", served)
    result = waste.measure(rows, [7])
    assert (result.rows, result.requested, result.never_requested, result.versions) == (3, 2, 1, [7])
    assert result.share == pytest.approx(1 / 3)
    gone = waste.measure(rows, [], gone=[5], note="")
    assert gone.share is None and "[5] served the window but are no longer kept" in gone.note


def test_waste_of_a_sampled_shadow_log_scales_each_requested_entity(settings: Settings, usecase: UseCase) -> None:
    """A log that samples 25 % of the entities names 2 of the version's 20 rows: each stands for 4 entities, so
    8 were requested (an estimate, said in the note) and 12 never; one entity logged at 25 % and later at 50 %
    stands for 2 (its largest sample), and an estimate never exceeds the rows."""
    sampled = [
        record(1, 0, product=10).model_copy(update={"sample_percent": 25.0, "lookup_version": 7}),
        record(2, 5, product=10).model_copy(update={"sample_percent": 25.0, "lookup_version": 7}),  # same entity
        record(3, 10, product=11).model_copy(update={"sample_percent": 25.0, "lookup_version": 7}),
        record(4, 15, product=99).model_copy(update={"sample_percent": 25.0, "lookup_version": 7}),  # not in v7
    ]
    lookup = pa.table({"store_id": [1] * 20, "product_id": list(range(10, 30)), "prediction": [0.5] * 20})

    def measured(records: list[ShadowRecord]) -> waste.Waste:
        write_shadow(settings, records, [label(600, 0.0, store=9, product=9)])
        loaded = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
        try:
            loaded.con.register("arrow_lookup", lookup)
            loaded.con.execute("CREATE TEMP TABLE lookup_v7 AS SELECT * FROM arrow_lookup")
            return waste.measure(loaded, [7])
        finally:
            loaded.con.close()

    result = measured(sampled)
    assert (result.rows, result.requested, result.never_requested) == (20, 8, 12)
    assert result.share == pytest.approx(12 / 20)
    assert "estimated" in result.note and "25 %" in result.note
    changed = [*sampled, record(5, 20, product=11).model_copy(update={"sample_percent": 50.0, "lookup_version": 7})]
    result = measured(changed)
    assert (result.requested, result.never_requested) == (4 + 2, 14)  # product 10 at 25 %, product 11 at 50 %
    tiny = [r.model_copy(update={"sample_percent": 1.0}) for r in sampled]
    assert measured(tiny).requested == 20  # 2 × 100 estimated, capped at the version's 20 rows


def test_hourly_buckets_by_hand(rows: Rows) -> None:
    hours = hourly.measure(rows, threshold=0.5, disagreement_threshold=0.2)
    assert [h.hour for h in hours] == [at(0), at(60)]
    six, seven = hours
    assert (six.requests, six.batch_share, six.miss_share, six.live_share) == (3, 2 / 3, 1 / 3, 1.0)
    assert (seven.requests, seven.live_share, seven.fallback_rate, seven.live_error_rate) == (2, 0.5, 0.5, 0.5)
    assert (six.labeled, six.unlabeled, seven.labeled, seven.pending) == (2, 1, 1, 1)
    assert six.flip_share == pytest.approx(0.5) and seven.flip_share == 0.0


def test_a_window_reads_only_its_hours(settings: Settings, usecase: UseCase) -> None:
    write_shadow(settings, RECORDS, LABELS)
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window(since=at(60)))
    try:
        assert (rows.rows, rows.files) == (2, 1)
    finally:
        rows.con.close()


def test_empty_window_and_missing_log_are_clear_errors(settings: Settings, usecase: UseCase) -> None:
    shadow, labels = settings.shadow_dir / USECASE, settings.labels_dir / USECASE
    with pytest.raises(NoShadowDataError, match="no shadow log") as missing:
        load(usecase, shadow, labels, Window())
    assert missing.value.fix is not None and "migrate sink" in missing.value.fix
    write_shadow(settings, RECORDS, LABELS)
    with pytest.raises(NoShadowDataError, match="no request in"):
        load(usecase, shadow, labels, Window(since=at(61), until=at(62)))
    with pytest.raises(InvalidWindowError, match="at or before it starts"):
        Window(since=at(10), until=at(10))
    with pytest.raises(InvalidWindowError, match="no time zone"):
        Window(since=datetime(2026, 1, 1))


def test_all_misses_and_no_labels(settings: Settings, usecase: UseCase) -> None:
    write_shadow(settings, [record(i, i, product=10 + i, bp=None, op=0.3) for i in range(4)])
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        cover = coverage.measure(rows, versions_loaded=False, entities_loaded=False)
        assert (cover.batch_share, cover.miss_share, cover.live_share) == (0.0, 1.0, 1.0)
        assert "no published lookup version" in cover.miss_split
        agree = agreement.measure(rows, 0.5, 0.05, "test")
        assert (agree.pairs, agree.mean_abs_delta, agree.flip_share, agree.rank_correlation) == (0, None, None, None)
        acc = accuracy.measure(rows, 0.95)
        assert rows.label_watermark is None
        assert (acc.labeled, acc.pairs, acc.pending) == (0, 0, 4)
        assert all(s.batch is None and s.live is None and s.improvement is None for s in acc.scores)
        assert staleness.measure(rows).batch.n == 0
    finally:
        rows.con.close()


def test_segments_show_where_live_wins_and_psi_measures_the_drift(settings: Settings, usecase: UseCase) -> None:
    """Store 1: live ranks its labels perfectly and batch backwards; store 2 the other way round."""
    rng = np.random.default_rng(3)
    records, labels = [], []
    for n in range(400):
        store, y = 1 + n % 2, float(n % 4 < 2)
        good, bad = 0.2 + 0.6 * y, 0.8 - 0.6 * y
        bp, op = (bad, good) if store == 1 else (good, bad)
        bp, op = bp + rng.uniform(-0.05, 0.05), op + rng.uniform(-0.05, 0.05)
        records.append(record(n, n * 0.3, store=store, product=n, bp=bp, op=op))
        labels.append(label(n * 0.3 + 1, y, store=store, product=n))
    labels.append(label(600, 0.0, store=9, product=9))
    write_shadow(settings, records, labels)
    chosen = usecase.model_copy(
        update={"cutover_policy": usecase.cutover_policy.model_copy(update={"segment": "store_id"})}
    )
    loaded = load(chosen, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        result = segments.measure(loaded, "auc")
    finally:
        loaded.con.close()
    by_store = {g.segment: g for g in result.segments}
    assert set(by_store) == {"1", "2"} and by_store["1"].requests == by_store["2"].requests == 200
    assert by_store["1"].live == 1.0 and by_store["1"].batch == 0.0
    assert by_store["2"].live == 0.0 and by_store["2"].batch == 1.0
    # Both paths predict about 0.2 or 0.8 half the time each, with the same jitter: the distributions match.
    assert result.psi is not None and result.psi < 0.1 and result.psi_pairs == 400
    # The SQL computation equals the plain one over the same predictions.
    batch = np.array([r.batch_prediction for r in records], dtype=np.float64)
    live = np.array([r.online_prediction for r in records], dtype=np.float64)
    assert result.psi == pytest.approx(segments.psi(batch, live), rel=1e-9)


def test_segments_beyond_the_busiest_are_summed_as_others(settings: Settings, usecase: UseCase) -> None:
    # Store s gets 20 + s requests: the 12 busiest (stores 15 … 4) are listed, stores 1-3 are summed.
    records = [
        record(store * 1000 + i, (store * 1000 + i) * 0.001, store=store, product=i)
        for store in range(1, 16)
        for i in range(20 + store)
    ]
    write_shadow(settings, records)
    chosen = usecase.model_copy(
        update={"cutover_policy": usecase.cutover_policy.model_copy(update={"segment": "store_id"})}
    )
    loaded = load(chosen, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        result = segments.measure(loaded, "auc")
    finally:
        loaded.con.close()
    assert [g.segment for g in result.segments] == [*map(str, range(15, 3, -1)), "(others)"]
    assert [g.requests for g in result.segments] == [*range(35, 23, -1), 21 + 22 + 23]


def test_psi_by_hand() -> None:
    batch = np.linspace(0, 1, 1000)
    assert segments.psi(batch, batch) == pytest.approx(0.0)
    live = np.full(1000, 0.95)  # every live prediction in the batch's top decile
    # By hand: one bin holds 100 % live vs 10 % batch; nine bins hold 0 % (floored at 1e-4) vs 10 % each.
    expected = (1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert segments.psi(batch, live) == pytest.approx(expected, rel=1e-3)
