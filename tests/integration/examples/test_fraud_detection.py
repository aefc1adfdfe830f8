"""The third example, fraud on card authorizations, end to end: generate, train batch and online through the
toolkit (labels from the chargebacks that name each authorization), and the stream processor's card and merchant
windows over a breach, checked against a count by hand."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from shadow_log_helpers import scored_request, write_by_hour

from comparisons.comparison import compare
from migrate.artifact import ArtifactStore
from migrate.batch.event_history import iter_events, online_training_frame
from migrate.batch.offline_store import open_offline
from migrate.batch.training import train
from migrate.devservices.broker import start_broker
from migrate.devservices.redis_server import RedisServer
from migrate.examples.fraud_detection.generator import FraudConfig, FraudSummary, generate, simulate
from migrate.feature_windows import evaluate, groups_of
from migrate.registry import Registry
from migrate.scoring import load_model
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase
from online.features.redis_store import RedisFeatureStore
from online.stream.label_topic import LabelRecord
from online.stream.processor import StreamProcessor
from online.stream.publisher import EventPublisher

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the simulation's instants are microseconds since it
CONFIG = FraudConfig()  # seed 11: 3,000 cards, 300 merchants, 10 days, ~61,000 authorizations, 2.2 % fraud


@dataclass(frozen=True)
class FraudWorld:
    """The generated world and the holdout metrics of the two artifacts trained on it."""

    settings: Settings
    usecase: UseCase
    summary: FraudSummary
    batch: dict[str, float]
    online: dict[str, float]


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FraudWorld]:
    """The default world in a state dir of its own, with a batch and an online model trained at its end."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MIGRATE_STATE_DIR", str(tmp_path_factory.mktemp("fraud-state")))
        settings = get_settings()
        usecase = Registry(settings.usecases_dir).get("fraud_detection")
        summary = generate(settings.offline_store_path, CONFIG)
        batch, online = (train(usecase, settings, summary.end, role=role).metrics for role in ("batch", "online"))
        yield FraudWorld(settings, usecase, summary, batch, online)


def test_both_models_train_on_closed_labels_and_online_beats_batch(fraud: FraudWorld) -> None:
    batch, online = fraud.batch, fraud.online
    for metrics in (batch, online):
        # The same rows for both: authorizations of days 2-7 (day 1 has no nightly row yet, days 8-10 no closed
        # label), the last of them held out.
        assert metrics["n_train"] > 25_000 and metrics["n_test"] > 5_000
        assert 0.01 < metrics["holdout_positive_rate"] < 0.05  # one day: 2.2 % over all days, 3.8 % on this one
        assert metrics["auc"] > 0.5
        # The generator draws every chargeback after the authorization it disputes: none is known when asked.
        assert metrics["own_outcome_known_rows"] == 0
    assert batch["n_test"] == online["n_test"] and batch["holdout_positive_rate"] == online["holdout_positive_rate"]
    # Why online wins, honestly: a stolen card's burst starts minutes before the authorization scored, and a breached
    # checkout carries many cards' fraud for a few hours; last night's card features see neither (only a thief who
    # came back on a later day, or a card's past disputes). The card's last 10-60 minutes, the merchant's last
    # 30-60 minutes and the request's amount do. Measured on seed 11: batch AUC 0.634, online 0.941; over seeds
    # 1, 2, 3, 5 the gap was 0.20 to 0.33.
    assert online["auc"] >= batch["auc"] + 0.15
    assert online["log_loss"] < batch["log_loss"] and online["brier"] < batch["brier"]


