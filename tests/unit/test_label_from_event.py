"""A label that arrives as a later event naming its prediction (a chargeback naming its authorization): training
rows, the sink's label rows and the comparator's closed windows, each checked by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from comparisons.shadow_rows import Window, load
from migrate.backtest.runner import history_labels
from migrate.batch.offline_store import training_frame
from migrate.label_progress import write_progress
from migrate.registry import Registry
from migrate.usecase import UseCase
from online.shadow.parquet import label_table, shadow_table
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord
from online.stream.labels_from_events import NoLabel, event_labeler

pytestmark = pytest.mark.unit

FIELDS = {
    "event_id": "str",
    "event_time": "datetime",
    "card_id": "int",
    "kind": "str",
    "amount": "float",
    "auth_id": "str",
}


def usecase(otherwise: float | None = 0.0) -> UseCase:
    return UseCase.model_validate(
        {
            "name": "cards",
            "description": "Fraud on card authorizations.",
            "owner": "tests",
            "entity": {
                "keys": [{"name": "card_id", "type": "int"}],
                "source": {"table": "cards", "created_at_column": "issued_at"},
            },
            "model": {"trainer": "tests.none:train"},
            "batch_features": {"table": "card_daily", "timestamp_column": "as_of", "features": [{"name": "auths_7d"}]},
            "realtime_features": {
                "event_table": "card_events",
                "event_time_column": "event_time",
                "events": {"id_field": "event_id", "fields": FIELDS},
                "features": [{"name": "auths_10m", "aggregation": "count", "window": "10m", "where": {"kind": "auth"}}],
            },
            "training": {"spine": {"where": {"kind": "auth"}}},
            "label": {
                "name": "fraud",
                "description": "A chargeback arrived.",
                "kind": "binary",
                "available_after": "3d",
                "from_event": {"where": {"kind": "chargeback"}, "ref_field": "auth_id", "otherwise": otherwise},
            },
            "lookup_table": {"name": "lt_cards"},
            "batch": {"schedule": "0 2 * * *"},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "offline.duckdb"))
    con.execute("CREATE TABLE card_daily (card_id BIGINT, as_of TIMESTAMP, auths_7d DOUBLE)")
    con.execute("INSERT INTO card_daily VALUES (1, '2026-11-01', 3), (2, '2026-11-01', 5), (3, '2026-11-01', 0)")
    con.execute(
        "CREATE TABLE card_events (event_id VARCHAR, event_time TIMESTAMP, card_id BIGINT, kind VARCHAR, "
        "amount DOUBLE, auth_id VARCHAR)"
    )
    con.execute("""INSERT INTO card_events VALUES
        ('a1', '2026-11-02 10:00', 1, 'auth', 50, 'a1'),
        ('a2', '2026-11-02 11:00', 2, 'auth', 20, 'a2'),
        ('a3', '2026-11-02 12:00', 1, 'auth', 70, 'a3'),
        ('a4', '2026-11-09 09:00', 3, 'auth', 10, 'a4'),   -- its 3 days are not over by the end: left out
        ('c1', '2026-11-04 08:00', 1, 'chargeback', 50, 'a1'),  -- disputes a1 within 3 days: fraud
        ('c3', '2026-11-06 12:00', 1, 'chargeback', 70, 'a3')   -- disputes a3 after 4 days: too late""")
    return con


def test_training_rows_are_the_spine_events_labelled_by_the_event_that_names_them(
    store: duckdb.DuckDBPyConnection,
) -> None:
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    rows = training_frame(store, usecase(), start, end, id_column="event_id").to_pylist()
    assert [(r["event_id"], r["fraud"]) for r in rows] == [("a1", 1), ("a2", 0), ("a3", 0)]
    assert all(r["prediction_time"] == r["event_time"] for r in rows)
    # Without `otherwise`, an authorization nobody disputed stays unlabeled and out of training.
    strict = training_frame(store, usecase(otherwise=None), start, end, id_column="event_id").to_pylist()
    assert [(r["event_id"], r["fraud"]) for r in strict] == [("a1", 1)]


def test_a_table_of_past_requests_is_a_spine_with_its_own_context_and_ids(store: duckdb.DuckDBPyConnection) -> None:
    store.execute(
        "CREATE TABLE past_requests (request_id VARCHAR, requested_at TIMESTAMP, card_id BIGINT, amount DOUBLE)"
    )
    store.execute("""INSERT INTO past_requests VALUES
        ('a1', '2026-11-02 09:59', 1, 50),   -- c1 names it within 3 days: fraud
        ('q2', '2026-11-02 11:00', 2, 20),   -- nobody names it: not fraud
        ('q3', '2026-11-08 10:00', 1, 99)    -- its 3 days are not over by the end: left out""")
    raw = usecase().model_dump()
    raw["training"] = {"spine": {"table": "past_requests", "time_column": "requested_at", "id_column": "request_id"}}
    raw["context"] = [{"name": "amount", "min": 0}]
    requests = UseCase.model_validate(raw)
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    rows = training_frame(store, requests, start, end, id_column="request_id", extra_columns=["amount"]).to_pylist()
    assert [(r["request_id"], r["fraud"], r["amount"], r["auths_7d"]) for r in rows] == [
        ("a1", 1, 50.0, 3.0),
        ("q2", 0, 20.0, 5.0),
    ]
    assert all(r["prediction_time"] == r["event_time"] for r in rows)
    raw["training"] = {"spine": {"table": "past_requests", "time_column": "requested_at"}}
    with pytest.raises(ValueError, match=r"spine\.id_column"):
        UseCase.model_validate(raw)


def test_a_spine_table_with_its_own_labels_uses_them_once_their_window_closed(
    store: duckdb.DuckDBPyConnection,
) -> None:
    """``label_column``: the labels the table carries (as ``migrate spine`` exports them from the shadow log), not the
    events' — and only for requests whose label window closed before the cutoff, so no later label leaks in."""
    store.execute("CREATE TABLE logged (request_time TIMESTAMP, card_id BIGINT, amount DOUBLE, fraud DOUBLE)")
    store.execute("""INSERT INTO logged VALUES
        ('2026-11-02 09:59', 1, 50, 0),   -- the events would say fraud (c1 names a1): the table's label wins
        ('2026-11-02 11:00', 2, 20, 1),
        ('2026-11-02 12:00', 2, 30, NULL), -- no label: left out
        ('2026-11-08 10:00', 1, 99, 1)    -- its 3 days end after the cutoff: left out""")
    raw = usecase().model_dump()
    raw["training"] = {"spine": {"table": "logged", "time_column": "request_time", "label_column": "fraud"}}
    raw["context"] = [{"name": "amount", "min": 0}]
    logged = UseCase.model_validate(raw)
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    rows = training_frame(store, logged, start, end, extra_columns=["amount"]).to_pylist()
    assert [(r["card_id"], r["fraud"], r["amount"]) for r in rows] == [(1, 0, 50.0), (2, 1, 20.0)]
    raw["training"] = {"spine": {"where": {"kind": "auth"}, "label_column": "fraud"}}
    with pytest.raises(ValueError, match=r"label_column names a column of training\.spine\.table"):
        UseCase.model_validate(raw)


