"""The card-fraud simulator: deterministic, the contract's tables, chargebacks that name real authorizations, fraud
that bursts within minutes, and nightly features that only look back."""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from migrate.batch.offline_store import open_offline, training_frame
from migrate.examples.fraud_detection.features import build_card_features
from migrate.examples.fraud_detection.generator import (
    CARD_ID_BASE,
    TABLES,
    FraudConfig,
    FraudSummary,
    generate,
    simulate,
)
from migrate.examples.fraud_detection.simulation import CHARGEBACK_DELAY_H, World
from migrate.registry import load_usecase

pytestmark = pytest.mark.unit

USECASE_FILE = Path(__file__).resolve().parents[3] / "usecases" / "fraud_detection.yaml"
CONFIG = FraudConfig(seed=1, cards=1_000, merchants=100, days=5)  # a seed with three breached merchants
ORDER = {"cards": "card_id", "card_events": "event_id", "card_features_daily": "as_of, card_id"}


@pytest.fixture(scope="module")
def world() -> World:
    return simulate(CONFIG)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> FraudSummary:
    """1,000 cards x 5 days; tests only read it."""
    return generate(tmp_path_factory.mktemp("fraud") / "offline.duckdb", CONFIG)


def _read(path: Path) -> dict[str, pa.Table]:
    with open_offline(path) as con:
        return {name: con.sql(f"SELECT * FROM {name} ORDER BY {ORDER[name]}").to_arrow_table() for name in TABLES}


def test_the_tables_have_the_contracts_columns(written: FraudSummary) -> None:
    with open_offline(written.path) as con:
        described = {name: {str(r[0]): str(r[1]) for r in con.sql(f"DESCRIBE {name}").fetchall()} for name in TABLES}
    assert described["cards"] == {"card_id": "BIGINT", "issued_at": "TIMESTAMP"}
    assert described["card_events"] == {
        "event_id": "VARCHAR",
        "event_time": "TIMESTAMP",
        "card_id": "BIGINT",
        "merchant_id": "VARCHAR",
        "kind": "VARCHAR",
        "amount": "DOUBLE",
        "auth_id": "VARCHAR",
    }
    assert described["card_features_daily"] == {
        "card_id": "BIGINT",
        "as_of": "TIMESTAMP",
        "card_auths_7d": "DOUBLE",
        "card_amount_mean_7d": "DOUBLE",
        "card_chargebacks_90d": "DOUBLE",
        "card_age_days": "DOUBLE",
    }
    assert written.rows["cards"] == CONFIG.cards
    assert written.rows["card_events"] == written.auths + written.chargebacks
    usecase = load_usecase(USECASE_FILE)  # the YAML reads these very tables and columns
    assert usecase.online_feature_names[-1] == "amount" and len(usecase.online_feature_names) == 11


def test_same_seed_same_tables_other_seed_other_events(written: FraudSummary, tmp_path: Path) -> None:
    again = generate(tmp_path / "again.duckdb", CONFIG)
    other = generate(tmp_path / "other.duckdb", CONFIG.model_copy(update={"seed": 2}))
    first, second, third = _read(written.path), _read(again.path), _read(other.path)
    for name in TABLES:
        assert first[name].num_rows > 0 and first[name].equals(second[name]), name
    assert not first["card_events"].equals(third["card_events"])
    assert again == written.model_copy(update={"path": again.path})
    generate(again.path, CONFIG)  # a rerun replaces, never appends
    assert _read(again.path)["card_events"].equals(first["card_events"])


