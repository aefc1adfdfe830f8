"""``migrate backtest`` on the fraud example: each past authorization answered by the batch path from the lookup
version live at its instant (checked against the nightly feature row scored by hand) and by the online path from
the features as of that instant (checked bit for bit against the offline point-in-time training row); the
comparator judges it as a backtest; it resumes; it refuses models that saw the period."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from comparisons.comparison import compare
from migrate.artifact import ArtifactStore
from migrate.backtest.runner import BacktestResult, backtest_settings, run_backtest
from migrate.batch.event_history import RealtimeHistory, online_training_frame, realtime_features_at
from migrate.batch.offline_store import open_offline, prediction_requests
from migrate.batch.training import train
from migrate.cli.main import app
from migrate.errors import BacktestError
from migrate.examples.fraud_detection.generator import FraudConfig, FraudSummary, generate
from migrate.feature_windows import epoch_s, groups_of
from migrate.label_progress import read_progress
from migrate.registry import Registry
from migrate.scoring import load_model
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration

CONFIG = FraudConfig(days=13)  # seed 11: 3,000 cards from Nov 1; ~6,100 authorizations a day; past the labels' end


HOUR = timedelta(hours=1)
SERVABLE = "amount BETWEEN 0 AND 100000"  # the context bounds of usecases/fraud_detection.yaml: serving refuses others
# Rows the stream processor refuses (no time; NaN; no merchant, a group's key), planted in the history: the
# backtest's windows and labels and the online model's training leave them out and count them.
PLANTED = [("planted-auth", "m-planted", "auth", "NaN"), ("planted-chargeback", None, "chargeback", None)]


@dataclass(frozen=True)
class Backtested:
    settings: Settings
    usecase: UseCase
    summary: FraudSummary
    start: datetime
    until: datetime
    result: BacktestResult


@pytest.fixture(scope="module")
def backtested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backtested]:
    """Both models trained on data before Nov 8, then a backtest of Nov 8 and 9 (their chargebacks arrive by Nov 13)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MIGRATE_STATE_DIR", str(tmp_path_factory.mktemp("backtest")))
        settings = get_settings()
        usecase = Registry(settings.usecases_dir).get("fraud_detection")
        summary = generate(settings.offline_store_path, CONFIG)
        with duckdb.connect(str(settings.offline_store_path)) as con:
            con.executemany(
                "INSERT INTO card_events BY NAME SELECT * FROM (SELECT ?::VARCHAR AS event_id, "
                "NULL::TIMESTAMP AS event_time, 1 AS card_id, ? AS merchant_id, ? AS kind, ?::DOUBLE AS amount, "
                "'planted' AS auth_id)",
                PLANTED,
            )
        start = summary.start + timedelta(days=7)
        with duckdb.connect(str(settings.offline_store_path)) as con:  # an authorization serving refuses (> max)
            # Before the range (its label closed before training's end) and in it: a card with batch features then.
            for name, at in (
                ("planted-large", start - timedelta(days=4, hours=12)),
                ("planted-in-range", start + HOUR),
            ):
                con.execute(
                    "INSERT INTO card_events SELECT $id, $at, min(card_id), 'm-planted', 'auth', 250000.0, $id "
                    "FROM card_features_daily WHERE as_of < $at",
                    {"id": name, "at": at.replace(tzinfo=None)},
                )
        for role in ("batch", "online"):
            train(usecase, settings, start, role=role)  # type: ignore[arg-type]
        until = start + timedelta(days=2)
        result = run_backtest(usecase, settings, start, until)
        yield Backtested(settings, usecase, summary, start, until, result)