def test_label_events_may_come_from_another_stream(store: duckdb.DuckDBPyConnection) -> None:
    """Disputes on a topic and table of their own, naming the authorization they dispute."""
    store.execute("CREATE TABLE disputes (dispute_id VARCHAR, opened_at TIMESTAMP, card_id BIGINT, auth_id VARCHAR)")
    store.execute("INSERT INTO disputes VALUES ('d1', '2026-11-03 09:00', 2, 'a2')")  # a2 within 3 days
    raw = usecase().model_dump()
    raw["realtime_features"]["streams"] = [
        {
            "name": "disputes",
            "event_table": "disputes",
            "event_time_column": "opened_at",
            "events": {
                "id_field": "dispute_id",
                "fields": {"dispute_id": "str", "opened_at": "datetime", "card_id": "int", "auth_id": "str"},
            },
        }
    ]
    raw["label"]["from_event"] = {"where": {"card_id": 2}, "ref_field": "auth_id", "stream": "disputes"}
    disputed = UseCase.model_validate(raw)
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    rows = training_frame(store, disputed, start, end, id_column="event_id").to_pylist()
    assert [(r["event_id"], r["fraud"]) for r in rows] == [("a1", 0), ("a2", 1), ("a3", 0)]
    label = event_labeler(disputed)
    record = label(
        orjson.dumps({"dispute_id": "d1", "opened_at": "2026-11-03T09:00:00+00:00", "card_id": 2, "auth_id": "a2"})
    )
    assert record and record.key == {"card_id": 2} and record.label == 1.0
    raw["label"]["from_event"] = {"where": {"kind": "chargeback"}, "ref_field": "auth_id", "stream": "disputes"}
    with pytest.raises(ValueError, match="not among the fields of stream 'disputes'"):
        UseCase.model_validate(raw)