def test_every_chargeback_disputes_an_earlier_authorization_within_the_delay(written: FraudSummary) -> None:
    events = _read(written.path)["card_events"].to_pylist()
    auths = {e["event_id"]: e for e in events if e["kind"] == "auth"}
    disputes = [e for e in events if e["kind"] == "chargeback"]
    assert {e["kind"] for e in events} == {"auth", "chargeback"}
    assert all(e["auth_id"] == e["event_id"] for e in auths.values())
    assert len(disputes) == written.chargebacks > 0
    low, high = (timedelta(hours=h) for h in CHARGEBACK_DELAY_H)
    for dispute in disputes:
        auth = auths[dispute["auth_id"]]
        assert low <= dispute["event_time"] - auth["event_time"] <= high, dispute
        assert (dispute["card_id"], dispute["merchant_id"], dispute["amount"]) == (
            auth["card_id"],
            auth["merchant_id"],
            auth["amount"],
        )
    assert max(Counter(d["auth_id"] for d in disputes).values()) == 1  # disputed once at most
    assert max(e["event_time"] for e in events) < written.end.replace(tzinfo=None)


def test_fraud_is_rare_disputed_and_honest_disputes_are_rarer(world: World, written: FraudSummary) -> None:
    auths = world.auths
    assert 0.01 <= written.fraud_rate <= 0.03
    assert auths.breach.any() and (auths.fraud & ~auths.breach).any()  # both kinds of compromise happen
    end_us = auths.at_us.max()
    disputed = np.zeros(auths.fraud.size, dtype=bool)
    disputed[world.chargebacks.auth] = True
    settled = auths.at_us < end_us - int(CHARGEBACK_DELAY_H[1] * 3_600e6)  # old enough: any dispute is in
    assert disputed[settled & auths.fraud].all()
    friendly = disputed[settled & ~auths.fraud].mean()
    assert 0.0005 < friendly < 0.005  # friendly fraud: label noise around 0.2 %
    assert written.friendly_chargebacks == int((disputed & ~auths.fraud).sum())


def _most_in_ten_minutes(times_us: np.ndarray) -> int:
    times = np.sort(times_us)
    return int(np.max(np.arange(times.size) - np.searchsorted(times, times - 600_000_000) + 1)) if times.size else 0


def test_stolen_cards_burst_within_minutes_and_honest_cards_do_not(world: World) -> None:
    auths = world.auths
    stolen = auths.fraud & ~auths.breach
    burst_sizes = [_most_in_ten_minutes(auths.at_us[stolen & (auths.card == c)]) for c in np.unique(auths.card[stolen])]
    honest_sizes = [_most_in_ten_minutes(auths.at_us[~auths.fraud & (auths.card == c)]) for c in range(CONFIG.cards)]
    assert np.median(burst_sizes) >= 4 and max(burst_sizes) >= 8
    assert np.mean(np.asarray(honest_sizes) >= 4) < 0.01
    assert np.median(auths.amount[stolen]) > 2.5 * np.median(auths.amount[~auths.fraud])


def test_a_breached_merchant_carries_many_cards_fraud_within_hours(world: World) -> None:
    auths = world.auths
    breached = auths.breach
    merchant = Counter(auths.merchant[breached].tolist()).most_common(1)[0][0]
    mine = breached & (auths.merchant == merchant)
    assert np.unique(auths.card[mine]).size >= 20
    hours = (auths.at_us[mine].max() - auths.at_us[mine].min()) / 3_600e6
    honest_per_hour = (~auths.fraud & (auths.merchant == merchant)).sum() / (CONFIG.days * 24)
    assert mine.sum() / max(hours, 1.0) > 3 * honest_per_hour  # the merchant's minutes look nothing like its days


