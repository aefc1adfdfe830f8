"""Online serving benchmark: the real `migrate serve` under wrk, per stage, with its floors, in one run.

Floors measured the same way: an empty endpoint (`/healthz`) on the same server stack, and a bare Redis round
trip (PING through redis-py, the client the service uses). Each figure is also reported as a ratio to its floor.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DURATION_S = 10
WRK_LUA = """
local bodies = {BODIES}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %.1f %.1f %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""
GET_LUA = WRK_LUA.replace(
    'return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])', 'return wrk.format("GET")'
).replace("{BODIES}", "{''}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk(url: str, script: str, connections: int, folder: Path) -> dict[str, float]:
    """One wrk run (1 thread, so the server keeps a core); latencies in ms."""
    lua = folder / f"wrk-{time.monotonic_ns()}.lua"
    lua.write_text(script)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{DURATION_S}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=DURATION_S + 60,
    )
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", done.stdout)
    assert match, done.stdout
    requests, duration_us, errors, p50, p99, mean = (float(g) for g in match.groups())
    return {
        "requests": requests,
        "errors": errors,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "mean_ms": mean / 1000,
        "connections": connections,
    }


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def _redis_floor(url: str) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1)
    samples = []
    for _ in range(5_000):
        started = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    client.close()
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99)],
        "rps": 1000 / statistics.mean(samples),
    }


def online_suite() -> dict[str, Any]:
    """Set up a world, serve it, and measure every stage and its floors."""
    if shutil.which("wrk") is None:
        raise SystemExit("the online benchmark needs wrk: apt-get install wrk")
    import httpx

    from migrate import batch
    from migrate.examples.item_availability.generator import SimulationConfig, generate
    from migrate.flag_store import FlagStore
    from migrate.flags import Stage
    from migrate.registry import Registry
    from migrate.schedule import interval_ending
    from migrate.settings import get_settings
    from migrate.training import train
    from online.broker import start_broker
    from online.materialize import materialize
    from online.redis_server import RedisServer
    from online.redis_store import RedisFeatureStore

    state = Path(tempfile.mkdtemp(prefix="migrate-bench-online-"))
    os.environ["MIGRATE_STATE_DIR"] = str(state)
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    summary = generate(settings.offline_store_path, SimulationConfig())
    cutoff = summary.last_batch_cutoff
    train(usecase, settings, cutoff)
    batch.run_batch(usecase, settings, interval_ending(usecase.batch.schedule, cutoff), "bench-online")
    redis_server = RedisServer(state / "redis").start()
    with RedisFeatureStore(redis_server.url, read_timeout_s=2) as store:
        materialize(usecase, settings, store, cutoff)
    broker = start_broker(settings)
    from migrate.offline import open_offline, utc_naive

    with open_offline(settings.offline_store_path) as con:
        keys = con.execute(
            "SELECT store_id, product_id FROM store_products WHERE listed_at <= ? "
            "ORDER BY hash(store_id * 7919 + product_id) LIMIT 1000",
            [utc_naive(cutoff)],
        ).fetchall()
    single = [orjson.dumps({"entities": [{"store_id": s, "product_id": p}]}).decode() for s, p in keys[:500]]
    hundred = [
        orjson.dumps({"entities": [{"store_id": s, "product_id": p} for s, p in keys[i : i + 100]]}).decode()
        for i in range(0, 1000, 100)
    ]

    def lua(bodies: list[str]) -> str:
        return WRK_LUA.replace("{BODIES}", "{" + ",".join(f"[=[{b}]=]" for b in bodies) + "}")

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MIGRATE_REDIS_URL": redis_server.url,
        "MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "OMP_NUM_THREADS": "1",
    }
    log = (state / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "migrate"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    flags = FlagStore.from_settings(settings)
    flags.ensure_schema()
    results: dict[str, Any] = {"duration_s": DURATION_S, "workers": 1}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"migrate serve did not start; see {state / 'serve.log'}")
            time.sleep(0.3)
        pid = int(ready.headers["x-worker-pid"])
        url = f"{base}/v1/models/{usecase.name}/predict"
        results["rss_start_mib"] = _rss_mib(pid)
        results["floor_redis"] = _redis_floor(redis_server.url)
        results["floor_empty"] = {c: _wrk(f"{base}/healthz", GET_LUA, c, state) for c in (1, 16)}

        def measure(stage: Stage, script: str, connections: int) -> dict[str, Any]:
            # Each row starts at its stage; the guardrail may roll the flag back mid-run, which the row reports.
            flags.set(usecase.name, stage, actor="bench", reason="bench", source="cli", force=True)
            time.sleep(1.0)
            run: dict[str, Any] = _wrk(url, script, connections, state)
            now = flags.get(usecase.name)
            run["rolled_back_to"] = None if now.stage is stage else str(now.stage)
            return run

        for stage in (Stage.BATCH, Stage.SHADOW, Stage.ONLINE, Stage.ONLINE_ONLY):
            print(f"online: {stage} …", file=sys.stderr, flush=True)
            results[f"single_{stage}"] = {c: measure(stage, lua(single), c) for c in (1, 16)}
            results[f"rss_after_{stage}_mib"] = _rss_mib(pid)
        results["hundred_online"] = {c: measure(Stage.ONLINE, lua(hundred), c) for c in (1, 4)}
        flags.set(usecase.name, Stage.SHADOW, actor="bench", reason="bench", source="cli", force=True)
        time.sleep(1.0)
        results["sustained_shadow_rss_mib"] = []
        for _ in range(3):  # sustained shadow load: the shadow buffer must not grow memory
            _wrk(url, lua(single), 16, state)
            results["sustained_shadow_rss_mib"].append(_rss_mib(pid))
    finally:
        flags.close()
        process.terminate()
        process.wait(timeout=30)
        log.close()
        broker.stop()
        redis_server.stop()
    return results