def test_the_sink_labels_only_the_events_of_the_label_filter() -> None:
    label = event_labeler(usecase())

    def event(kind: str, ident: str) -> bytes:
        when = "2026-11-04T08:00:00+00:00"
        return orjson.dumps(
            {"event_id": ident, "event_time": when, "card_id": 1, "kind": kind, "amount": 5.0, "auth_id": "a1"}
        )

    chargeback = label(event("chargeback", "c1"))
    assert chargeback and chargeback.label == 1.0 and chargeback.key == {"card_id": 1}
    assert chargeback.source_event_id == "c1"
    assert label(event("auth", "a9")) == NoLabel(datetime(2026, 11, 4, 8, tzinfo=UTC))  # valid, but no label
    assert label(b"{broken") is None  # invalid
    # Timed more than max_future after it reached the broker: invalid, as the stream processor dead-letters it.
    sent = datetime(2026, 11, 4, 8, tzinfo=UTC).timestamp()
    assert label(event("chargeback", "c1"), sent) == chargeback
    assert label(event("chargeback", "c1"), sent - 86_400) is None
    assert label(event("auth", "a9"), sent - 86_400) is None
    # A chargeback naming no authorization (null or absent) labels nothing, as training matches non-null ids only.
    without = orjson.loads(event("chargeback", "c2"))
    assert isinstance(label(orjson.dumps({**without, "auth_id": None})), NoLabel)
    assert isinstance(label(orjson.dumps({k: v for k, v in without.items() if k != "auth_id"})), NoLabel)
    assert label(orjson.dumps({**without, "card_id": None})) is None  # no entity: invalid (dead-lettered)


def test_an_event_whose_outcome_is_not_known_yet_labels_nothing() -> None:
    """`label.event_field` null: a valid event (its windows count it), but no label, as training's labelled events
    are those with a non-null label."""
    scans = Registry(Path(__file__).resolve().parents[2] / "usecases").get("item_availability")
    label = event_labeler(scans)
    scan = {
        "event_id": "s1",
        "event_time": "2026-11-14T10:00:00+00:00",
        "store_id": 1,
        "product_id": 1000001,
        "shopper_id": 7,
        "found": True,
    }
    found = label(orjson.dumps(scan))
    assert found and found.label == 1.0 and found.key == {"store_id": 1, "product_id": 1000001}
    assert label(orjson.dumps({**scan, "found": None})) == NoLabel(datetime(2026, 11, 14, 10, tzinfo=UTC))


def _request(rid: str, card: int, when: datetime, context: dict[str, Any] | None = None) -> ShadowRecord:
    """A shadow record of one authorization request on `card` (both paths answered)."""
    return ShadowRecord(
        request_id=rid,
        usecase="cards",
        key={"card_id": card},
        request_time=when,
        served_source="batch",
        stage="shadow",
        batch_prediction=0.1,
        batch_miss=False,
        batch_data_age_s=60.0,
        batch_model_version="v1",
        batch_latency_ms=1.0,
        online_prediction=0.2,
        online_feature_ages_s={},
        online_features={},
        online_model_version="v2",
        online_latency_ms=2.0,
        context=context or {},
    )