def test_the_real_time_windows_see_the_bursts_the_batch_features_cannot(fraud: FraudWorld) -> None:
    with open_offline(fraud.settings.offline_store_path) as con:
        frame = online_training_frame(con, fraud.usecase, fraud.summary.end - timedelta(days=5), fraud.summary.end)
    truth = simulate(CONFIG).auths  # which row was which fraud: auth-N is the simulation's authorization N
    index = np.array([int(event_id.removeprefix("auth-")) for event_id in frame["event_id"].to_pylist()])
    breach, honest = truth.breach[index], ~truth.fraud[index]
    stolen = truth.fraud[index] & ~breach
    assert breach.sum() > 30 and stolen.sum() > 100

    def median(column: str, rows: Any) -> float:
        values = np.nan_to_num(np.asarray(frame[column].to_numpy(zero_copy_only=False), dtype=np.float64))
        return float(np.median(values[rows]))

    # A stolen card's burst: its earlier authorizations of the last 10 minutes (seed 11: median 3, honest 0).
    assert median("card_auths_10m", stolen) >= 2 > median("card_auths_10m", honest)
    # A breached checkout: the merchant's last half hour is crowded (seed 11: median 4, honest 1).
    assert median("merchant_auths_30m", breach) >= 3 * max(1.0, median("merchant_auths_30m", honest))
    # Last night's activity barely tells them apart (seed 11: 16 vs 15 authorizations a week).
    assert median("card_auths_7d", truth.fraud[index]) < 1.5 * median("card_auths_7d", honest)


def _breach() -> tuple[str, datetime]:
    """The merchant of the largest breach and the instant ending its busiest half hour (from the simulation's truth)."""
    auths = simulate(CONFIG).auths
    merchants, counts = np.unique(auths.merchant[auths.breach], return_counts=True)
    merchant = int(merchants[np.argmax(counts)])
    times = np.sort(auths.at_us[auths.breach & (auths.merchant == merchant)])
    crowd = np.arange(times.size) - np.searchsorted(times, times - 1_800_000_000)  # breach auths of the 30 min before
    return f"m-{merchant:04d}", EPOCH + timedelta(microseconds=int(times[np.argmax(crowd)]) + 1)


def _merchant_by_hand(events: list[dict[str, Any]], merchant: str, at: datetime) -> list[float]:
    """merchant_auths_30m and merchant_amount_mean_60m from their definition: 1-minute buckets, (bucket(at) - W,
    bucket(at)], authorizations only, every card."""
    last = math.floor(at.timestamp() / 60)

    def amounts(minutes: int) -> list[float]:
        return [
            e["amount"]
            for e in events
            if e["merchant_id"] == merchant
            and e["kind"] == "auth"
            and last - minutes < math.floor(e["event_time"].timestamp() / 60) <= last
        ]

    hour = amounts(60)
    return [float(len(amounts(30))), sum(hour) / len(hour) if hour else math.nan]


def test_the_stream_serves_the_breached_merchants_windows_as_counted_by_hand(
    fraud: FraudWorld, tmp_path_factory: pytest.TempPathFactory
) -> None:
    usecase = fraud.usecase.model_copy(update={"name": f"t_fraud_{uuid.uuid4().hex[:8]}"})  # topics and keys apart
    merchant, busiest = _breach()
    with open_offline(fraud.settings.offline_store_path) as con:
        events = list(iter_events(con, usecase, busiest - timedelta(hours=2), busiest))
    assert usecase.realtime_features is not None and usecase.realtime_features.events is not None
    partitions = usecase.realtime_features.events.partitions
    redis_server = RedisServer(tmp_path_factory.mktemp("fraud-redis") / "redis").start()
    broker = start_broker(fraud.settings)
    try:
        publisher = EventPublisher.for_usecase(
            usecase, broker.bootstrap, topic_prefix=fraud.settings.events_topic_prefix, timeout_s=10
        )
        try:
            assert publisher.publish(events, time_field="event_time") == len(events)
        finally:
            publisher.close()
        processor = StreamProcessor(fraud.settings, usecase, bootstrap=broker.bootstrap, redis_url=redis_server.url)
        report = processor.run(until_caught_up=True, max_seconds=120)
        store = RedisFeatureStore(redis_server.url, read_timeout_s=5.0, write_timeout_s=30.0)
        try:
            card = next(e["card_id"] for e in reversed(events) if e["merchant_id"] == merchant)
            read = store.read_online(usecase.name, [(card,)], [], {"merchant": [(merchant,)]}, partitions)
        finally:
            store.close()
    finally:
        broker.stop()
        redis_server.stop()
    assert report.events == len(events) and report.dead_letters == 0
    [partials] = read.states["merchant"]
    assert len(partials) > 1  # the merchant's authorizations came from cards on several partitions, merged at read
    spec = next(g for g in groups_of(usecase) if g.name == "merchant").spec
    # At the last event, and 40 minutes later with no new event: the windows decay as time passes.
    for at in (events[-1]["event_time"], events[-1]["event_time"] + timedelta(minutes=40)):
        expected = _merchant_by_hand(events, merchant, at)
        assert evaluate(spec, partials, at.timestamp()) == pytest.approx(expected, rel=1e-9, nan_ok=True), at
    assert _merchant_by_hand(events, merchant, events[-1]["event_time"])[0] >= 5  # a breach, not a quiet hour


