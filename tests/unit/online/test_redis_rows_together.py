"""The online read's batch records parsed all at once (`_rows_together`) read exactly what the per-record parse
reads: every value and event time checked against the record format's own decoders, record by record, on hostile
values; anything the one-call parse cannot read exactly leaves the call to the per-record parse."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online.features.redis_layout import record
from online.features.redis_store import RedisFeatureStore, _floats_at_once, _rows_together
from online.features.store import BatchRow, decode_time, decode_value, encode_time, encode_value

pytestmark = pytest.mark.unit

ASKED = ("a", "b", "c")
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)

# Values as the store writes them (encode_value of any float) and as it never does: each must read as float() reads
# it, or fail as it fails.
HOSTILE = [b"", b"7", b"-0", b"1.", b".5", b"01.5", b"1e999", b"-1e999", b"1E5", b" 1.0", b"1.0 ", b"1_0", b"+1.0"]
HOSTILE += [b"null", b"true", b"false", b'"x"', b"[1", b"1]", b"{}", b"nan", b"inf", b"-inf", b" ", b"0x10", b"1e5"]
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(lambda v: encode_value(v).encode()))
values = st.one_of(values, st.sampled_from(HOSTILE), st.none().map(lambda _: b""))


def _store() -> RedisFeatureStore:
    return RedisFeatureStore("redis://127.0.0.1:1/0")  # never connected: only the parse is exercised


@st.composite
def raws(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["record", "record", "record", "record", "none", "states", "order", "times"]))
    if kind == "none":
        return b""
    if kind == "states":
        return b"!"
    names = [n.encode() for n in ASKED]
    if kind == "order":
        names = draw(st.permutations(names))
    row = [draw(values) for _ in names]
    base = T0 + timedelta(seconds=draw(st.integers(0, 3)))
    if kind == "times":
        times = [encode_time(base + timedelta(seconds=draw(st.integers(0, 2)))).encode() for _ in names]
    else:
        times = [encode_time(base).encode()] * len(names)
    return record(names, row, times)


def _by_hand(raw: bytes) -> BatchRow | None:
    """The record's features in the asked order, read by the format's decoders (docs/online_features.md)."""
    if len(raw) < 2:
        return None
    head, names, line, *times = raw.split(b"\n")
    stamps = times[0].split(b",") if times else [head.split(b",")[0]] * len(names.split(b","))
    by_name = {
        n.decode(): (decode_value(v), decode_time(t))
        for n, v, t in zip(names.split(b","), line.split(b","), stamps, strict=True)
    }
    found = [by_name.get(name) for name in ASKED]
    return BatchRow([f[0] if f else None for f in found], [f[1] if f else None for f in found])


def _shown(rows: list[BatchRow | None]) -> list[object]:
    # repr tells NaN, -0.0 and an int from a float apart, where == would not.
    return [None if r is None else (repr(r.values), r.times) for r in rows]


@settings(max_examples=400, deadline=None)
@given(st.lists(raws(), min_size=1, max_size=12))
def test_the_online_read_of_any_records_is_what_the_format_says_on_every_call(items: list[bytes]) -> None:
    store = _store()
    try:
        expected: list[object] | None = _shown([_by_hand(raw) for raw in items])
    except ValueError:
        expected = None  # a value or time float()/int() refuse: the read refuses it too
    # Twice: the first call plans each names line (per-record parse), the second may read them all at once.
    for _ in range(2):
        if expected is None:
            with pytest.raises(ValueError):
                store._online_rows("u", items, ASKED)
        else:
            assert _shown(store._online_rows("u", items, ASKED)) == expected


def _planned() -> tuple[RedisFeatureStore, dict[bytes, tuple[int, ...] | None]]:
    store = _store()
    names = [n.encode() for n in ASKED]
    store._online_rows("u", [record(names, [b"1.0"] * 3, [b"1"] * 3)], ASKED)  # plans the materialized names line
    return store, store._plans[ASKED]


def _together(store: RedisFeatureStore, plans: dict[bytes, tuple[int, ...] | None], items: list[bytes]) -> object:
    return _rows_together(items, len(ASKED), plans, store._times, store._time)


def _rec(line: list[bytes], at: datetime = T0, names: tuple[str, ...] = ASKED) -> bytes:
    return record([n.encode() for n in names], line, [encode_time(at).encode()] * len(names))


def test_materialized_records_are_read_all_at_once_with_markers_in_place() -> None:
    store, plans = _planned()
    later = T0 + timedelta(hours=1)
    items = [b"", _rec([b"0.5", b"", b"1e-07"]), b"!", _rec([b"", b"", b""], later), _rec([b"-2.5", b"0.0", b"3.0"])]
    rows = _together(store, plans, items)
    assert rows is not None, "the materialized case must take the one-call parse"
    assert _shown(rows) == _shown([_by_hand(raw) for raw in items])  # type: ignore[arg-type]
    assert rows[1].times == [T0] * 3 and rows[3].times == [later] * 3  # type: ignore[index]


@pytest.mark.parametrize(
    "odd",
    [
        _rec([b"nan", b"1.0", b"2.0"]),  # float() reads nan; JSON does not
        _rec([b"inf", b"1.0", b"2.0"]),
        _rec([b"7", b"1.0", b"2.0"]),  # JSON reads an int, float() 7.0
        _rec([b"null", b"1.0", b"2.0"]),  # JSON reads None, float() refuses it
        _rec([b"true", b"1.0", b"2.0"]),
        _rec([b'"1.0"', b"1.0", b"2.0"]),
        _rec([b"1.", b"1.0", b"2.0"]),  # float() reads it, JSON does not
        _rec([b"1.0", b"2.0"], names=("a", "b")),  # another feature set
        _rec([b"1.0", b"2.0", b"3.0"], names=("b", "a", "c")),  # another order: not planned as the asked one
        record([b"a", b"b", b"c"], [b"1.0"] * 3, [b"1", b"2", b"3"]),  # per-feature event times
        _rec([b"1.0", b"2.0", b"3.0,4.0"]),  # more values than names
        b"?",  # the previous layout: the per-record parse refuses it
    ],
)
def test_any_other_record_leaves_the_call_to_the_per_record_parse(odd: bytes) -> None:
    store, plans = _planned()
    assert _together(store, plans, [_rec([b"1.0", b"2.0", b"3.0"]), odd]) is None


def test_records_whose_value_counts_only_add_up_together_are_not_read_all_at_once() -> None:
    # 4 values and 2 under 3 names: 6 in all, as two good records would hold, but each record's own count is wrong.
    store, plans = _planned()
    four, two = _rec([b"1.0", b"2.0", b"3.0,4.0"]), _rec([b"5.0", b"6.0", b""]).replace(b"5.0,6.0,", b"5.0,6.0")
    assert two.endswith(b"\n5.0,6.0")
    assert _together(store, plans, [four, two]) is None
    assert [len(r.values) for r in store._online_rows("u", [four, two], ASKED) if r] == [4, 2]  # as it read before


decimals = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole.lstrip('0') or '0'}.{fraction}{exponent}".encode(),
    st.sampled_from(["", "-"]),
    st.text("0123456789", min_size=1, max_size=40),
    st.text("0123456789", min_size=1, max_size=40),
    st.one_of(
        st.just(""), st.integers(-340, 340).map(lambda e: f"e{e}"), st.integers(-340, 340).map(lambda e: f"E{e:+d}")
    ),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(decimals, min_size=1, max_size=5))
def test_a_json_number_reads_as_the_float_that_float_reads_bit_for_bit(texts: list[bytes]) -> None:
    # Long mantissas, subnormals, overflow: one call parses them as float() does one by one, or declines.
    parsed = _floats_at_once(b",".join(texts), len(texts))
    if parsed is not None:
        assert [struct.pack("<d", v) for v in parsed] == [struct.pack("<d", float(t)) for t in texts]