def test_a_closed_window_without_the_label_event_takes_the_otherwise_label(tmp_path: Path) -> None:
    t0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
    requests = {"r1": (1, t0), "r2": (2, t0 + timedelta(minutes=1)), "r3": (3, t0 + timedelta(days=5))}
    shadow = [_request(rid, card, when) for rid, (card, when) in requests.items()]
    labels = [  # a chargeback on card 1 an hour later; a late one elsewhere moves the label watermark
        LabelRecord(
            usecase="cards", key={"card_id": 1}, event_time=t0 + timedelta(hours=1), label=1.0, source_event_id="c1"
        ),
        LabelRecord(
            usecase="cards", key={"card_id": 9}, event_time=t0 + timedelta(days=6), label=1.0, source_event_id="c9"
        ),
    ]
    for root, table in (
        (tmp_path / "shadow" / "cards" / "date=2026-11-02" / "hour=10", shadow_table(shadow, [0] * 3, [0, 1, 2])),
        (tmp_path / "labels" / "cards" / "date=2026-11-02" / "hour=11", label_table(labels, [0, 0], [0, 1])),
    ):
        root.mkdir(parents=True)
        pq.write_table(table, root / "part-test-0-0-1.parquet")
    rows = load(usecase(), tmp_path / "shadow" / "cards", tmp_path / "labels" / "cards", Window())
    got: dict[int, Any] = {
        card: (label, state)
        for card, label, state in rows.con.execute("SELECT k_card_id, label, label_state FROM s").fetchall()
    }
    assert got[1] == (1.0, "labeled")  # disputed within 3 days
    assert got[2] == (0.0, "labeled")  # 3 days passed without a dispute: not fraud
    assert got[3] == (None, "pending")  # its 3 days are not over yet


def _week_of_cards(tmp_path: Path) -> tuple[datetime, Callable[[], dict[int, Any]]]:
    """Three requests (cards 1, 2, 3 at day 0, 1 and 4) and one chargeback, for card 1 an hour after its request;
    and a function that loads them and gives each card's (label, state), and the watermark under key 0."""
    t0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
    requests = {"r1": (1, t0), "r2": (2, t0 + timedelta(days=1)), "r3": (3, t0 + timedelta(days=4))}
    shadow = [_request(rid, card, when) for rid, (card, when) in requests.items()]
    only = [
        LabelRecord(
            usecase="cards", key={"card_id": 1}, event_time=t0 + timedelta(hours=1), label=1.0, source_event_id="c1"
        )
    ]
    for root, table in (
        (tmp_path / "shadow" / "cards" / "date=2026-11-02" / "hour=10", shadow_table(shadow, [0] * 3, [0, 1, 2])),
        (tmp_path / "labels" / "cards" / "date=2026-11-02" / "hour=11", label_table(only, [0], [0])),
    ):
        root.mkdir(parents=True)
        pq.write_table(table, root / "part-test-0-0-1.parquet")

    def states() -> dict[int, Any]:
        rows = load(usecase(), tmp_path / "shadow" / "cards", tmp_path / "labels" / "cards", Window())
        try:
            found = rows.con.execute("SELECT k_card_id, label, label_state FROM s").fetchall()
            return {card: (label, state) for card, label, state in found} | {0: rows.label_watermark}
        finally:
            rows.con.close()

    return t0, states


def test_a_rare_outcome_closes_windows_as_far_as_the_label_sink_read_the_stream(tmp_path: Path) -> None:
    """One chargeback in a week: with the newest *label* as the watermark every later request stayed pending,
    although the sink had read days of authorizations past their windows. The progress the sink records (the
    newest event it read, labels or not) closes them; a window still open at that progress stays pending."""
    t0, states = _week_of_cards(tmp_path)

    before = states()  # the label at 11:00 is the newest thing known: every 3-day window is still open
    assert [before[card] for card in (1, 2, 3)] == [(None, "pending")] * 3
    # The sink read authorizations up to day 6 (none a chargeback): r2's 3 days are over, r3's are not.
    read = t0 + timedelta(days=6)
    write_progress(tmp_path / "labels" / "cards", "sink-0", read)
    after = states()
    assert after[0] == read
    assert after[1] == (1.0, "labeled")
    assert after[2] == (0.0, "labeled")  # closed at day 4 without a chargeback: not fraud (otherwise 0)
    assert after[3] == (None, "pending")  # closes at day 7, after what was read
    # An older progress never moves the watermark back (a second reader behind the first).
    write_progress(tmp_path / "labels" / "cards", "sink-1", t0 + timedelta(days=2))
    assert states()[0] == read


