"""A normalised chunk as PostgreSQL's binary ``COPY`` stream, built whole by NumPy (no per-row Python).

Binary COPY sends each value as its big-endian bytes: the server copies them into the row instead of parsing
text (float8in and timestamptz_in were most of the CSV load's server time), and a float travels bit for bit.
Every column here is fixed-width, so a row is one record of a NumPy structured dtype: field count, then per
column its length (-1 would be NULL) and its bytes. A chunk this cannot encode exactly (text keys, a NULL
prediction, a timestamp before PostgreSQL's range) returns None and goes through CSV as before.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["binary_rows"]

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # flags, header extension length
_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970: PostgreSQL's timestamp zero
# PostgreSQL's first timestamp (4714-11-24 BC, MIN_TIMESTAMP) in µs since 1970. Its last (294277 AD) lies past
# int64 in those units, so every later Arrow value fits, and the shift by _PG_EPOCH_US cannot overflow.
_PG_MIN_UNIX_US = -211_813_488_000_000_000 + _PG_EPOCH_US
_TYPES = {pa.int64(): (">i8", 8), pa.int32(): (">i4", 4), pa.float64(): (">f8", 8)}


def binary_rows(batch: pa.Table) -> bytes | None:
    """``batch`` (int64/int32/float64 and UTC µs timestamp columns, in COPY column order) as a binary COPY
    stream, or None if some column has no exact fixed-width encoding here."""

    fields: list[tuple[str, str]] = [("count", ">i2")]
    values: list[np.ndarray] = []
    lengths: list[int] = []
    for i, column in enumerate(batch.columns):
        if column.null_count:
            return None
        if pa.types.is_timestamp(column.type) and column.type.unit == "us" and column.type.tz is not None:
            micros = column.combine_chunks().view(pa.int64()).to_numpy()
            if len(micros) and int(micros.min()) < _PG_MIN_UNIX_US:
                return None
            values.append(micros - _PG_EPOCH_US)
            fields += [(f"n{i}", ">i4"), (f"v{i}", ">i8")]
            lengths.append(8)
            continue
        if column.type not in _TYPES:
            return None
        code, width = _TYPES[column.type]
        values.append(column.combine_chunks().to_numpy())
        fields += [(f"n{i}", ">i4"), (f"v{i}", code)]
        lengths.append(width)
    rows = np.empty(batch.num_rows, dtype=np.dtype(fields))
    rows["count"] = len(values)
    for i, (value, width) in enumerate(zip(values, lengths, strict=True)):
        rows[f"n{i}"] = width
        rows[f"v{i}"] = value  # NumPy swaps to big-endian as it copies
    return b"".join((_HEADER, rows.tobytes(), _TRAILER))
