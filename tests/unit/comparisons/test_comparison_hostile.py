"""The comparator on a hostile shadow log, against the rules done again by hand in plain Python: records delivered
twice (in the same file and in a later file), one request of several entities, labels at the window's edges (at
the request instant, at the deadline, a microsecond late), two labels in one window, labels for other entities
only, windows still open at the watermark, batch misses and live errors."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import USECASE, label, labels_by_hand, record, write_shadow

from comparisons import accuracy, agreement, data_ages, staleness
from comparisons.shadow_rows import Window, load, logged_requests, row_id_sql
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.shadow.parquet import shadow_table
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord

pytestmark = pytest.mark.unit

THRESHOLD, TAU = 0.5, 0.2
US = timedelta(microseconds=1)


def _hostile(delay: timedelta) -> tuple[list[ShadowRecord], list[ShadowRecord], list[LabelRecord]]:
    """(records as written, the later file's re-deliveries, labels)."""
    rng = np.random.default_rng(11)
    records: list[ShadowRecord] = []
    labels: list[LabelRecord] = []

    def add(n: int, minutes: float, product: int, bp: float | None, op: float | None, **more: str) -> ShadowRecord:
        error = None if op is not None else "timeout"
        ages = {"found_rate_1d": 30.0 + n}
        r = record(n, minutes, product=product, bp=bp, op=op, ages=ages, online_error=error, **more)
        records.append(r)
        return r

    def label_at(moment: datetime, value: float, product: int) -> None:
        labels.append(label(0, value, product=product).model_copy(update={"event_time": moment}))

    # Edge cases, one entity each (products 100+): which label, if any, each request gets.
    label_at(add(0, 10, 100, 0.2, 0.9).request_time, 1.0, 100)  # at the request instant: not after it
    label_at(add(1, 10, 101, 0.7, 0.1).request_time + delay, 1.0, 101)  # exactly at the deadline: counts
    label_at(add(2, 10, 102, 0.4, 0.45).request_time + delay + US, 1.0, 102)  # a microsecond late
    first = add(3, 10, 103, 0.6, 0.65).request_time  # two labels in the window: the first one
    label_at(first + delay / 2, 1.0, 103)
    label_at(first + delay / 3, 0.0, 103)
    label_at(add(4, 10, 104, 0.3, 0.35).request_time - US, 1.0, 104)  # a label before the request only
    label_at(add(5, 10, 105, None, 0.8).request_time + US, 1.0, 105)  # a batch miss, labeled
    label_at(add(6, 10, 106, 0.8, None).request_time + US, 0.0, 106)  # a live error, labeled
    for product in (107, 108):  # one request of two entities: two rows, not a duplicate
        label_at(add(7, 10, product, 0.5, 0.55, request_id="multi").request_time + US, 1.0, product)
    # Random traffic on ten entities over four hours; the last hour's windows are still open at the watermark.
    for n in range(10, 310):
        bp = None if rng.random() < 0.05 else round(float(rng.random()), 4)
        op = None if rng.random() < 0.05 else round(float(rng.random()), 4)
        add(n, float(rng.uniform(0, 240)), int(rng.integers(10, 20)), bp, op)
    instants = {(int(rng.integers(10, 20)), round(float(rng.uniform(0, 250)), 4)) for _ in range(400)}
    for product, minutes in sorted(instants):  # one label per entity and instant: the first is unambiguous
        labels.append(label(minutes, float(rng.random() < 0.5), product=product))
    labels.append(label(250, 1.0, product=999))  # the watermark: another entity's label
    records += [records[20], records[3]]  # producer retries in the same file
    return records, [records[40], records[0]], labels  # and two in a later file of the same hour


def _write(
    settings: Settings, records: list[ShadowRecord], redelivered: list[ShadowRecord], labels: list[LabelRecord]
) -> None:
    write_shadow(settings, records, labels)
    for r in redelivered:
        moment = r.request_time
        path = (
            settings.shadow_dir
            / USECASE
            / f"date={moment:%Y-%m-%d}/hour={moment:%H}"
            / f"part-retry-{r.request_id}.parquet"
        )
        pq.write_table(shadow_table([r], [0], [0]), path)


@pytest.fixture
def hostile(settings: Settings, usecase: UseCase) -> list[tuple[ShadowRecord, str, float | None]]:
    delay = parse_duration(usecase.label.available_after)
    records, redelivered, labels = _hostile(delay)
    _write(settings, records, redelivered, labels)
    joined = labels_by_hand(records + redelivered, labels, delay)
    edges = {r.request_id: (state, y) for r, state, y in joined if r.key["product_id"] in (100, 101, 102, 103, 104)}
    # The edges land where the rule puts them (else the hand computation would prove nothing about them).
    assert edges == {
        "r0": ("unlabeled", None),
        "r1": ("labeled", 1.0),
        "r2": ("unlabeled", None),
        "r3": ("labeled", 0.0),
        "r4": ("unlabeled", None),
    }
    assert {state for _, state, _ in joined} == {"labeled", "unlabeled", "pending"}
    return joined


def _losses(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    brier = math.fsum((p - y) ** 2 for p, y in pairs) / len(pairs)
    clipped = [(min(max(p, 1e-15), 1 - 1e-15), y) for p, y in pairs]
    log_loss = -math.fsum(y * math.log(q) + (1 - y) * math.log(1 - q) for q, y in clipped) / len(pairs)
    return brier, log_loss


def test_label_join_counts_and_metrics_equal_the_rules_by_hand(
    settings: Settings, usecase: UseCase, hostile: list[tuple[ShadowRecord, str, float | None]]
) -> None:
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        got = accuracy.measure(rows, confidence=0.9)
        agreed = agreement.measure(rows, THRESHOLD, TAU, "test")
        by_row = dict(
            ((request_id, product), (state, value))
            for request_id, product, state, value in rows.con.execute(
                "SELECT request_id, k_product_id, label_state, label FROM s "
                f"JOIN (SELECT DISTINCT {row_id_sql(usecase)} AS h, request_id FROM {rows.source}) USING (h)"
            ).fetchall()
        )
    finally:
        rows.con.close()
    assert rows.rows == len(hostile)
    expected = {(r.request_id, r.key["product_id"]): (state, value) for r, state, value in hostile}
    assert by_row == expected

    states = [state for _, state, _ in hostile]
    assert (got.labeled, got.unlabeled, got.pending) == tuple(states.count(s) for s in LABEL_ORDER)
    paired = [
        (r, y)
        for r, state, y in hostile
        if state == "labeled" and r.batch_prediction is not None and r.online_prediction is not None
    ]
    assert got.pairs == len(paired) > 50
    for index, (name, path) in enumerate((("batch", "batch_prediction"), ("live", "online_prediction"))):
        brier, log_loss = _losses([(getattr(r, path), y) for r, y in paired])
        for metric, value in (("brier", brier), ("log_loss", log_loss)):
            score = got.score(metric)
            assert score is not None
            assert (score.batch, score.live)[index] == pytest.approx(value, rel=1e-12), (name, metric)

    both = [r for r, _, _ in hostile if r.batch_prediction is not None and r.online_prediction is not None]
    delta = np.array([abs(r.online_prediction - r.batch_prediction) for r in both])
    assert agreed.pairs == len(both)
    assert agreed.mean_abs_delta == pytest.approx(math.fsum(delta) / delta.size, rel=1e-12)
    flips = sum((r.batch_prediction >= THRESHOLD) != (r.online_prediction >= THRESHOLD) for r in both)
    assert (agreed.flips, agreed.disagreements) == (flips, int((delta > TAU).sum()))
    assert (agreed.abs_delta.p50, agreed.abs_delta.p95, agreed.abs_delta.p99) == pytest.approx(
        tuple(np.percentile(delta, [50, 95, 99])), rel=1e-12
    )


LABEL_ORDER = ("labeled", "unlabeled", "pending")


def test_logged_requests_keep_each_record_once_with_its_label(
    settings: Settings, usecase: UseCase, hostile: list[tuple[ShadowRecord, str, float | None]]
) -> None:
    found = logged_requests(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    states = [state for _, state, _ in hostile]
    assert (found.labeled, found.unlabeled, found.pending) == tuple(states.count(s) for s in LABEL_ORDER)
    assert found.duplicates == 4
    got = sorted(
        zip(
            found.table["request_id"].to_pylist(),
            found.table["product_id"].to_pylist(),
            found.table[usecase.label.name].to_pylist(),
            strict=True,
        )
    )
    assert got == sorted((r.request_id, r.key["product_id"], y) for r, state, y in hostile if state == "labeled")


@pytest.mark.parametrize("reread", [False, True], ids=["one-scan", "re-read"])
def test_live_ages_are_every_answered_request_once(
    settings: Settings,
    usecase: UseCase,
    hostile: list[tuple[ShadowRecord, str, float | None]],
    reread: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Below the cap every answered request's age counts once. A cap of exactly the distinct rows makes the scan's
    sampling step (1 in 2 of the rows read, duplicates included) differ from the de-duplicated rows' (all): the
    ages are then read again from the files, and must come out the same."""
    monkeypatch.setattr(data_ages, "AGE_SAMPLE", len(hostile) if reread else 1_000_000)
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        got = staleness.measure(rows)
    finally:
        rows.con.close()
    assert rows.age_every == 1
    ages = np.array(
        [r.online_feature_ages_s["found_rate_1d"] for r, _, _ in hostile if r.online_prediction is not None]
    )
    assert got.live.n == ages.size
    assert (got.live.p50, got.live.p95, got.live.p99, got.live.max) == pytest.approx(
        (*np.percentile(ages, [50, 95, 99]), ages.max()), rel=1e-12
    )