def test_a_partition_the_sink_read_less_far_than_its_end_holds_the_watermark(tmp_path: Path) -> None:
    """Two partitions of the event topic: the sink read one to day 6 and was at its end, the other only to day 3.5
    with more events behind it. A chargeback for r2 (its window closes at day 4) may still be in that partition:
    r2 stays pending instead of being labeled "not fraud" by `otherwise`. A file of the topic's earlier incarnation
    (recreated since) holds nothing, even though it said behind."""
    t0, states = _week_of_cards(tmp_path)
    labels_root = tmp_path / "labels" / "cards"

    topic = {"topic": "migrate.events.cards"}
    write_progress(labels_root, "old-1", t0 - timedelta(days=9), behind=True, **topic, topic_id="old")
    write_progress(labels_root, "new-0", t0 + timedelta(days=6), behind=False, **topic, topic_id="new")
    write_progress(labels_root, "new-1", t0 + timedelta(days=3, hours=12), behind=True, **topic, topic_id="new")
    held = states()
    assert held[0] == t0 + timedelta(days=3, hours=12)  # not day 6: partition 1 is behind; not day -9: old topic
    assert held[1] == (1.0, "labeled")  # its window closed at day 3, before both partitions' progress
    assert held[2] == (None, "pending")  # closes at day 4: partition 1 may still hold its chargeback
    assert held[3] == (None, "pending")
    # Without the flag (the rule before it), r2 was "not fraud" although its chargeback could still come.
    write_progress(labels_root, "new-1", t0 + timedelta(days=3, hours=12), behind=False, **topic, topic_id="new")
    assert states()[2] == (0.0, "labeled")
    # Partition 1 read on to its end at day 5: r2's window closed without a chargeback, r3's is still open.
    write_progress(labels_root, "new-1", t0 + timedelta(days=5), behind=False, **topic, topic_id="new")
    caught_up = states()
    assert caught_up[0] == t0 + timedelta(days=6)
    assert [caught_up[card] for card in (1, 2, 3)] == [(1.0, "labeled"), (0.0, "labeled"), (None, "pending")]


def test_with_a_request_field_the_comparator_joins_labels_by_the_id_they_name(tmp_path: Path) -> None:
    raw = usecase().model_dump()
    raw["context"] = [{"name": "auth_id", "type": "str"}]
    raw["label"]["from_event"]["request_field"] = "auth_id"
    by_id = UseCase.model_validate(raw)
    t0 = datetime(2026, 11, 2, 10, tzinfo=UTC)

    def request(rid: str, auth: str, minutes: int) -> ShadowRecord:
        return _request(rid, 1, t0 + timedelta(minutes=minutes), context={"auth_id": auth})

    shadow = [request("r1", "a1", 0), request("r2", "a2", 5)]  # two authorizations of one card
    labels = [  # the chargeback names a2 only; a late label elsewhere closes every window
        LabelRecord(
            usecase="cards",
            key={"card_id": 1},
            event_time=t0 + timedelta(hours=5),
            label=1.0,
            source_event_id="c2",
            ref="a2",
        ),
        LabelRecord(
            usecase="cards",
            key={"card_id": 9},
            event_time=t0 + timedelta(days=6),
            label=1.0,
            source_event_id="c9",
            ref="zz",
        ),
    ]
    for root, table in (
        (tmp_path / "shadow" / "cards" / "date=2026-11-02" / "hour=10", shadow_table(shadow, [0, 0], [0, 1])),
        (tmp_path / "labels" / "cards" / "date=2026-11-02" / "hour=15", label_table(labels, [0, 0], [0, 1])),
    ):
        root.mkdir(parents=True)
        pq.write_table(table, root / "part-test-0-0-1.parquet")
    rows = load(by_id, tmp_path / "shadow" / "cards", tmp_path / "labels" / "cards", Window())
    got = dict(rows.con.execute("SELECT request_time, label FROM s ORDER BY request_time").fetchall())
    assert list(got.values()) == [0.0, 1.0]  # by card, both would be 1
    with pytest.raises(ValueError, match="must be a required context value"):
        raw["context"] = []
        UseCase.model_validate(raw)


def test_a_backtest_counts_the_label_events_the_schema_refuses(store: duckdb.DuckDBPyConnection) -> None:
    # The history's chargebacks label what they name; one without its card is refused by the stream's schema (the
    # sink would dead-letter it): no label, and counted instead of skipped in silence.
    store.execute("INSERT INTO card_events VALUES ('c9', '2026-11-03 08:00', NULL, 'chargeback', 20, 'a2')")
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    labels, newest, invalid = history_labels(store, usecase(), start, end)
    assert sorted((label.ref, label.label) for label in labels) == [("a1", 1.0), ("a3", 1.0)]
    assert invalid == 1
    assert newest == datetime(2026, 11, 9, 9, tzinfo=UTC)  # the newest event read, labels or not