def test_nightly_features_use_only_events_strictly_before_as_of(written: FraudSummary) -> None:
    tables = _read(written.path)
    events = tables["card_events"].to_pylist()
    issued = {r["card_id"]: r["issued_at"] for r in tables["cards"].to_pylist()}
    rows = tables["card_features_daily"].to_pylist()
    busiest = Counter(e["card_id"] for e in events if e["kind"] == "chargeback").most_common(3)
    picked = [r for r in rows if r["card_id"] in {c for c, _ in busiest}] + rows[:: max(1, len(rows) // 40)]
    for row in picked:
        as_of, card = row["as_of"], row["card_id"]
        mine = [e for e in events if e["card_id"] == card and e["event_time"] < as_of]
        week = [e["amount"] for e in mine if e["kind"] == "auth" and e["event_time"] >= as_of - timedelta(days=7)]
        assert row["card_auths_7d"] == len(week), row
        assert (row["card_amount_mean_7d"] is None) == (not week), row
        if week:
            assert math.isclose(row["card_amount_mean_7d"], sum(week) / len(week), abs_tol=1e-4), row
        assert row["card_chargebacks_90d"] == sum(e["kind"] == "chargeback" for e in mine), row
        assert math.isclose(row["card_age_days"], (as_of - issued[card]).total_seconds() / 86_400, abs_tol=1e-4)
        assert issued[card] < as_of
    assert any(r["card_chargebacks_90d"] > 0 for r in picked)


def test_an_authorization_at_the_instant_of_as_of_counts_only_the_next_night(
    written: FraudSummary, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.duckdb"
    shutil.copy(written.path, copy)
    night = CONFIG.start.replace(tzinfo=None) + timedelta(days=2)
    query = "SELECT card_auths_7d FROM card_features_daily WHERE card_id = $c AND as_of = $t"
    with open_offline(copy, read_only=False) as con:
        card = con.sql("SELECT min(card_id) FROM cards WHERE issued_at < $t", params={"t": night}).fetchall()[0][0]

        def counts() -> list[float]:  # that night's card_auths_7d and the next night's
            at = (night, night + timedelta(days=1))
            return [float(con.sql(query, params={"c": card, "t": t}).fetchall()[0][0]) for t in at]

        before = counts()
        con.execute(
            "INSERT INTO card_events VALUES ('late', $t, $c, 'm-0001', 'auth', 10.0, 'late')", {"t": night, "c": card}
        )
        build_card_features(con, written.start + timedelta(days=1), written.end)
        after = counts()
    assert after == [before[0], before[1] + 1]


def test_one_row_per_card_issued_before_each_night(written: FraudSummary) -> None:
    with open_offline(written.path) as con:
        per_night = con.sql("""
            SELECT f.as_of, count(*), (SELECT count(*) FROM cards c WHERE c.issued_at < f.as_of)
            FROM card_features_daily f GROUP BY f.as_of ORDER BY f.as_of""").fetchall()
    nights = [CONFIG.start.replace(tzinfo=None) + timedelta(days=d) for d in range(1, CONFIG.days + 1)]
    assert [n for n, _, _ in per_night] == nights
    assert all(rows == issued for _, rows, issued in per_night)
    assert per_night[0][1] < per_night[-1][1] <= CONFIG.cards  # cards issued during the days join later nights


def test_training_labels_are_the_chargebacks_that_name_each_authorization(world: World, written: FraudSummary) -> None:
    usecase = load_usecase(USECASE_FILE)
    with open_offline(written.path) as con:
        frame = training_frame(con, usecase, written.start, written.end, id_column="event_id").to_pylist()
    disputed = np.zeros(world.auths.fraud.size, dtype=bool)
    disputed[world.chargebacks.auth] = True
    index = [int(r["event_id"].removeprefix("auth-")) for r in frame]
    assert frame and [r["fraud"] for r in frame] == disputed[index].astype(int).tolist()
    assert max(r["event_time"] for r in frame) <= written.end - timedelta(days=3)  # label windows closed
    assert all(world.auths.card[i] + CARD_ID_BASE == r["card_id"] for i, r in zip(index, frame, strict=True))


def test_the_default_world_generates_in_seconds(tmp_path: Path) -> None:
    began = time.perf_counter()
    summary = generate(tmp_path / "default.duckdb", FraudConfig())
    assert time.perf_counter() - began < 20.0  # ~1 s on a laptop: sized for tests and the docs
    assert summary.rows["cards"] == 3_000 and 0.01 <= summary.fraud_rate <= 0.03
