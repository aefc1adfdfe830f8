"""Training rows cannot see the outcome: a planted leak does not lift the holdout AUC once predictions are made
``predict_before`` ahead; a feature group keyed by a non-entity column equals its offline join, counted by hand.

The data carry no signal at all: outcomes are coin flips. Two kinds of events carry the outcome anyway, as real
data do (a status update at the instant the outcome is recorded, a precursor minutes before it). A model that
sees them scores an AUC near 1; a model trained on honest rows stays near 0.5.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from migrate.batch.event_history import online_training_frame
from migrate.errors import UseCaseError
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 8
CUSTOMERS = 300
REGIONS = ("north", "south", "east", "west")
PRECURSOR = timedelta(minutes=5)


def leaky_usecase(predict_before: str, context: list[dict[str, Any]] | None = None) -> UseCase:
    return UseCase.model_validate(
        {
            "name": "leaky",
            "description": "Coin-flip outcomes with the outcome planted in the event stream.",
            "owner": "tests",
            "entity": {
                "keys": [{"name": "customer_id", "type": "int"}],
                "source": {"table": "customers", "created_at_column": "created_at"},
            },
            "model": {"trainer": "tests.nothing:train"},
            "batch_features": {
                "table": "customer_daily",
                "timestamp_column": "as_of",
                "features": [{"name": "tenure_days"}],
            },
            "realtime_features": {
                "event_table": "events",
                "event_time_column": "event_time",
                "events": {
                    "id_field": "event_id",
                    "fields": {
                        "event_id": "str",
                        "event_time": "datetime",
                        "customer_id": "int",
                        "region": "str",
                        "outcome": "int",
                        "leak": "float",
                        "hour": "int",
                    },
                },
                "features": [
                    {"name": "leak_mean_60m", "aggregation": "mean", "field": "leak", "window": "60m"},
                    {"name": "events_60m", "aggregation": "count", "window": "60m"},
                ],
                "groups": [
                    {
                        "name": "region",
                        "key": ["region"],
                        "features": [{"name": "region_events_60m", "aggregation": "count", "window": "60m"}],
                    }
                ],
            },
            "context": [{"name": "region", "type": "str"}, *(context or [])],
            "training": {"predict_before": predict_before},
            "label": {
                "name": "outcome",
                "description": "A coin flip.",
                "kind": "binary",
                "available_after": "1h",
                "event_field": "outcome",
            },
            "lookup_table": {"name": "lt_leaky"},
            "batch": {"schedule": "0 2 * * *"},
        }
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Customers with a home region, daily tenure rows, and per outcome: the outcome event, a precursor event 5
    minutes before it and a status event at the same instant, both carrying the outcome in ``leak``."""
    rng = random.Random(2026)
    path = tmp_path_factory.mktemp("leaky") / "offline.duckdb"
    events: list[tuple[Any, ...]] = []
    n = 0
    for customer in range(CUSTOMERS):
        region = REGIONS[customer % len(REGIONS)]
        for _ in range(rng.randint(6, 14)):
            when = START + timedelta(days=1, seconds=rng.uniform(0, (DAYS - 1) * 86_400))
            outcome = int(rng.random() < 0.3)
            n += 1
            hour = when.hour  # e.g. a scheduled hour: known long before the event
            events.append((f"a{n:07d}", when - PRECURSOR, customer, region, None, float(outcome), hour))  # precursor
            events.append((f"b{n:07d}", when, customer, region, None, float(outcome), hour))  # status, same instant
            events.append((f"c{n:07d}", when, customer, region, outcome, None, hour))  # the labelled outcome
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE customers (customer_id BIGINT, created_at TIMESTAMP)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?)", [(c, START.replace(tzinfo=None)) for c in range(CUSTOMERS)]
        )
        con.execute("CREATE TABLE customer_daily (customer_id BIGINT, as_of TIMESTAMP, tenure_days DOUBLE)")
        con.executemany(
            "INSERT INTO customer_daily VALUES (?, ?, ?)",
            [
                (c, (START + timedelta(days=d)).replace(tzinfo=None), float(d + c % 7))
                for c in range(CUSTOMERS)
                for d in range(DAYS + 1)
            ],
        )
        con.execute(
            "CREATE TABLE events (event_id VARCHAR, event_time TIMESTAMP, customer_id BIGINT, region VARCHAR, "
            "outcome INTEGER, leak DOUBLE, hour INTEGER)"
        )
        con.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e[0], e[1].replace(tzinfo=None), *e[2:]) for e in events],
        )
    yield path


