"""The Redis feature store's bulk writes on the wire: script calls encoded as RESP a whole column at a time.

redis-py packs a command in Python, argument by argument (~1 µs each), and one record per entity is still
Python work per row if built row by row. Here the keys and each entity's record (online/features/redis_layout.py)
are RESP strings built by Arrow over whole columns, so one script call of 100 entities is a few slices of two
buffers, and the calls go down one connection in round trips of thousands of entities, the next round trip sent
before the replies of the last are read (the server works while this process encodes and parses). The script,
its arguments and its replies are online/features/redis_scripts.py's ``WRITE_SCRIPT``; the unit tests hold each
record equal to `redis_layout.record` of the same row.

pyarrow is imported at the top: this module is the write path's alone (a serving worker never imports it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis

from online.features.redis_layout import PREFIX
from online.features.redis_scripts import WRITE_SCRIPT, WRITE_SHA
from online.features.store import EncodedColumns

__all__ = ["ScriptCall", "entity_keys", "records", "run_calls", "script_calls"]


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _join(*parts: pa.Array | pa.ChunkedArray | str, separator: str = "") -> pa.Array:
    """Row-wise concatenation of string columns and constants."""
    arrays = [_text(p) if isinstance(p, str) else p.cast(pa.large_string()) for p in parts]
    joined = pc.binary_join_element_wise(*arrays, _text(separator))
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def entity_keys(usecase: str, columns: Sequence[pa.ChunkedArray]) -> pa.Array:
    """`redis_layout.entity_key` of every row: integers in decimal, strings with ``%`` and ``:`` escaped (with
    ``<usecase>#b``, `redis_layout.batch_key`)."""
    parts: list[pa.Array | pa.ChunkedArray] = []
    for column in columns:
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_integer(kind):
            parts.append(pc.cast(column, pa.large_string()))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            escaped = pc.replace_substring(pc.cast(column, pa.large_string()), "%", "%25")
            parts.append(pc.replace_substring(escaped, ":", "%3A"))
        else:
            raise TypeError(f"a key column is {column.type}")
    return _join(f"{PREFIX}:{usecase}", *parts, separator=":")


def _bulk(strings: pa.Array) -> pa.Array:
    """Each string as a RESP bulk string: ``$<bytes>\\r\\n<string>\\r\\n``."""
    return _join("$", pc.cast(pc.binary_length(strings), pa.large_string()), "\r\n", strings, "\r\n")


def _buffer(strings: pa.Array) -> tuple[memoryview, npt.NDArray[np.int64]]:
    """The bytes of a large-string array and each element's start (and the end), to slice runs of rows."""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    return memoryview(data if data is not None else b""), offsets


def _resp_head(*parts: str) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(p.encode()), p.encode()) for p in parts)


def records(encoded: EncodedColumns) -> pa.Array:
    """`redis_layout.record` of every row of `encoded`: its event-time range, the feature names, its values, and
    its times when they differ."""
    names = ",".join(encoded.features)
    values = [v.cast(pa.large_string()) for v in encoded.values]
    distinct = list({id(t): t for t in encoded.times}.values())
    if len(distinct) == 1:  # one event-time column (a materialization): every record has one time
        time = distinct[0]
        return _join(time, ",", time, "\n", names, "\n", _join(*values, separator=","))
    numbers = [pc.cast(t, pa.int64()) for t in distinct]
    low, high = pc.min_element_wise(*numbers), pc.max_element_wise(*numbers)
    same = pc.equal(low, high)
    times = _join(*[t.cast(pa.large_string()) for t in encoded.times], separator=",")
    tail = pc.if_else(same, _text(""), _join("\n", times))
    low_text, high_text = pc.cast(low, pa.large_string()), pc.cast(high, pa.large_string())
    return _join(low_text, ",", high_text, "\n", names, "\n", _join(*values, separator=","), tail)


@dataclass(frozen=True)
class ScriptCall:
    """One ``EVALSHA`` of the write script over the rows [start, stop), ready to send."""

    start: int
    stop: int
    packed: list[bytes | memoryview]


def script_calls(usecase: str, encoded: EncodedColumns, entities_per_call: int) -> list[ScriptCall]:
    """The write script's calls for every row of `encoded`, `entities_per_call` entities each, in row order."""
    keys, key_at = _buffer(_bulk(entity_keys(f"{usecase}#b", encoded.keys)))
    args, arg_at = _buffer(_bulk(records(encoded)))
    head = [str(len(encoded.features)), ",".join(encoded.features)]
    head_resp = _resp_head(*head)
    command = _resp_head("EVALSHA", WRITE_SHA)
    calls = []
    for start in range(0, len(encoded), entities_per_call):
        stop = min(start + entities_per_call, len(encoded))
        count = stop - start
        header = b"*%d\r\n" % (3 + len(head) + 2 * count) + command + _resp_head(str(count))
        packed: list[bytes | memoryview] = [
            header,
            keys[key_at[start] : key_at[stop]],
            head_resp,
            args[arg_at[start] : arg_at[stop]],
        ]
        calls.append(ScriptCall(start, stop, packed))
    return calls


def run_calls(
    client: redis.Redis, calls: Sequence[ScriptCall], calls_per_trip: int
) -> Iterator[tuple[ScriptCall, Any]]:
    """Send `calls` in round trips of `calls_per_trip` on one connection; yield each call with its reply.

    A round trip is sent before the replies of the previous one are read. A server that lost the script (new or
    restarted) answers NOSCRIPT: the script is loaded and those calls alone are sent again. Raises redis-py's
    errors (connection, timeout, a script error); the connection is then dropped, not reused.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        if not client.script_exists(WRITE_SHA)[0]:
            client.script_load(WRITE_SCRIPT)
        waiting: deque[list[ScriptCall]] = deque()
        trip: list[ScriptCall] = []
        for call in calls:
            trip.append(call)
            if len(trip) == calls_per_trip:
                yield from _send(client, connection, waiting, trip)
                trip = []
        if trip:
            yield from _send(client, connection, waiting, trip)
        while waiting:
            yield from _replies(client, connection, waiting.popleft())
    except BaseException:
        connection.disconnect()  # replies may be pending on it: never hand it back half read
        raise
    finally:
        pool.release(connection)


def _send(
    client: redis.Redis, connection: Any, waiting: deque[list[ScriptCall]], trip: list[ScriptCall]
) -> Iterator[tuple[ScriptCall, Any]]:
    connection.send_packed_command([b"".join(part for call in trip for part in call.packed)], check_health=False)
    waiting.append(trip)
    if len(waiting) > 1:
        yield from _replies(client, connection, waiting.popleft())


def _replies(client: redis.Redis, connection: Any, trip: list[ScriptCall]) -> Iterator[tuple[ScriptCall, Any]]:
    lost: list[ScriptCall] = []
    for call in trip:
        try:
            yield call, connection.read_response()
        except redis.exceptions.NoScriptError:
            lost.append(call)
    if lost:  # the server restarted between calls: load the script and send just those calls again
        client.script_load(WRITE_SCRIPT)
        connection.send_packed_command([b"".join(part for call in lost for part in call.packed)], check_health=False)
        for call in lost:
            yield call, connection.read_response()