def test_the_comparator_judges_the_held_out_day_from_the_chargebacks(fraud: FraudWorld) -> None:
    """The shadow log the service would have written for the held-out day (each authorization scored by both
    models), the chargebacks as the sink derives them from the events: the comparator labels every request whose
    3 days passed without a chargeback 0 (``otherwise``), finds live ahead of batch beyond doubt, and its
    accuracy check passes.

    Each request carries its authorization's id (context ``auth_id``, ``label.from_event.request_field``) and each
    chargeback names one, so the comparator joins them by id, as the trainer does: the verdict sees what the
    holdout saw. (Joined by card instead, a stolen card's honest authorizations before the theft counted as fraud
    too: AUC batch 0.579, live 0.663 on seed 11.)
    """
    usecase, settings = fraud.usecase, fraud.settings
    closed = fraud.summary.end - timedelta(days=3)
    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    batch_model, online_model = load_model(usecase, artifacts, "batch"), load_model(usecase, artifacts, "online")
    with open_offline(settings.offline_store_path) as con:
        frame = online_training_frame(con, usecase, closed - timedelta(days=1), fraud.summary.end)
        chargebacks = [
            e
            for e in iter_events(con, usecase, closed - timedelta(days=1), fraud.summary.end)
            if e["kind"] == "chargeback"
        ]

    def matrix(names: tuple[str, ...]) -> Any:
        return np.column_stack([frame[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names])

    batch, live = (
        batch_model.score(matrix(batch_model.feature_names)),
        online_model.score(matrix(online_model.feature_names)),
    )
    versions = (batch_model.version, online_model.version)
    records = [
        # What the request carried: its authorization's id, and the amount and merchant it was scored with.
        scored_request(
            usecase.name,
            {"card_id": card},
            moment,
            event_id,
            (float(batch[i]), float(live[i])),
            versions,
            {"auth_id": event_id, "amount": 1.0, "merchant_id": "m"},
        )
        for i, (card, moment, event_id) in enumerate(
            zip(*(frame[c].to_pylist() for c in ("card_id", "event_time", "event_id")), strict=True)
        )
    ]
    labels = [  # as the sink derives them from the chargeback events: the card, and the authorization named
        LabelRecord(
            usecase=usecase.name,
            key={"card_id": c["card_id"]},
            event_time=c["event_time"],
            label=1.0,
            source_event_id=c["event_id"],
            ref=c["auth_id"],
        )
        for c in chargebacks
    ]
    assert len(records) > 5_000 and labels
    write_by_hour(settings.shadow_dir / usecase.name, records, lambda r: r.request_time, "shadow")
    write_by_hour(settings.labels_dir / usecase.name, labels, lambda r: r.event_time, "labels")

    comparison = compare(usecase, settings)
    auc = comparison.accuracy.score("auc")
    assert auc is not None and auc.batch is not None and auc.live is not None
    assert comparison.accuracy.pairs > 5_000  # every request of the day: no chargeback within 3 days means 0
    # The trainer's holdout on the same day: batch 0.634, online 0.941 (seed 11).
    assert auc.live > auc.batch + 0.15 and auc.low is not None and auc.low > 0.1, auc
    check = next(c for c in comparison.verdict.checks if c.name == "accuracy")
    assert check.passed is True
