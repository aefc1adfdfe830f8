"""The feature store's contract, run against the machine's Redis and the embedded one alike."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
import pytest
import redis

from migrate.devservices.redis_server import RedisServer
from migrate.errors import CorrectionRejectedError, FeatureStoreError, FeatureStoreUnavailableError
from migrate.realtime_schema import ENTITY_GROUP
from online.features import redis_store
from online.features.redis_layout import batch_key, state_key
from online.features.redis_store import RedisFeatureStore
from online.features.store import FeatureValue

pytestmark = pytest.mark.integration

KEYS = ["store_id", "product_id"]
FEATURES = ["a", "b", "c"]
T1 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1)


def _table(n: int, when: datetime, offset: float = 0.0, **columns: object) -> pa.Table:
    data: dict[str, object] = {
        "store_id": list(range(n)),
        "product_id": [100 + i for i in range(n)],
        "a": [i / 7 + offset for i in range(n)],
        "b": [None if i % 3 == 0 else float(i) + offset for i in range(n)],
        "c": [math.nan if i % 4 == 0 else -i - offset for i in range(n)],
        "ts": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
    }
    data.update(columns)
    return pa.table(data)


def _same(left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return left is right
    return (math.isnan(left) and math.isnan(right)) or left == right


def test_round_trip_keeps_values_nan_none_and_event_times(feature_store: RedisFeatureStore, fs_namespace: str) -> None:
    t_c = T1 + timedelta(hours=3, microseconds=17)
    rows = _table(6, T1).append_column("ts_c", pa.array([t_c] * 6, pa.timestamp("us", tz="UTC")))
    report = feature_store.write_features(fs_namespace, KEYS, rows, FEATURES, {"a": "ts", "b": "ts", "c": "ts_c"})
    assert (report.entities, report.written, report.unchanged, report.rejected) == (6, 18, 0, 0)

    keys = [(5, 105), (999, 1), (0, 100), (2, 102)]
    found = feature_store.read(fs_namespace, keys, ["c", "a", "b", "never_written"])
    assert found[1] is None  # unknown entity
    for key, values in zip(keys, found, strict=True):
        if values is None:
            continue
        i = key[0]
        assert list(values) == ["c", "a", "b"]  # requested order; the unknown feature is absent
        assert values["a"] == FeatureValue(i / 7, T1)
        assert values["b"].value == (None if i % 3 == 0 else float(i))
        assert _same(values["c"].value, math.nan if i % 4 == 0 else -i)
        assert values["c"].event_time == t_c
        assert values["a"].event_time.tzinfo is not None
    assert feature_store.read(fs_namespace, [], FEATURES) == []
    assert feature_store.read(fs_namespace, [(0, 100)], ["never_written"]) == [{}]  # entity known, feature not


def test_the_online_read_holds_the_features_read_holds_in_the_asked_order(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    # Entities 0-5 share one event time (a three-line record), 10-15 have one of their own for c (four lines),
    # 20-25 were written with c and a only, in that order (a record in another order, lacking b).
    t_c = T1 + timedelta(hours=3, microseconds=17)
    shared = _table(6, T1)
    own = _table(6, T1, store_id=list(range(10, 16)), product_id=list(range(110, 116))).append_column(
        "ts_c", pa.array([t_c] * 6, pa.timestamp("us", tz="UTC"))
    )
    feature_store.write_features(fs_namespace, KEYS, shared, FEATURES, "ts")
    feature_store.write_features(fs_namespace, KEYS, own, FEATURES, {"a": "ts", "b": "ts", "c": "ts_c"})
    other = _table(6, T2, store_id=list(range(20, 26)), product_id=list(range(120, 126)))
    feature_store.write_features(fs_namespace, KEYS, other, ["c", "a"], "ts")
    # An entity the stream alone wrote: window states, no batch record.
    feature_store.client.hset(f"mig:{fs_namespace}:30:130", mapping={"_": "1", "w:0": "[1.0, [], []]"})
    keys = [(i, 100 + i) for i in (*range(6), *range(10, 16), *range(20, 26), 30)] + [(99, 1)]
    # By hand, from the tables written: each entity's stored features with their event times.
    written: dict[tuple[int, int], dict[str, tuple[Any, datetime]]] = {}
    for table, names, stamps in (
        (shared, FEATURES, {"a": T1, "b": T1, "c": T1}),
        (own, FEATURES, {"a": T1, "b": T1, "c": t_c}),
        (other, ["c", "a"], {"c": T2, "a": T2}),
    ):
        for record in table.to_pylist():
            written[(record["store_id"], record["product_id"])] = {n: (record[n], stamps[n]) for n in names}
    for asked in (FEATURES, ["c", "a", "b"], ["b"], ["c", "never_written", "a"], ["c", "a"], []):
        online = feature_store.read_online(fs_namespace, keys, asked, {}, 1)
        stored = feature_store.read(fs_namespace, keys, asked)
        assert len(online.features) == len(stored) == len(keys)
        assert online.features[-2] is None and online.features[-1] is None  # window states only; nothing stored
        assert stored[-2] == {} and stored[-1] is None  # read() tells the two apart
        assert sum(row is not None for row in online.features) == 18  # every written entity has a batch row
        for key, row, by_name in zip(keys[:-2], online.features, stored, strict=False):
            held = written[key]
            assert row is not None and by_name is not None, key
            assert row.times == [held[n][1] if n in held else None for n in asked], (key, asked)
            expected = [held[n][0] if n in held else None for n in asked]
            assert all(_same(m, t) for m, t in zip(row.values, expected, strict=True)), (key, asked, row, expected)
            assert list(by_name) == [n for n in asked if n in held], (key, asked)  # asked order, absent left out
            for name, found in by_name.items():
                assert found.event_time == held[name][1] and _same(found.value, held[name][0]), (key, name)
    # Two rows spelled out: entity 12's c has its own time; entity 21's record lacks b.
    row = feature_store.read_online(fs_namespace, [(12, 112), (21, 121)], ["c", "b", "a"], {}, 1).features
    assert row[0] is not None and row[0].times == [t_c, T1, T1] and row[0].values == [-2.0, 2.0, 2 / 7]
    assert row[1] is not None and row[1].times == [T2, None, T2] and row[1].values == [-1.0, None, 1 / 7]


def test_a_materialized_read_parsed_all_at_once_holds_the_tables_written(
    feature_store: RedisFeatureStore, fs_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a nightly materialization writes: each entity's features at one event time, b missing on every third
    # (an empty value), no NaN. Once the read has seen the records' names line it parses them in one call
    # (`_rows_together`); both reads must hold the tables written, read here by hand.
    first = _table(
        6, T1, store_id=list(range(40, 46)), product_id=list(range(140, 146)), c=[-i - 0.5 for i in range(6)]
    )
    second = _table(3, T2, 1.0, store_id=[50, 51, 52], product_id=[150, 151, 152], c=[1e-07, 2.5e300, -0.0])
    feature_store.write_features(fs_namespace, KEYS, first, FEATURES, "ts")
    feature_store.write_features(fs_namespace, KEYS, second, FEATURES, "ts")
    feature_store.client.hset(f"mig:{fs_namespace}:30:130", mapping={"_": "1", "w:0": "[1.0, [], []]"})
    written = {
        (r["store_id"], r["product_id"]): ([r[n] for n in FEATURES], when)
        for table, when in ((first, T1), (second, T2))
        for r in table.to_pylist()
    }
    keys = [(99, 1), *[(40 + i, 140 + i) for i in range(6)], (30, 130), (50, 150), (51, 151), (52, 152)]
    together: list[bool] = []
    parse = redis_store._rows_together

    def spied(*args: Any) -> Any:
        rows = parse(*args)
        together.append(rows is not None)
        return rows

    monkeypatch.setattr(redis_store, "_rows_together", spied)
    for _ in range(2):
        rows = feature_store.read_online(fs_namespace, keys, FEATURES, {}, 1).features
        assert rows[0] is None and rows[7] is None  # nothing stored; window states only
        for key, row in zip(keys, rows, strict=True):
            if key not in written:
                continue
            values, when = written[key]
            assert row is not None and row.times == [when] * 3, key
            assert all(_same(m, t) for m, t in zip(row.values, values, strict=True)), (key, row, values)
            assert all(v is None or type(v) is float for v in row.values), row  # never an int
    assert together == [False, True]  # the first read planned the names line; the second parsed all at once


class _Counter:
    """Counts what the client sends and reads on its sockets."""

    def __init__(self) -> None:
        self.sends = 0
        self.reads = 0


@pytest.fixture
def wire_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counter]:
    counter = _Counter()
    send = redis.connection.AbstractConnection.send_packed_command
    read = redis.connection.AbstractConnection.read_response

    def counting_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.sends += 1
        return send(self, *args, **kwargs)

    def counting_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.reads += 1
        return read(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", counting_read)
    yield counter


def _commandstats(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items()}


def test_reading_n_entities_is_one_round_trip(
    feature_store: RedisFeatureStore, fs_namespace: str, fs_url: str, wire_counter: _Counter
) -> None:
    feature_store.write_features(fs_namespace, KEYS, _table(60, T1), FEATURES, "ts")
    keys = [(i, 100 + i) for i in range(50)]
    feature_store.read(fs_namespace, keys[:1], FEATURES)  # connect (and load the script) before counting
    observer = redis.Redis.from_url(fs_url, socket_timeout=5)
    before = _commandstats(observer)
    wire_counter.sends = wire_counter.reads = 0
    found = feature_store.read(fs_namespace, keys, FEATURES)
    assert (wire_counter.sends, wire_counter.reads) == (1, 1)  # one request written, one reply read
    after = _commandstats(observer)
    observer.close()
    assert all(values is not None and len(values) == 3 for values in found)
    # The server saw one call, which did one GET per entity (each has a record, so no HMGET of its hash). On the
    # machine's shared Redis other clients may run commands meanwhile, so there the server-side counts are lower
    # bounds; the embedded server is ours alone.
    evalsha = after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0)
    get = after.get("cmdstat_get", 0) - before.get("cmdstat_get", 0)
    hmget = after.get("cmdstat_hmget", 0) - before.get("cmdstat_hmget", 0)
    if fs_url.startswith("unix://"):
        assert (evalsha, get, hmget) == (1, 50, 0)
    else:
        assert evalsha >= 1
        assert get >= 50


def test_writing_the_same_window_again_changes_nothing(feature_store: RedisFeatureStore, fs_namespace: str) -> None:
    rows = _table(250, T1)  # more than one script call per round trip
    first = feature_store.write_features(fs_namespace, KEYS, rows, FEATURES, "ts")
    raw_before = feature_store.client.get(batch_key(fs_namespace, (3, 103)))
    again = feature_store.write_features(fs_namespace, KEYS, rows, FEATURES, "ts")
    assert (first.written, first.unchanged) == (750, 0)
    assert (again.entities, again.written, again.unchanged, again.stale, again.corrected, again.rejected) == (
        250,
        0,
        750,
        0,
        0,
        0,
    )
    assert raw_before is not None
    assert feature_store.client.get(batch_key(fs_namespace, (3, 103))) == raw_before


def test_a_correction_is_rejected_loudly_and_the_rest_is_written(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    feature_store.write_features(fs_namespace, KEYS, _table(10, T1), FEATURES, "ts")
    # Same event time: rows 0-2 change "a" (corrections); rows 3-9 carry the same values. New rows 10-11 too.
    changed = _table(12, T1)
    a = [i / 7 + (1.0 if i < 3 else 0.0) for i in range(12)]
    changed = changed.set_column(changed.schema.get_field_index("a"), "a", pa.array(a))

    with pytest.raises(CorrectionRejectedError) as caught:
        feature_store.write_features(fs_namespace, KEYS, changed, FEATURES, "ts", on_correction="reject")
    error = caught.value
    assert error.count == 3
    assert error.examples == ["(0, 100)/a", "(1, 101)/a", "(2, 102)/a"]
    assert "3 corrections" in str(error) and "on_correction='apply'" in str(error)
    report = error.report
    assert report is not None
    assert (report.rejected, report.written, report.unchanged) == (3, 6, 33 - 6)  # type: ignore[attr-defined]
    examples = report.rejected_examples  # type: ignore[attr-defined]
    assert (examples[0].stored, examples[0].incoming, examples[0].event_time) == (0.0, 1.0, T1)

    found = feature_store.read(fs_namespace, [(0, 100), (1, 101), (4, 104), (11, 111)], ["a"])
    assert [f["a"].value if f else None for f in found] == [0.0, 1 / 7, 4 / 7, 11 / 7]  # unapplied; rest written

    applied = feature_store.write_features(fs_namespace, KEYS, changed, FEATURES, "ts", on_correction="apply")
    assert (applied.corrected, applied.rejected, applied.written) == (3, 0, 0)
    found = feature_store.read(fs_namespace, [(0, 100), (1, 101)], ["a"])
    assert [f["a"] if f else None for f in found] == [FeatureValue(1.0, T1), FeatureValue(1 / 7 + 1.0, T1)]


def test_none_to_value_at_the_same_time_is_a_correction_too(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    rows = _table(1, T1)  # row 0: b is None, c is NaN
    feature_store.write_features(fs_namespace, KEYS, rows, FEATURES, "ts")
    filled = _table(1, T1, b=[2.5], c=[math.nan])
    with pytest.raises(CorrectionRejectedError) as caught:
        feature_store.write_features(fs_namespace, KEYS, filled, FEATURES, "ts")
    assert caught.value.examples == ["(0, 100)/b"]  # NaN stored, NaN incoming: unchanged, not a correction


def test_an_older_write_is_skipped_as_stale(feature_store: RedisFeatureStore, fs_namespace: str) -> None:
    feature_store.write_features(fs_namespace, KEYS, _table(5, T2, offset=10.0), FEATURES, "ts")
    older = feature_store.write_features(fs_namespace, KEYS, _table(5, T1), FEATURES, "ts")
    assert (older.stale, older.written, older.unchanged, older.rejected) == (15, 0, 0, 0)
    found = feature_store.read(fs_namespace, [(1, 101)], ["a", "b"])
    assert found == [{"a": FeatureValue(1 / 7 + 10.0, T2), "b": FeatureValue(11.0, T2)}]
    newer = feature_store.write_features(fs_namespace, KEYS, _table(5, T2 + timedelta(seconds=1)), FEATURES, "ts")
    assert newer.written == 15


def _dead_store(tmp_path: Path, make_url: Callable[[RedisServer], str]) -> tuple[RedisFeatureStore, str]:
    server = RedisServer(tmp_path / "redis").start()
    url = make_url(server)
    store = RedisFeatureStore(url, read_timeout_s=0.5, connect_timeout_s=0.5, retries=1)
    store.write_features("dead", KEYS, _table(2, T1), FEATURES, "ts")
    assert store.read("dead", [(0, 100)], ["a"]) == [{"a": FeatureValue(0.0, T1)}]
    server.stop()
    return store, url


def test_a_stopped_server_raises_unavailable_naming_the_url(tmp_path: Path) -> None:
    store, url = _dead_store(tmp_path, lambda server: server.url)
    with pytest.raises(FeatureStoreUnavailableError) as caught:
        store.read("dead", [(0, 100)], ["a"])
    assert url in str(caught.value) and "MIGRATE_REDIS_URL" in str(caught.value.fix)
    with pytest.raises(FeatureStoreUnavailableError):
        store.ping()
    with pytest.raises(FeatureStoreUnavailableError):
        store.write_features("dead", KEYS, _table(2, T1), FEATURES, "ts")
    store.close()


def test_unavailable_error_masks_the_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", tcp=True).start()
    port = server.port
    server.stop()
    store = RedisFeatureStore(f"redis://:s3cret@127.0.0.1:{port}/0", connect_timeout_s=0.5, retries=0)
    with pytest.raises(FeatureStoreUnavailableError) as caught:
        store.read("dead", [(0, 100)], ["a"])
    assert "s3cret" not in str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)
    assert store.url == f"redis://:***@127.0.0.1:{port}/0"
    store.close()


def test_a_write_of_several_round_trips_counts_every_entity_and_finds_a_late_correction(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    n = 9_123  # three round trips of 4,000 entities, the last one short, its last script call short too
    first = feature_store.write_features(fs_namespace, KEYS, _table(n, T1), FEATURES, "ts")
    assert (first.entities, first.written, first.unchanged) == (n, 3 * n, 0)
    changed = _table(n, T1)
    a = changed.column("a").to_pylist()
    a[n - 2] += 1.0  # in the last script call of the last round trip
    changed = changed.set_column(changed.schema.get_field_index("a"), "a", pa.array(a))
    with pytest.raises(CorrectionRejectedError) as caught:
        feature_store.write_features(fs_namespace, KEYS, changed, FEATURES, "ts")
    report = caught.value.report
    assert (report.entities, report.unchanged, report.rejected) == (n, 3 * n - 1, 1)
    assert [(r.key, r.feature, r.stored, r.incoming) for r in report.rejected_examples] == [
        ((n - 2, 100 + n - 2), "a", (n - 2) / 7, (n - 2) / 7 + 1.0)
    ]
    found = feature_store.read(fs_namespace, [(0, 100), (n - 1, 100 + n - 1)], ["a"])
    assert [v["a"].value for v in found if v is not None] == [0.0, (n - 1) / 7]


def test_a_server_that_lost_the_write_script_is_given_it_again(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    feature_store.write_features(fs_namespace, KEYS, _table(10, T1), FEATURES, "ts")
    feature_store.client.script_flush()  # as after a restart: the script cache is empty
    report = feature_store.write_features(fs_namespace, KEYS, _table(250, T2), FEATURES, "ts")
    assert (report.entities, report.written, report.stale, report.rejected) == (250, 750, 0, 0)
    found = feature_store.read(fs_namespace, [(249, 349)], ["a"])[0]
    assert found is not None and found["a"] == FeatureValue(249 / 7, T2)


def test_a_key_column_neither_int_nor_str_fails_with_the_fix(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    rows = _table(3, T1, store_id=[0.5, 1.5, 2.5])
    with pytest.raises(FeatureStoreError, match="neither int nor str") as caught:
        feature_store.write_features(fs_namespace, KEYS, rows, FEATURES, "ts")
    assert "cast the key columns" in caught.value.fix


def test_a_record_another_writer_changed_meanwhile_is_read_and_decided_again(
    feature_store: RedisFeatureStore, fs_namespace: str, fs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A correction is decided on this side and written by compare and set. Between the script and the CAS,
    # another writer stores newer features: the CAS must not overwrite them; read again, the correction is stale.
    feature_store.write_features(fs_namespace, KEYS, _table(3, T1), FEATURES, "ts")
    original = RedisFeatureStore._compare_and_set
    calls: list[int] = []

    def racing(self: RedisFeatureStore, writer: Any, writes: Any) -> list[bool]:
        if not calls:  # the first CAS: another writer gets in first
            with RedisFeatureStore(fs_url, read_timeout_s=2.0) as other:
                other.write_features(fs_namespace, KEYS, _table(3, T2, offset=5.0), FEATURES, "ts")
        calls.append(len(writes))
        return original(self, writer, writes)

    monkeypatch.setattr(RedisFeatureStore, "_compare_and_set", racing)
    report = feature_store.write_features(
        fs_namespace, KEYS, _table(3, T1, offset=1.0), FEATURES, "ts", on_correction="apply"
    )
    assert len(calls) == 2  # the first CAS lost to the other writer, the second had nothing left to write
    # Decided again against the other writer's T2 record: every feature stored is newer, nothing is written.
    assert (report.entities, report.written, report.corrected, report.stale) == (3, 0, 0, 9)
    found = feature_store.read(fs_namespace, [(1, 101)], FEATURES)[0]
    assert found is not None and found["a"] == FeatureValue(1 / 7 + 5.0, T2)


def test_a_store_in_the_previous_layout_is_refused_with_the_fix(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    # Batch features written by 0.x: fields of the entity hash, no record. Serving them as "no batch features"
    # would score every entity on NaNs; the read says what to do instead.
    feature_store.client.hset(
        f"mig:{fs_namespace}:1:101", mapping={"_": "1", "v:a": "0.5", "t:a": "1772330400000000", "w:0": "[]"}
    )
    with pytest.raises(FeatureStoreError, match="materialize them again") as caught:
        feature_store.read(fs_namespace, [(1, 101)], FEATURES)
    assert f"migrate materialize {fs_namespace}" in caught.value.fix
    with pytest.raises(FeatureStoreError, match=r"layout of migrate 0\.x"):
        feature_store.read_online(fs_namespace, [(1, 101)], FEATURES, {"entity": [(1, 101)]}, 1)
    # An entity the stream wrote (window states, no batch feature yet) is an entity without batch features.
    feature_store.client.hset(f"mig:{fs_namespace}:2:102", mapping={"_": "1", "w:0": "[1.0, [], []]"})
    assert feature_store.read(fs_namespace, [(2, 102), (3, 103)], FEATURES) == [{}, None]


def test_a_feature_name_a_record_cannot_hold_is_refused_by_name(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    rows = _table(2, T1).rename_columns(["store_id", "product_id", "a,b", "b", "c", "ts"])
    with pytest.raises(FeatureStoreError, match=r"\['a,b'\]"):
        feature_store.write_features(fs_namespace, KEYS, rows, ["a,b", "b"], "ts")


def test_upgrading_a_store_of_the_previous_layout_keeps_every_feature_and_its_time(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    # 0.x stored fields of the entity hash; materialization first moves them into records, so nothing stored is
    # lost and the next write is decided against them (here: the same values at the same time are unchanged).
    t_a, t_b = "1772330400000000", "1772330400000017"
    client = feature_store.client
    client.hset(f"mig:{fs_namespace}:1:101", mapping={"_": "1", "v:a": "0.5", "t:a": t_a, "v:b": "", "t:b": t_b})
    client.hset(f"mig:{fs_namespace}:2:102", mapping={"_": "1", "v:a": "nan", "t:a": t_a, "w:0": "[1.0, [], []]"})
    client.hset(f"mig:{fs_namespace}:3:103", mapping={"_": "1", "w:0": "[2.0, [], []]"})  # the stream's only
    assert feature_store.upgrade_layout(fs_namespace) == 2
    found = feature_store.read(fs_namespace, [(1, 101), (2, 102), (3, 103)], ["a", "b"])
    assert found[0] == {
        "a": FeatureValue(0.5, datetime(2026, 3, 1, 2, 0, tzinfo=UTC)),
        "b": FeatureValue(None, datetime(2026, 3, 1, 2, 0, 0, 17, tzinfo=UTC)),
    }
    assert found[1] is not None and math.isnan(found[1]["a"].value or 0.0) and found[2] == {}
    assert not client.exists(f"mig:{fs_namespace}:1:101")  # only its marker was left
    assert client.hgetall(f"mig:{fs_namespace}:2:102") == {b"_": b"1", b"w:0": b"[1.0, [], []]"}
    # The record is canonical: times that differ get their own line, the header holds their range.
    lines = client.get(f"mig:{fs_namespace}#b:1:101").split(b"\n")
    assert lines[0] == f"{t_a},{t_b}".encode() and len(lines) == 4
    # Once per use case: a hash of the old layout written afterwards is not looked for again.
    client.hset(f"mig:{fs_namespace}:4:104", mapping={"_": "1", "v:a": "0.5", "t:a": t_a})
    assert feature_store.upgrade_layout(fs_namespace) == 0
    # Writing the same features again after the upgrade: unchanged, decided against the moved values.
    rows = pa.table(
        {
            "store_id": [1],
            "product_id": [101],
            "a": [0.5],
            "b": pa.array([None], pa.float64()),
            "ta": pa.array([datetime(2026, 3, 1, 2, 0, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "tb": pa.array([datetime(2026, 3, 1, 2, 0, 0, 17, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        }
    )
    report = feature_store.write_features(fs_namespace, KEYS, rows, ["a", "b"], {"a": "ta", "b": "tb"})
    assert (report.written, report.unchanged) == (0, 2)


def test_each_reading_thread_reads_on_a_connection_of_its_own_until_it_ends(fs_embedded_redis: RedisServer) -> None:
    """The reads skip the shared pool (a lock and a socket poll per command): one connection per reading thread,
    each giving the same answers, closed when its thread ends (threads of a pool come and go), the rest with the
    store."""
    url = fs_embedded_redis.url  # ours alone: every connection the server counts is this test's
    observer = redis.Redis.from_url(url, socket_timeout=5)

    def connections() -> int:
        return len(observer.client_list()) - 1  # the observer's own

    def settles_at(count: int) -> bool:  # the server drops a closed client on its next event loop turn
        deadline = time.monotonic() + 5
        while connections() != count and time.monotonic() < deadline:
            time.sleep(0.01)
        return connections() == count

    before = connections()
    store = RedisFeatureStore(url, read_timeout_s=2.0)
    store.write_features("threads", KEYS, _table(6, T1), FEATURES, "ts")
    keys = [(i, 100 + i) for i in range(6)]
    expected = store.read("threads", keys, FEATURES)
    opened = connections()  # the pool's (writes) and the main thread's own
    start, done, release = threading.Barrier(3), threading.Barrier(4), threading.Event()
    answers: list[Any] = []

    def reader() -> None:
        start.wait(5)
        answers.extend(store.read("threads", keys, FEATURES) for _ in range(5))
        done.wait(5)
        release.wait(10)  # alive until the test has counted the connections

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    done.wait(10)
    assert [repr(answer) for answer in answers] == [repr(expected)] * 15  # repr: NaN equals itself
    assert connections() == opened + 3
    release.set()
    for thread in threads:
        thread.join(10)
    assert settles_at(opened)  # each ended thread's connection closed with it
    another = threading.Thread(target=lambda: answers.append(store.read("threads", keys, FEATURES)))
    another.start()
    another.join(10)
    assert repr(answers[-1]) == repr(expected)
    assert settles_at(opened)
    store.close()
    assert settles_at(before)
    observer.close()


# -- the read on the serving worker's event loop -------------------------------------------------------------------


def _states(feature_store: RedisFeatureStore, usecase: str) -> dict[str, list[Any]]:
    """Window states as the stream writes them (one field per partition): the entities' own and a store group's."""
    own: list[Any] = [[T2.timestamp(), [], [[1, [1.0, 2.0]]]], [T1.timestamp(), [T1.timestamp()], []]]
    store: list[Any] = [[T2.timestamp() - 5.0, [], [[3, [0.5, None]]]]]
    for redis_key, partials in (
        (state_key(usecase, ENTITY_GROUP, (0, 100)), own),
        (state_key(usecase, "store", (7,)), store),
    ):
        fields: dict[str | bytes, bytes] = {f"w:{p}": orjson.dumps(state) for p, state in enumerate(partials)}
        feature_store.client.hset(redis_key, mapping=cast(Any, fields))
    return {"own": own, "store": store}


def test_the_read_awaited_on_the_loop_answers_what_the_blocking_read_answers(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    """Batch features, the entities' own window states and a group's, keys with nothing stored: value for value."""
    feature_store.write_features(fs_namespace, KEYS, _table(5, T1), FEATURES, "ts")
    written = _states(feature_store, fs_namespace)
    keys: list[tuple[int | str, ...]] = [(0, 100), (3, 103), (99, 199), (1, 101)]
    groups: dict[str, list[tuple[int | str, ...] | None]] = {
        ENTITY_GROUP: list(keys),
        "store": [(7,), None, (7,), (8,)],
    }
    blocking = feature_store.read_online(fs_namespace, keys, ["c", "a"], groups, 2)

    async def awaited() -> Any:
        await feature_store.aopen()
        try:
            return await feature_store.read_online_async(fs_namespace, keys, ["c", "a"], groups, 2)
        finally:
            await feature_store.aclose()

    on_loop = asyncio.run(awaited())
    assert on_loop.states == blocking.states
    assert on_loop.states[ENTITY_GROUP][0] == written["own"] and on_loop.states["store"][0] == written["store"]
    assert on_loop.states["store"][1:] == [[], written["store"], []]
    assert [row is None for row in on_loop.features] == [False, False, True, False]
    for mine, theirs in zip(on_loop.features, blocking.features, strict=True):
        assert (mine is None and theirs is None) or (
            mine is not None
            and theirs is not None
            and mine.times == theirs.times
            and all(_same(a, b) for a, b in zip(mine.values, theirs.values, strict=True))
        )
    first = on_loop.features[0]
    assert first is not None and _same(first.values[0], math.nan) and first.values[1] == 0.0  # c: NaN at row 0


def test_the_loop_read_goes_through_the_loops_own_client_and_a_thread_elsewhere(
    feature_store: RedisFeatureStore, fs_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened on one loop, the read awaits Redis there (no thread); on a loop it was not opened on (or never
    opened), it runs the blocking read on a thread, whose answer is the same."""
    feature_store.write_features(fs_namespace, KEYS, _table(2, T1), FEATURES, "ts")
    threads: list[str] = []
    blocking_read = feature_store.read_online

    def spied(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return blocking_read(*args)

    monkeypatch.setattr(feature_store, "read_online", spied)

    async def read() -> Any:
        return await feature_store.read_online_async(fs_namespace, [(1, 101)], ["a"], {}, 1)

    async def opened_then_read() -> tuple[Any, Any]:
        await feature_store.aopen()
        try:
            return await read(), feature_store._async
        finally:
            await feature_store.aclose()

    never_opened = asyncio.run(read())
    assert len(threads) == 1 and threads[0] != threading.current_thread().name
    on_loop, opened = asyncio.run(opened_then_read())
    assert len(threads) == 1  # the loop's own client answered: no blocking read, no thread
    assert opened is not None and feature_store._async is None  # closed with the loop's shutdown
    assert on_loop.features == never_opened.features
    assert on_loop.features[0] is not None and on_loop.features[0].values == [1 / 7]


def test_a_stopped_server_raises_unavailable_on_the_loop_too(tmp_path: Path) -> None:
    store, url = _dead_store(tmp_path, lambda server: server.url)

    async def read() -> None:
        await store.aopen()
        try:
            await store.read_online_async("dead", [(0, 100)], ["a"], {}, 1)
        finally:
            await store.aclose()

    with pytest.raises(FeatureStoreUnavailableError) as caught:
        asyncio.run(read())
    assert url in str(caught.value) and "MIGRATE_REDIS_URL" in str(caught.value.fix)
    store.close()


def test_a_server_that_lost_the_read_script_is_given_it_again_on_the_loop(
    feature_store: RedisFeatureStore, fs_namespace: str
) -> None:
    feature_store.write_features(fs_namespace, KEYS, _table(3, T1), FEATURES, "ts")
    feature_store.client.script_flush()  # as after a restart: the script cache is empty

    async def read() -> Any:
        await feature_store.aopen()
        try:
            return await feature_store.read_online_async(fs_namespace, [(2, 102)], ["a"], {}, 1)
        finally:
            await feature_store.aclose()

    row = asyncio.run(read()).features[0]
    assert row is not None and row.values == [2 / 7] and row.times == [T1]


def test_a_read_timed_out_on_the_loop_leaves_no_late_answer_for_the_next(tmp_path: Path) -> None:
    """A stopped server (SIGSTOP: the socket accepts, nothing answers) times the read out; the late answer to it
    must never be taken as the answer to the next read once the server answers again (the connection goes)."""
    server = RedisServer(tmp_path / "redis").start()
    store = RedisFeatureStore(server.url, read_timeout_s=0.2, connect_timeout_s=0.5, retries=0)
    store.write_features("late", KEYS, _table(3, T1), FEATURES, "ts")
    assert server.pid is not None

    async def stop_read_resume_read() -> tuple[BaseException | None, Any]:
        await store.aopen()
        try:
            await store.read_online_async("late", [(0, 100)], ["a"], {}, 1)  # the connection is open
            os.kill(server.pid, signal.SIGSTOP)
            try:
                timed_out: BaseException | None = None
                try:
                    await store.read_online_async("late", [(1, 101)], ["a"], {}, 1)
                except FeatureStoreUnavailableError as exc:
                    timed_out = exc
            finally:
                os.kill(server.pid, signal.SIGCONT)
            return timed_out, await store.read_online_async("late", [(2, 102)], ["a"], {}, 1)
        finally:
            await store.aclose()

    try:
        timed_out, after = asyncio.run(stop_read_resume_read())
    finally:
        store.close()
        server.stop()
    assert isinstance(timed_out, FeatureStoreUnavailableError) and "did not answer" in str(timed_out)
    row = after.features[0]
    assert row is not None and row.values == [2 / 7]  # entity (2, 102)'s own value, not (1, 101)'s late one


def test_the_loops_client_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    """A restarted Redis closed the loop's connection: the next read after it fails over to a new connection (the
    client's retry) instead of failing every read from then on."""
    servers = [RedisServer(tmp_path / "redis").start()]
    store = RedisFeatureStore(servers[0].url, read_timeout_s=1.0, connect_timeout_s=1.0, retries=1)

    async def read(key: tuple[int | str, ...]) -> Any:
        return (await store.read_online_async("restart", [key], ["a"], {}, 1)).features[0]

    async def restart_between_reads() -> tuple[Any, Any]:
        await store.aopen()
        try:
            before = await read((0, 100))
            servers[0].stop()
            servers.append(RedisServer(tmp_path / "redis").start())  # the same socket path, an empty server
            store.write_features("restart", KEYS, _table(2, T2), FEATURES, "ts")
            return before, await read((1, 101))
        finally:
            await store.aclose()

    store.write_features("restart", KEYS, _table(2, T1), FEATURES, "ts")
    try:
        before, after = asyncio.run(restart_between_reads())
    finally:
        store.close()
        for server in servers:
            server.stop()
    assert before is not None and before.values == [0.0] and before.times == [T1]
    assert after is not None and after.values == [1 / 7] and after.times == [T2]