def _rolled(run: dict[str, Any]) -> str:
    back = run.get("rolled_back_to")
    return f" → **{back}** (guardrail rolled it back during the run)" if back else ""


def render(online: dict[str, Any]) -> list[str]:
    """The online section of docs/benchmarks.md."""

    def get(runs: dict[Any, Any], c: int) -> dict[str, float]:
        return dict(runs[str(c)] if str(c) in runs else runs[c])

    empty1, empty16 = get(online["floor_empty"], 1), get(online["floor_empty"], 16)
    redis = online["floor_redis"]
    lines = [
        "## Online serving",
        "",
        f"`migrate serve` with {online['workers']} uvicorn worker (OMP_NUM_THREADS=1), embedded Redis on a unix",
        "socket, embedded broker for the shadow log; load from `wrk` (1 thread) on the same 2-core machine,",
        f"{online['duration_s']} s per row. Latency rows use 1 connection (closed loop: its req/s is the rate the",
        "p99 was measured at); throughput rows use 16. Ratios are to the floor measured the same way.",
        "",
        "| request | stage | conns | req/s | p50 ms | p99 ms | p99 / empty-endpoint p99 | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| empty endpoint (floor) | - | 1 | {empty1['rps']:,.0f} | {empty1['p50_ms']:.2f} | {empty1['p99_ms']:.2f} "
        f"| 1.00 | {empty1['errors']:.0f} |",
        f"| empty endpoint (floor) | - | 16 | {empty16['rps']:,.0f} | {empty16['p50_ms']:.2f} | "
        f"{empty16['p99_ms']:.2f} | 1.00 | {empty16['errors']:.0f} |",
    ]
    for stage in ("batch", "shadow", "online", "online_only"):
        for c, floor in ((1, empty1), (16, empty16)):
            run = get(online[f"single_{stage}"], c)
            lines.append(
                f"| 1 entity | {stage}{_rolled(run)} | {c} | {run['rps']:,.0f} | {run['p50_ms']:.2f} | "
                f"{run['p99_ms']:.2f} | {run['p99_ms'] / floor['p99_ms']:.2f} | {run['errors']:.0f} |"
            )
    for c in (1, 4):
        run = get(online["hundred_online"], c)
        lines.append(
            f"| 100 entities | online{_rolled(run)} | {c} | {run['rps']:,.0f} | {run['p50_ms']:.2f} | "
            f"{run['p99_ms']:.2f} | {run['p99_ms'] / empty1['p99_ms']:.2f} | {run['errors']:.0f} |"
        )
    batch1, shadow1 = get(online["single_batch"], 1), get(online["single_shadow"], 1)
    rss = [
        online["rss_start_mib"],
        *(online[f"rss_after_{s}_mib"] for s in ("batch", "shadow", "online")),
        *online["sustained_shadow_rss_mib"],
    ]
    lines += [
        "",
        f"Bare Redis round trip (floor of the feature read): p50 {redis['p50_ms']:.3f} ms, "
        f"p99 {redis['p99_ms']:.3f} ms.",
        f"`shadow` adds {shadow1['p99_ms'] - batch1['p99_ms']:+.2f} ms to the served p99 compared with `batch` "
        "(1 connection; target ≤ 0.3 ms). Targets: online single-entity p99 ≤ 3 ms at 500 req/s, ≥ 2,500 req/s "
        "per worker.",
        "",
        "Reading these numbers: `online_only` is the online critical path alone (features + model, no lookup, no",
        "shadow log). `shadow` and `online` also hand each request to the comparison (the other path, a shadow",
        "record, the Kafka producer), which runs in a process of its own: on background threads of the worker it",
        "held the GIL long enough to add milliseconds to the served latency, so keeping it out of the",
        "serving process is what `shadow_process.py` does. A row marked → shadow ended in `shadow`: the",
        "use case's guardrail (`max_p99_latency_ms` of its YAML policy) measured the online path over its limit",
        "under that load and rolled the flag back, as it would in production.",
        "",
        "Worker RSS (MiB), at start, after the batch, shadow, online and online_only runs, then after each of three",
        f"sustained 16-connection shadow runs: {', '.join(f'{r:.0f}' for r in rss)} (target ≤ 300, flat).",
    ]
    return lines
