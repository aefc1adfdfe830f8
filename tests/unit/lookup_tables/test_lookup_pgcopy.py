"""The binary COPY encoder, decoded here by hand (struct) and compared with the values it was given."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from lookup_tables._pgcopy import binary_rows

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HOSTILE_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), 1 / 3, 0.1]
HOSTILE_INTS = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1, 1, 2**53 + 1, -(2**31), 2**31]
TIMES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 14, 2, 0, 0, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def decode(data: bytes, formats: list[str]) -> list[tuple[object, ...]]:
    """PostgreSQL's binary COPY format as its documentation states it, one field at a time."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == bytes(8)
    rows, at = [], 19
    while True:
        (count,) = struct.unpack_from(">h", data, at)
        at += 2
        if count == -1:
            assert at == len(data)
            return rows
        row = []
        for fmt in formats[:count]:
            (length,) = struct.unpack_from(">i", data, at)
            assert length == struct.calcsize(fmt)
            row.append(struct.unpack_from(fmt, data, at + 4)[0])
            at += 4 + length
        rows.append(tuple(row))


def test_every_value_comes_back_bit_for_bit_as_postgresql_reads_it() -> None:
    n = max(len(HOSTILE_FLOATS), len(HOSTILE_INTS), len(TIMES))
    keys = [HOSTILE_INTS[i % len(HOSTILE_INTS)] for i in range(n)]
    floats = [HOSTILE_FLOATS[i % len(HOSTILE_FLOATS)] for i in range(n)]
    times = [TIMES[i % len(TIMES)] for i in range(n)]
    batch = pa.table(
        {
            "k": pa.array(keys, pa.int64()),
            "prediction": pa.array(floats, pa.float64()),
            "features_as_of": pa.array(times, pa.timestamp("us", tz="UTC")),
            "chunk": pa.array([7] * n, pa.int32()),
        }
    )
    data = binary_rows(batch)
    assert data is not None
    decoded = decode(data, [">q", ">d", ">q", ">i"])
    assert [row[0] for row in decoded] == keys
    assert [struct.pack(">d", row[1]) for row in decoded] == [struct.pack(">d", f) for f in floats]  # -0.0 too
    # PostgreSQL's timestamptz: µs since 2000-01-01 UTC.
    assert [row[2] for row in decoded] == [(t - PG_EPOCH) // timedelta(microseconds=1) for t in times]
    assert {row[3] for row in decoded} == {7}


def test_an_empty_batch_is_a_header_and_a_trailer() -> None:
    empty = pa.table({"k": pa.array([], pa.int64()), "chunk": pa.array([], pa.int32())})
    assert binary_rows(empty) == b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"


def test_what_it_cannot_encode_exactly_goes_to_csv() -> None:
    ts = pa.timestamp("us", tz="UTC")
    assert binary_rows(pa.table({"store": pa.array(["a"])})) is None  # text keys
    assert binary_rows(pa.table({"prediction": pa.array([0.5, None], pa.float64())})) is None  # NULL prediction
    assert binary_rows(pa.table({"t": pa.array([0], pa.timestamp("us"))})) is None  # naive timestamp
    assert binary_rows(pa.table({"t": pa.array([0], pa.timestamp("ns", tz="UTC"))})) is None  # not µs
    before_postgres = -211_813_488_000_000_000 + 946_684_800_000_000 - 1  # 4714-11-24 BC, less 1 µs
    assert binary_rows(pa.table({"t": pa.array([before_postgres], pa.int64()).cast(ts)})) is None
    assert binary_rows(pa.table({"t": pa.array([before_postgres + 1], pa.int64()).cast(ts)})) is not None
