"""Training from the logged shadow requests with their labels (``migrate spine``, ``training.spine.label_column``),
on the fraud example: the exported rows are the requests the service logged, labelled as counted by hand from the
chargebacks, with the context the requests were sent with; the online training frame built on them holds each
feature as of the request's instant (a window counted by hand), and the trainer trains on exactly those rows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from shadow_log_helpers import scored_request, write_by_hour
from typer.testing import CliRunner

from comparisons.logged_spine import export_spine
from comparisons.shadow_rows import Window
from migrate.batch.event_history import iter_events, online_training_frame
from migrate.batch.offline_store import open_offline
from migrate.batch.training import train
from migrate.cli.main import app
from migrate.examples.fraud_detection.generator import FraudConfig, FraudSummary, generate
from migrate.registry import Registry
from migrate.settings import Settings, get_settings
from migrate.usecase import Spine, UseCase
from online.stream.label_topic import LabelRecord

pytestmark = pytest.mark.integration

CONFIG = FraudConfig(cards=1_000, days=8)  # seed 11: ~16,900 authorizations, ~740 fraudulent, 8 days from Nov 1
TABLE = "logged_requests"
RESENT = 25  # the first requests of the window were sent with another amount than the event carries


@dataclass(frozen=True)
class Logged:
    settings: Settings
    usecase: UseCase  # the fraud example, its spine the exported table
    summary: FraudSummary
    auths: list[dict[str, Any]]  # the authorizations the service was asked about, in time order
    sent_amount: dict[str, float]  # auth id → the amount the request carried
    chargebacks: list[dict[str, Any]]
    window: Window


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """A fraud world whose service logged every authorization of days 2-7 (some twice, as a producer retry does),
    and whose sink logged every chargeback as a label naming its authorization."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MIGRATE_STATE_DIR", str(tmp_path_factory.mktemp("logged-spine")))
        settings = get_settings()
        example = Registry(settings.usecases_dir).get("fraud_detection")
        summary = generate(settings.offline_store_path, CONFIG)
        with open_offline(settings.offline_store_path) as con:
            events = list(iter_events(con, example, summary.start, summary.end))
        window = Window(summary.start + timedelta(days=1), summary.start + timedelta(days=7))
        assert window.since is not None and window.until is not None
        auths = [e for e in events if e["kind"] == "auth" and window.since <= e["event_time"] < window.until]
        sent = {a["event_id"]: a["amount"] + (7.5 if i < RESENT else 0.0) for i, a in enumerate(auths)}
        records = [
            scored_request(
                example.name,
                {"card_id": a["card_id"]},
                a["event_time"],
                a["event_id"],
                (0.5, 0.5),
                ("b1", "o1"),
                {"auth_id": a["event_id"], "amount": sent[a["event_id"]], "merchant_id": a["merchant_id"]},
            )
            for a in auths
        ]
        write_by_hour(
            settings.shadow_dir / example.name, [*records, *records[100:110]], lambda r: r.request_time, "shadow"
        )
        chargebacks = [e for e in events if e["kind"] == "chargeback"]
        labels = [
            LabelRecord(
                usecase=example.name,
                key={"card_id": c["card_id"]},
                event_time=c["event_time"],
                label=1.0,
                source_event_id=c["event_id"],
                ref=c["auth_id"],
            )
            for c in chargebacks
        ]
        write_by_hour(settings.labels_dir / example.name, labels, lambda r: r.event_time, "labels")
        spine = Spine(table=TABLE, time_column="request_time", label_column=example.label.name)
        usecase = example.model_copy(update={"training": example.training.model_copy(update={"spine": spine})})
        yield Logged(settings, usecase, summary, auths, sent, chargebacks, window)


def _by_hand(logged: Logged) -> tuple[dict[str, float], int]:
    """Each logged authorization's label from its definition: 1 when a chargeback naming it arrives within 3 days
    after it, 0 when 3 days passed without one; still pending when those 3 days end after the newest label seen."""
    watermark = max(c["event_time"] for c in logged.chargebacks)
    disputed: dict[str, list[datetime]] = {}
    for c in logged.chargebacks:
        disputed.setdefault(c["auth_id"], []).append(c["event_time"])
    labels, pending = {}, 0
    for a in logged.auths:
        due = a["event_time"] + timedelta(days=3)
        if due > watermark:
            pending += 1
            continue
        labels[a["event_id"]] = float(any(a["event_time"] < t <= due for t in disputed.get(a["event_id"], [])))
    return labels, pending