def frame_of(path: Path, usecase: UseCase) -> Any:
    with duckdb.connect(str(path)) as con:
        return online_training_frame(con, usecase, START, START + timedelta(days=DAYS + 1))


def holdout_auc(frame: Any, names: list[str]) -> float:
    times = np.array([t.timestamp() for t in frame.column("event_time").to_pylist()])
    split = np.quantile(times, 0.7)
    x = np.column_stack([np.asarray(frame.column(n).to_numpy(zero_copy_only=False), dtype=float) for n in names])
    y = np.asarray(frame.column("outcome").to_numpy(zero_copy_only=False), dtype=int)
    train, test = times < split, times >= split
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0, early_stopping=False).fit(x[train], y[train])
    return float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))


def test_a_planted_leak_does_not_lift_the_auc_when_predicting_ahead(store: Path) -> None:
    honest = leaky_usecase("30m")
    frame = frame_of(store, honest)
    assert frame.num_rows > 2_000
    auc = holdout_auc(frame, honest.online_feature_names)
    assert 0.4 < auc < 0.58, f"holdout AUC {auc:.3f}: the leaked outcome reached the training rows"
    # The control: predicting at the outcome's instant, the precursor 5 minutes before it is fair game and the
    # model finds the outcome in it. So the data do leak, and the lead is what keeps it out.
    at_the_event = leaky_usecase("0s")
    leaked = holdout_auc(frame_of(store, at_the_event), at_the_event.online_feature_names)
    assert leaked > 0.9, f"the planted leak should be visible at the event's instant (AUC {leaked:.3f})"


def test_the_same_instant_is_never_seen_even_without_a_lead(store: Path) -> None:
    """A status event at the very instant of the outcome (sorted before it) is not in its training row."""
    frame = frame_of(store, leaky_usecase("0s"))
    rows = frame.select(["customer_id", "prediction_time", "events_60m"]).to_pylist()
    with duckdb.connect(str(store)) as con:
        times: dict[int, list[float]] = {}
        for customer, when in con.execute("SELECT customer_id, epoch(event_time) FROM events").fetchall():
            times.setdefault(customer, []).append(float(when))
    for row in rows[:400]:
        at = row["prediction_time"].timestamp()
        last = math.floor(at / 60)
        expected = sum(1 for w in times[row["customer_id"]] if w < at and last - 60 < math.floor(w / 60) <= last)
        assert row["events_60m"] == expected, row


def test_a_group_keyed_by_a_non_entity_column_equals_its_offline_join(store: Path) -> None:
    frame = frame_of(store, leaky_usecase("30m"))
    rows = frame.select(["customer_id", "prediction_time", "region_events_60m"]).to_pylist()
    with duckdb.connect(str(store)) as con:
        by_region: dict[str, list[float]] = {}
        for region, when in con.execute("SELECT region, epoch(event_time) FROM events").fetchall():
            by_region.setdefault(region, []).append(float(when))
    nonzero = 0
    for row in rows[:: max(1, len(rows) // 400)]:
        at = row["prediction_time"].timestamp()
        last = math.floor(at / 60)
        region = REGIONS[row["customer_id"] % len(REGIONS)]
        expected = sum(1 for w in by_region[region] if w < at and last - 60 < math.floor(w / 60) <= last)
        assert row["region_events_60m"] == expected, row
        nonzero += expected > 0
    assert nonzero > 50  # a region's window holds other customers' events: the join is not the entity's own


def test_a_context_input_known_ahead_is_read_from_the_event_a_prediction_precedes(store: Path) -> None:
    """A numeric context input read from the labelled event is refused when training predicts ahead of it, unless
    the use case declares it known ahead (a scheduled hour); then each row carries its own event's value."""
    hour: dict[str, Any] = {"name": "hour", "type": "int"}
    with pytest.raises(UseCaseError, match=r"(?s)predict_before.*\[.hour.\].*known_ahead"):
        frame_of(store, leaky_usecase("30m", [hour]))
    frame = frame_of(store, leaky_usecase("30m", [{**hour, "known_ahead": True}]))
    assert frame.num_rows > 1_000
    # By hand: the hour of the labelled event each row predicts 30 minutes ahead of.
    assert frame.column("hour").to_pylist() == [t.hour for t in frame.column("event_time").to_pylist()]
    at_event = frame_of(store, leaky_usecase("0s", [hour]))  # at the event itself nothing needs declaring
    assert at_event.column("hour").to_pylist() == [t.hour for t in at_event.column("event_time").to_pylist()]