def _shadow(result: BacktestResult, usecase: UseCase) -> list[dict[str, object]]:
    files = str(result.settings.shadow_dir / usecase.name / "**" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return (
            con.sql(f"SELECT * FROM read_parquet('{files}') ORDER BY request_time, request_id")
            .to_arrow_table()
            .to_pylist()
        )


def test_every_authorization_of_the_range_is_answered_once_by_both_paths(backtested: Backtested) -> None:
    rows = _shadow(backtested.result, backtested.usecase)
    with open_offline(backtested.settings.offline_store_path) as con:
        auths = con.execute(
            "SELECT event_id FROM card_events "
            f"WHERE kind = 'auth' AND event_time >= ? AND event_time < ? AND {SERVABLE}",
            [backtested.start.replace(tzinfo=None), backtested.until.replace(tzinfo=None)],
        ).fetchall()
    assert len(rows) == len(auths) == backtested.result.requests > 10_000
    assert {r["request_id"] for r in rows} == {f"backtest-{a}" for (a,) in auths}
    assert all(r["stage"] == "backtest" and r["online_prediction"] is not None for r in rows)
    # Each names the nightly version that answered it: the night at or before it (one version per night).
    first_day = [r for r in rows if r["request_time"].date() == backtested.start.date()]  # type: ignore[union-attr]
    assert {r["lookup_version"] for r in rows} == {1, 2, 3}
    assert all(r["lookup_version"] == (1 if r["request_time"].hour < 2 else 2) for r in first_day)  # type: ignore[union-attr]
    # Cards issued after the night's run have no lookup row: misses, as serving would have had.
    misses = [r for r in rows if r["batch_miss"]]
    assert 0 < len(misses) == backtested.result.batch_misses < 0.02 * len(rows)
    assert all(r["batch_prediction"] is None for r in misses)


def test_the_rows_the_stream_refuses_are_left_out_and_counted(backtested: Backtested) -> None:
    """Both planted rows are in the one stream that feeds the windows and the labels; the generator's are valid."""
    assert backtested.result.refused_feature_events == {"main": len(PLANTED)}
    assert backtested.result.invalid_label_events == len(PLANTED)
    store = ArtifactStore(backtested.settings.artifacts_dir, backtested.settings.project_dir)
    online = store.list(backtested.usecase.name, "online")[0]
    batch = store.list(backtested.usecase.name, "batch")[0]
    assert online.metrics["refused_events"] == len(PLANTED) and "refused_events" not in batch.metrics
    # The authorization of 250,000 (the context's max is 100,000) gets a 422 online: no online training row.
    assert online.metrics["refused_requests"] == 1 and "refused_requests" not in batch.metrics
    # The one in the range gets a 422 online: neither path answers it (the counts above leave it out by SQL).
    assert backtested.result.refused_requests == 1


def test_batch_answers_come_from_the_version_live_at_each_instant(backtested: Backtested) -> None:
    """By hand: the night at or before the request (02:00 UTC daily), the card's newest feature row at or before
    that night's cutoff, scored by the batch model."""
    settings, usecase = backtested.settings, backtested.usecase
    model = load_model(usecase, ArtifactStore(backtested.result.settings.artifacts_dir, settings.project_dir))
    rows = [r for r in _shadow(backtested.result, usecase) if not r["batch_miss"]][::97]
    names = list(model.feature_names)
    with open_offline(settings.offline_store_path) as con:
        for row in rows:
            at = row["request_time"]
            assert isinstance(at, datetime)
            night = at.replace(hour=2, minute=0, second=0, microsecond=0)
            night = night if night <= at else night - timedelta(days=1)
            features = con.execute(
                f"SELECT {', '.join(names)} FROM card_features_daily WHERE card_id = ? AND as_of <= ? "
                "ORDER BY as_of DESC LIMIT 1",
                [row["key_card_id"], night.astimezone(UTC).replace(tzinfo=None)],
            ).fetchall()
            expected = model.score(np.asarray(features, dtype=np.float64))[0]
            assert row["batch_prediction"] == expected, row["request_id"]
            assert row["batch_data_age_s"] == (at - night).total_seconds()


def test_online_answers_equal_the_offline_point_in_time_rows_bit_for_bit(backtested: Backtested) -> None:
    settings, usecase = backtested.settings, backtested.usecase
    model = load_model(usecase, ArtifactStore(backtested.result.settings.artifacts_dir, settings.project_dir), "online")
    with open_offline(settings.offline_store_path) as con:
        frame = online_training_frame(con, usecase, backtested.start, backtested.summary.end)
    matrix = np.column_stack([frame[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in model.feature_names])
    expected = dict(zip(frame["event_id"].to_pylist(), model.score(matrix).tolist(), strict=True))
    rows = _shadow(backtested.result, usecase)
    compared = [r for r in rows if str(r["request_id"]).removeprefix("backtest-") in expected]
    assert len(compared) > 0.9 * len(rows)  # the training frame leaves out cards without a nightly row yet
    for row in compared:
        assert row["online_prediction"] == expected[str(row["request_id"]).removeprefix("backtest-")]


def test_the_comparator_judges_it_as_a_backtest(backtested: Backtested) -> None:
    comparison = compare(backtested.usecase, backtested.result.settings)
    assert comparison.backtest and comparison.verdict.evidence.backtest
    auc = comparison.accuracy.score("auc")
    assert auc is not None and auc.batch is not None and auc.live is not None
    # The models' holdout (seed 11, trained at Nov 8): batch 0.70, online 0.91; the backtest's two days agree.
    assert auc.live > auc.batch + 0.15 and auc.low is not None and auc.low > 0.1
    assert comparison.verdict.decision == "promote" and not comparison.verdict.auto_promote
    assert any("backtest from history" in reason for reason in comparison.verdict.reasons)
    latency = next(c for c in comparison.verdict.checks if c.name == "live_p99_latency_ms")
    assert latency.passed is None and "judged on live traffic" in latency.detail
    # A backtest's live answers are the offline point-in-time values: its feature-skew check finds none.
    skew = comparison.feature_skew
    assert skew.available and skew.sampled > 1_000, skew.reason
    assert all(f.mismatches == 0 and f.missing_online == 0 for f in skew.features), skew.features
    judged = next(c for c in comparison.verdict.checks if c.name == "feature_skew")
    assert judged.passed is True and judged.value == 0.0
    assert judged.detail.startswith("no feature differs"), judged.detail  # was: naming the first one, at 0.0 %


def test_the_label_stream_is_known_up_to_the_horizon_when_the_history_goes_on(backtested: Backtested) -> None:
    """The backtest read every event before the range's end plus `available_after` (Nov 13) and the history goes on
    after it: the label watermark stands there, not at the last event before it, so no request stays pending
    (a rare label after a quiet stretch left the flight trial's last windows open)."""
    horizon = backtested.until + timedelta(days=3)
    labels_root = backtested.result.settings.labels_dir / backtested.usecase.name
    with open_offline(backtested.settings.offline_store_path) as con:
        newest_before, later = con.execute(
            "SELECT max(event_time) FILTER (WHERE event_time < $h), count(*) FILTER (WHERE event_time >= $h) "
            "FROM card_events",
            {"h": horizon.replace(tzinfo=None)},
        ).fetchall()[0]
        (requests,) = con.execute(
            "SELECT count(*) FROM card_events "
            f"WHERE kind = 'auth' AND event_time >= $s AND event_time < $u AND {SERVABLE}",
            {"s": backtested.start.replace(tzinfo=None), "u": backtested.until.replace(tzinfo=None)},
        ).fetchall()[0]
    assert later > 0 and newest_before < horizon.replace(tzinfo=None)  # the case: a gap before the horizon
    assert read_progress(labels_root) == horizon  # was the newest event before it
    accuracy = compare(backtested.usecase, backtested.result.settings).accuracy
    assert accuracy.label_watermark == horizon and (accuracy.pending, accuracy.labeled) == (0, requests)


def test_a_second_run_resumes_and_a_lost_day_is_redone_identically(backtested: Backtested) -> None:
    usecase, settings = backtested.usecase, backtested.settings
    before = _shadow(backtested.result, usecase)
    again = run_backtest(usecase, settings, backtested.start, backtested.until)
    assert (again.requests, again.skipped_days) == (0, 2)
    # A run killed while writing the second day: its marker never came, its files may be partial.
    bt = backtested.result.settings.state_dir
    second = backtested.start + timedelta(days=1)
    (bt / "done" / f"{second:%Y%m%dT%H%M%S}-{backtested.until:%Y%m%dT%H%M%S}").unlink()
    day = bt / "shadow" / usecase.name / f"date={second:%Y-%m-%d}"
    for hour in sorted(day.iterdir())[3:]:
        shutil.rmtree(hour)
    redone = run_backtest(usecase, settings, backtested.start, backtested.until)
    assert redone.skipped_days == 1 and 5_000 < redone.requests < len(before)
    assert _shadow(backtested.result, usecase) == before


def test_a_model_trained_on_the_period_is_refused(backtested: Backtested, tmp_path: Path) -> None:
    settings = backtested.settings.model_copy(update={"state_dir": tmp_path / "state", "offline_store": None})
    shutil.copy(backtested.settings.offline_store_path, tmp_path / "offline.duckdb")
    settings = settings.model_copy(update={"offline_store": tmp_path / "offline.duckdb"})
    train(backtested.usecase, settings, backtested.until, role="online")
    train(backtested.usecase, settings, backtested.until)
    with pytest.raises(BacktestError, match=r"trained on data up to .* after the backtest starts") as refused:
        run_backtest(backtested.usecase, settings, backtested.start, backtested.until)
    assert "--as-of at or before" in refused.value.fix
    assert not (backtest_settings(settings, backtested.usecase).shadow_dir).exists()


def test_the_cli_runs_it_and_the_gate_says_it_is_a_backtest(
    backtested: Backtested, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(backtested.settings.state_dir))
    runner = CliRunner()
    span = ["--from", backtested.start.isoformat(), "--until", backtested.until.isoformat()]
    ran = runner.invoke(app, ["backtest", "fraud_detection", *span])
    assert ran.exit_code == 0, ran.output
    assert (
        "resumed: 2 days were already written" in ran.output and "migrate gate fraud_detection --backtest" in ran.output
    )
    assert f"left out: {len(PLANTED)} events of the label stream's history" in ran.output
    gate = runner.invoke(app, ["gate", "fraud_detection", "--backtest"])
    assert gate.exit_code == 0, gate.output
    assert "PROMOTE" in gate.output and "backtest requests (answers from history)" in gate.output
    assert "confirm on live traffic" in gate.output
    wrong = runner.invoke(app, ["backtest", "fraud_detection", "--from", "2026-11-08", "--until", "2026-11-07"])
    assert wrong.exit_code == 1 and "fix:" in wrong.output


def test_the_production_profile_runs_a_backtest_on_its_own_scratch_store(backtested: Backtested) -> None:
    """Production refuses embedded stand-ins; the backtest's lookup versions are its own SQLite file on purpose,
    never the live store (whatever MIGRATE_SQL_URL says)."""
    live = backtested.settings.model_copy(update={"profile": "production", "sql_url": SecretStr("postgresql://x/y")})
    scratch = backtest_settings(live, backtested.usecase)
    assert scratch.sql_url_value == f"sqlite:///{scratch.state_dir / 'lookup.db'}"
    assert scratch.state_dir == live.state_dir / "backtests" / "fraud_detection"


def test_nightly_versions_are_kept_as_parquet(backtested: Backtested) -> None:
    versions = sorted((backtested.result.settings.state_dir / "versions").glob("*.parquet"))
    assert [p.stem for p in versions] == ["20261107T020000Z", "20261108T020000Z", "20261109T020000Z"]
    assert all(pq.read_metadata(p).num_rows > 2_500 for p in versions)


def test_feature_ages_are_those_serving_would_log(backtested: Backtested) -> None:
    """By hand: a real-time feature's age is the time since its key's newest event before the request (any kind,
    as the stream's state keeps it); the batch features' age since the row's as_of. The comparator then shows live
    data minutes old where the lookup rows are hours old, and the merchant group's freshness on its own."""
    settings, usecase = backtested.settings, backtested.usecase
    rows = _shadow(backtested.result, usecase)[::251]
    with open_offline(settings.offline_store_path) as con:
        for row in rows:
            at = row["request_time"]
            assert isinstance(at, datetime)
            naive = at.astimezone(UTC).replace(tzinfo=None)
            card, merchant = (
                con.execute(
                    f"SELECT max(event_time) FROM card_events WHERE {column} = ? AND event_time < ?", [v, naive]
                ).fetchall()[0][0]
                for column, v in (
                    ("card_id", row["key_card_id"]),
                    ("merchant_id", json.loads(str(row["context"]))["merchant_id"]),
                )
            )
            ages = json.loads(str(row["online_feature_ages_s"]))
            assert ages.get("card_auths_10m") == (
                None if card is None else pytest.approx((naive - card).total_seconds())
            )
            assert ages.get("merchant_auths_30m") == (
                None if merchant is None else pytest.approx((naive - merchant).total_seconds())
            )
    comparison = compare(usecase, backtested.result.settings)
    staleness = comparison.staleness
    assert staleness.live.p50 is not None and staleness.batch.p50 is not None
    assert staleness.live.p50 < staleness.batch.p50 / 3
    merchant = next(g for g in staleness.groups if g.group == "merchant")
    assert merchant.age.n > 0 and merchant.no_event_share is not None and merchant.no_event_share < 1


def test_one_history_read_for_the_range_answers_each_day_as_a_read_per_day_did(backtested: Backtested) -> None:
    """The backtest reads the event history once and asks it day after day; the old way read the history before
    each day's end and replayed it from scratch. Same numbers, every request of every day (and, on a sample, the
    same as a fresh window state fed by hand with the key's events strictly before the request)."""
    settings, usecase = backtested.settings, backtested.usecase
    days = [(backtested.start + timedelta(days=i), backtested.start + timedelta(days=i + 1)) for i in range(2)]
    groups = [g for g in groups_of(usecase) if g.spec.features]
    with open_offline(settings.offline_store_path) as con:
        history = RealtimeHistory(con, usecase, backtested.until)
        for first, last in days:
            requests = prediction_requests(con, usecase, first, last)
            assert len(requests) > 5_000
            once = history.features(requests)
            per_day = realtime_features_at(con, usecase, requests, last)
            assert once.shape == (len(requests), len(usecase.realtime_feature_names))
            assert np.array_equal(once, per_day, equal_nan=True)
            for row in range(0, len(requests), 499):
                at = requests["prediction_time"][row].as_py()
                expected = []
                for group in groups:
                    where = " AND ".join(f"{k} = ?" for k in group.key)
                    found = con.execute(
                        f"SELECT * FROM card_events WHERE {where} AND event_time < ? ORDER BY event_time, event_id",
                        [*(requests[k][row].as_py() for k in group.key), at.astimezone(UTC).replace(tzinfo=None)],
                    )
                    names = [d[0] for d in found.description]
                    state = group.spec.new_state()
                    for values in found.fetchall():
                        event = dict(zip(names, values, strict=True))
                        state.add(epoch_s(event["event_time"]), event)
                    expected.extend(state.values_at(at.timestamp()))
                assert np.array_equal(once[row], np.array(expected), equal_nan=True), row