def test_the_export_holds_each_logged_request_once_with_its_label_by_hand(logged: Logged) -> None:
    done = export_spine(logged.usecase, logged.settings, logged.window)
    labels, pending = _by_hand(logged)
    assert sum(labels.values()) > 100 and pending > 1_000  # fraud to learn from, and the last 3 days still open
    assert (done.table, done.written, done.pending, done.unlabeled, done.duplicates) == (
        TABLE,
        len(labels),
        pending,
        0,  # from_event's otherwise: no chargeback within 3 days is a 0, not a missing label
        10,
    )
    with open_offline(logged.settings.offline_store_path) as con:
        rows = con.sql(f"SELECT auth_id, fraud, amount, request_time FROM {TABLE}").fetchall()
    assert {auth: label for auth, label, _, _ in rows} == labels and len(rows) == len(labels)
    assert all(amount == logged.sent_amount[auth] for auth, _, amount, _ in rows)
    # Exporting the same window again replaces it: no duplicate rows.
    again = export_spine(logged.usecase, logged.settings, logged.window)
    assert again.table_rows == len(labels)


def test_training_rows_are_the_logged_requests_with_features_as_of_each_request(logged: Logged) -> None:
    export_spine(logged.usecase, logged.settings, logged.window)
    labels, _ = _by_hand(logged)
    assert logged.window.since is not None
    with open_offline(logged.settings.offline_store_path) as con:
        frame = online_training_frame(con, logged.usecase, logged.window.since, logged.summary.end)
    rows = frame.to_pylist()
    # Every labelled request of a card that had a nightly row before it (cards issued that day had none: the batch
    # model could not have scored them either), and none twice.
    assert len(rows) == len({r["auth_id"] for r in rows}) and len(rows) > 0.95 * len(labels)
    assert all(r["fraud"] == labels[r["auth_id"]] for r in rows)
    # The context is what the request carried, not the event's field: the resent amounts show.
    resent = [r for r in rows if logged.sent_amount[r["auth_id"]] != _event(logged, r["auth_id"])["amount"]]
    assert len(resent) >= RESENT - 5 and all(r["amount"] == logged.sent_amount[r["auth_id"]] for r in resent)
    # A window by hand: the card's authorizations strictly before the request in its last ten 1-minute buckets.
    for row in rows[:: max(1, len(rows) // 300)]:
        at = row["prediction_time"]
        last = math.floor(at.timestamp() / 60)
        count = sum(
            1
            for a in logged.auths
            if a["card_id"] == row["card_id"]
            and a["event_time"] < at
            and last - 10 < math.floor(a["event_time"].timestamp() / 60) <= last
        )
        if at - timedelta(minutes=11) >= logged.auths[0]["event_time"]:  # the log starts at the window's start
            assert row["card_auths_10m"] == count, row["auth_id"]


def _event(logged: Logged, auth_id: str) -> dict[str, Any]:
    return next(a for a in logged.auths if a["event_id"] == auth_id)


def test_the_online_model_trains_on_the_exported_spine(logged: Logged) -> None:
    export_spine(logged.usecase, logged.settings, logged.window)
    info = train(logged.usecase, logged.settings, logged.summary.end, role="online")
    labels, _ = _by_hand(logged)
    closed = logged.summary.end - timedelta(days=3)  # the trainer's rows: labels closed at as_of
    usable = [a for a in logged.auths if a["event_id"] in labels and a["event_time"] < closed]
    assert info.metrics["n_train"] + info.metrics["n_test"] <= len(usable)
    assert info.metrics["n_train"] + info.metrics["n_test"] > 0.95 * len(usable)
    assert info.metrics["auc"] > 0.6, info.metrics


def test_migrate_spine_reports_what_it_wrote_and_left_out(logged: Logged, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(logged.settings.state_dir))
    assert logged.window.since is not None and logged.window.until is not None
    result = CliRunner().invoke(
        app,
        [
            "spine",
            "fraud_detection",
            "--since",
            logged.window.since.isoformat(),
            "--until",
            logged.window.until.isoformat(),
            "--table",
            "from_cli",
        ],
    )
    labels, pending = _by_hand(logged)
    assert result.exit_code == 0, result.output
    assert f"{len(labels):,} labeled requests" in result.output and "table from_cli" in result.output
    assert f"left out: {pending:,} (label window still open)" in result.output
    assert "left out: 10 (delivered twice, kept once)" in result.output
    assert "label_column: fraud" in result.output
