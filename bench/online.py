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
from collections.abc import Callable
from datetime import datetime, timedelta
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
STAGES = ("batch", "shadow", "online", "online_only")
PACED_RPS = 500  # the rate for the p99 target: 5 connections, each waiting PACED_DELAY_MS between requests
PACED_CONNECTIONS = 5
ROUNDS = 3  # interleaved rounds of the stages' rows (and the peer's): each row reports their median
SHADOW_ROUNDS = 3  # pairs of rows (batch, shadow) per connection count for the shadow's cost
SHADOW_SAMPLE_PERCENT = 10  # the sampled shadow's share of entities (a use case's shadow.sample_percent)
PACED_DELAY_MS = 7
# The serving moment: this long after the last batch run's cutoff (02:00 UTC), late morning of the simulated day,
# with the stream's windows built up to it from the scans before it.
SERVING_AFTER_CUTOFF = timedelta(hours=9)
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
    stolen = _steal_s()
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
        # CPU time the hypervisor gave to other guests during the row (all cores): a row with much of it was
        # measured on a slower machine than its neighbours.
        "steal_s": round(_steal_s() - stolen, 2),
    }


def _steal_s() -> float:
    """Seconds of CPU stolen by the hypervisor since boot, over every core (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one row as one: the median of each figure, every round kept beside it."""
    out: dict[str, Any] = {
        key: statistics.median(run[key] for run in runs)
        for key in ("rps", "p50_ms", "p99_ms", "mean_ms", "steal_s")
        if all(key in run for run in runs)
    }
    out["requests"] = sum(run["requests"] for run in runs)
    out["errors"] = sum(run["errors"] for run in runs)
    out["connections"] = runs[0]["connections"]
    back = [run.get("rolled_back_to") for run in runs if run.get("rolled_back_to")]
    out["rolled_back_to"] = back[0] if back else None
    details = [run["rollback_detail"] for run in runs if run.get("rollback_detail")]
    if details:
        out["rollback_detail"] = details[0]
    out["rounds"] = runs
    return out


def _guardrail_lifted(text: str) -> str:
    """A use-case YAML with its guardrail's limits lifted (no error rate or p99 rolls its flag back)."""
    import yaml  # noqa: PLC0415 - a suite imports only what it measures

    spec = yaml.safe_load(text)
    spec.setdefault("cutover_policy", {}).update({"max_error_rate": 1.0, "max_p99_latency_ms": 1e9})
    return str(yaml.safe_dump(spec, sort_keys=False))


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, every thread) of process `pid` so far; 0 when it is gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15)


def _children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def _children_rss_mib(pid: int) -> float:
    """RSS of the worker's child processes (its shadow comparison process)."""
    return sum(_rss_mib(child) for child in _children(pid))


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 and p99 (the nearest-rank sample) of latencies in ms."""
    ordered = sorted(samples_ms)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[int(len(ordered) * 0.99)]}


def _redis_floor(url: str) -> dict[str, float]:
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    client = redis.Redis.from_url(url, socket_timeout=1)
    samples = []
    for _ in range(5_000):
        started = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    client.close()
    return {**_percentiles(samples), "rps": 1000 / statistics.mean(samples)}


def _feature_reads(url: str, usecase: str, keys: list[Any], features: list[str]) -> dict[str, Any]:
    """`RedisFeatureStore.read` of 1 and of 100 entities against its floor, a bare ``MGET`` of the same records
    (bytes, nothing decoded), in alternating blocks of 500 reads; latencies in ms."""
    import redis  # noqa: PLC0415 - a suite imports only what it measures

    from online.features.redis_layout import batch_key  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.redis_store import RedisFeatureStore  # noqa: PLC0415 - a suite imports only what it measures

    samples: dict[str, list[float]] = {}
    client = redis.Redis.from_url(url, socket_timeout=5)
    with RedisFeatureStore(url, read_timeout_s=5) as store:
        for size in (1, 100):
            batches = [keys[i : i + size] for i in range(0, len(keys) - size + 1, size)]
            names = [[batch_key(usecase, key) for key in batch] for batch in batches]
            reads: list[tuple[str, Any]] = [
                (f"store_{size}", lambda i, b=batches: store.read(usecase, b[i], features)),
                (f"mget_{size}", lambda i, n=names: client.mget(n[i])),
            ]
            for block in range(10):
                for name, read in reads:
                    for j in range(500):
                        i = (block * 500 + j) % len(batches)
                        started = time.perf_counter()
                        read(i)
                        samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    client.close()
    return {name: _percentiles(values) for name, values in samples.items()}


SHADOW_LOG_RECORDS = 20_000  # per row of the shadow log's cost


def _shadow_log_cost(bootstrap: str, keys: list[Any]) -> dict[str, Any]:
    """CPU of the bench process per shadow record sent, acknowledgements awaited, in ROUNDS interleaved rounds:
    records as the comparison logs them (`wire_record` into a `ShadowLogger`, up to 100 records a Kafka message),
    the same one record a message (the logger before it grouped them), the records built as the model
    (`ShadowRecord`, validated then dumped, through the same logger), and two floors: a bare kafka-python producer
    with the logger's settings sending the same bytes, encoded and grouped beforehand (nothing built, nothing
    counted), as the logger's messages and one record a message. The keys are the bench's entities, each sent many
    times, as a day's requests ask for them."""
    from datetime import UTC  # noqa: PLC0415 - a suite imports only what it measures

    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - a suite imports only what it measures

    from online.kafka import (  # noqa: PLC0415 - a suite imports only what it measures
        KafkaProducer,
        KeyHashPartitioner,
        ensure_topic,
    )
    from online.shadow.log import (  # noqa: PLC0415 - a suite imports only what it measures
        DROP_REASONS,
        ShadowLogger,
        group_messages,
    )
    from online.shadow.record import (  # noqa: PLC0415 - a suite imports only what it measures
        RequestRecords,
        ShadowRecord,
        wire_record,
    )

    now = datetime.now(UTC)
    ages = {f"feature_{i}": 60.0 * i for i in range(13)}
    values = {f"feature_{i}": 0.5 * i for i in range(13)}

    def fields(i: int) -> dict[str, Any]:
        store, product = keys[i % len(keys)]
        return {
            "request_id": f"bench-{i}",
            "usecase": "bench",
            "key": {"store_id": store, "product_id": product},
            "request_time": now,
            "served_source": "batch",
            "stage": "shadow",
            "batch_prediction": 0.25,
            "batch_model_version": "v1-bench",
            "lookup_version": 3,
            "batch_data_age_s": 3600.5,
            "batch_latency_ms": 0.4,
            "online_prediction": 0.75,
            "online_model_version": "online-v1-bench",
            "online_feature_ages_s": ages,
            "online_features": values,
            "online_latency_ms": 1.2,
        }

    shared = ("request_id", "usecase", "request_time", "stage")

    def requests_of(start: int, count: int) -> list[Any]:
        """Records `start` … `start + count - 1` as one request's, built as the comparison builds them."""
        request = RequestRecords(**{name: value for name, value in fields(start).items() if name in shared})
        return [
            request.record(**{name: value for name, value in fields(i).items() if name not in shared})
            for i in range(start, start + count)
        ]

    def one_by_one(build: Callable[..., Any]) -> Callable[[Any], None]:
        """Each record built by `build` and logged alone, as the comparison logs a one-entity request."""

        def log(logger: Any) -> None:
            for i in range(SHADOW_LOG_RECORDS):
                logger.log(build(**fields(i)))

        return log

    def by_request(entities: int) -> Callable[[Any], None]:
        """The records logged `entities` at a time, as the comparison logs the records of one request."""

        def log(logger: Any) -> None:
            for start in range(0, SHADOW_LOG_RECORDS, entities):
                logger.log_many(requests_of(start, min(entities, SHADOW_LOG_RECORDS - start)))

        return log

    def logged(log: Callable[[Any], None], records_per_message: int = 100) -> float:
        """CPU seconds of this process to log `SHADOW_LOG_RECORDS` records by `log` and see each one sent."""
        logger = ShadowLogger(
            bootstrap,
            "bench",
            registry=CollectorRegistry(),
            queue_size=SHADOW_LOG_RECORDS,
            max_in_flight=SHADOW_LOG_RECORDS,
            records_per_message=records_per_message,
        )
        try:
            logger.log(wire_record(**fields(0)))  # connected, the topic made: not measured
            while logger.stats()["sent"] < 1:
                time.sleep(0.01)
            started = time.process_time()
            log(logger)
            while (counts := logger.stats())["sent"] + sum(counts[r] for r in DROP_REASONS) <= SHADOW_LOG_RECORDS:
                time.sleep(0.005)  # every record sent or dropped (counted)
            if counts["sent"] != SHADOW_LOG_RECORDS + 1:
                raise SystemExit(f"online bench: the shadow logger dropped records: {counts}")
            return time.process_time() - started
        finally:
            logger.close()

    def bare(records_per_message: int) -> float:
        ensure_topic(bootstrap, "migrate.shadow.bench", timeout_s=10)
        probe = ShadowLogger(bootstrap, "bench", registry=CollectorRegistry())
        # the logger's own producer settings (batch size, linger, acks), with kafka-python's default partitioner
        config = {k: v for k, v in probe._producer_config().items() if k != "partitioner"}
        probe.close()
        encoded = [(r.key_bytes(), r.to_json()) for r in (wire_record(**fields(i)) for i in range(SHADOW_LOG_RECORDS))]
        producer = KafkaProducer(**config)
        try:
            producer.send("migrate.shadow.bench", key=b"k", value=b"v").get(timeout=10)
            partitions = sorted(producer.partitions_for("migrate.shadow.bench"))
            # grouped as the logger groups a queue of 500 records at a time
            messages = [
                message
                for start in range(0, len(encoded), 500)
                for message in group_messages(
                    encoded[start : start + 500],
                    partitions,
                    KeyHashPartitioner(),
                    records_per_message=records_per_message,
                    message_bytes=131_072,
                )
            ]
            started = time.process_time()
            for message in messages:
                producer.send("migrate.shadow.bench", key=message.key, value=message.value, partition=message.partition)
            producer.flush(timeout=60)
            return time.process_time() - started
        finally:
            producer.close(timeout=5)

    rows: dict[str, Callable[[], float]] = {
        "encoded": lambda: logged(one_by_one(wire_record)),
        "requests": lambda: logged(by_request(100)),
        "one_per_message": lambda: logged(one_by_one(wire_record), records_per_message=1),
        "model": lambda: logged(one_by_one(ShadowRecord)),
        "bare_producer": lambda: bare(1),
        "bare_grouped": lambda: bare(100),
    }
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(ROUNDS):
        for name, run in rows.items():
            cpu[name].append(1e6 * run() / SHADOW_LOG_RECORDS)
    return {"records": SHADOW_LOG_RECORDS, "cpu_us_per_record": cpu}


def _realtime_state(
    settings: Any, usecase: Any, bootstrap: str, redis_url: str, serving_at: datetime
) -> dict[str, Any]:
    """The stream's window states as of `serving_at`: the events the windows hold then (the example's offline event
    history, as a rehearsal warms up) published to the events topic, then consumed by the stream processor (its
    replay, which runs until it has caught up), as production's `migrate stream` would have kept them."""
    from migrate.batch.event_history import warm_up_events  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch.offline_store import open_offline  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.feature_windows import warm_up  # noqa: PLC0415 - a suite imports only what it measures
    from online.stream.publisher import EventPublisher  # noqa: PLC0415 - a suite imports only what it measures
    from online.stream.replay import replay  # noqa: PLC0415 - a suite imports only what it measures

    since = serving_at - warm_up(usecase)
    publisher = EventPublisher.for_usecase(
        usecase, bootstrap, topic_prefix=settings.events_topic_prefix, timeout_s=settings.kafka_timeout_s
    )
    try:
        with open_offline(settings.offline_store_path) as con:
            events = warm_up_events(con, usecase, serving_at)
            sent = publisher.publish(events, time_field=usecase.realtime_features.event_time_column)
    finally:
        publisher.close()
    report = replay(settings, usecase, bootstrap=bootstrap, redis_url=redis_url)
    if report.events != sent or report.dead_letters:
        raise SystemExit(f"online bench: published {sent:,} events but the stream processor consumed {report}")
    return {"serving_at": serving_at.isoformat(), "events_from": since.isoformat(), "events": sent}


def online_suite() -> dict[str, Any]:
    """Set up a world, serve it, and measure every stage and its floors."""
    if shutil.which("wrk") is None:
        raise SystemExit("the online benchmark needs wrk: apt-get install wrk")
    import httpx  # noqa: PLC0415 - a suite imports only what it measures
    import skops.io as sio  # noqa: PLC0415 - a suite imports only what it measures

    from migrate.artifact import ArtifactStore  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch import steps as batch  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch.schedule import interval_ending  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch.training import train  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.cutover.flag_store import FlagStore  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.cutover.flags import Stage  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.devservices.broker import start_broker  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.devservices.redis_server import RedisServer  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.examples.item_availability.generator import SimulationConfig, generate  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.feature_windows import groups_of  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.scoring import load_model  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.materialize import materialize  # noqa: PLC0415 - a suite imports only what it measures
    from online.features.redis_store import RedisFeatureStore  # noqa: PLC0415 - a suite imports only what it measures
    from online.serving.predictor import OnlinePredictor  # noqa: PLC0415 - a suite imports only what it measures

    state = Path(tempfile.mkdtemp(prefix="migrate-bench-online-"))
    os.environ["MIGRATE_STATE_DIR"] = str(state)
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    summary = generate(settings.offline_store_path, SimulationConfig())
    cutoff = summary.last_batch_cutoff
    # Both models, as a migration has them: the batch one (the lookup table) and the online one, which reads the
    # real-time windows beside the batch features, so the online stages evaluate windows per request.
    train(usecase, settings, cutoff)
    online_model = train(usecase, settings, cutoff, role="online")
    batch.run_batch(usecase, settings, interval_ending(usecase.batch.schedule, cutoff), "bench-online")
    redis_server = RedisServer(state / "redis").start()
    with RedisFeatureStore(redis_server.url, read_timeout_s=2) as store:
        materialize(usecase, settings, store, cutoff)
    broker = start_broker(settings)
    serving_at = cutoff + SERVING_AFTER_CUTOFF
    results: dict[str, Any] = {"duration_s": DURATION_S, "workers": 1}
    results["realtime"] = _realtime_state(settings, usecase, broker.bootstrap, redis_server.url, serving_at)
    results["realtime"]["online_model"] = {
        "version": online_model.version,
        "features": list(online_model.feature_names),
    }
    from migrate.batch.offline_store import open_offline, utc_naive  # noqa: PLC0415 - a suite imports only what it measures

    with open_offline(settings.offline_store_path) as con:
        keys = con.execute(
            "SELECT store_id, product_id FROM store_products WHERE listed_at <= ? "
            "ORDER BY hash(store_id * 7919 + product_id) LIMIT 1000",
            [utc_naive(cutoff)],
        ).fetchall()
    model = load_model(usecase, ArtifactStore(settings.artifacts_dir, settings.project_dir), "online")
    # The peer's own layout, as a team would write it by hand: one hash per entity, a field per model feature
    # (v:<name>), holding the values `migrate` scores for the same entities at the serving moment: the batch
    # features it stored and the windows it evaluates from the stream's state (the peer reads them ready-made,
    # as if a stream job of its own kept them current: it evaluates no window per request).
    reader = RedisFeatureStore(redis_server.url, read_timeout_s=5)
    with reader:
        scored = OnlinePredictor(usecase, model, reader).predict(keys, serving_at)
        pipe = reader.client.pipeline(transaction=False)
        for (s, p), result in zip(keys, scored, strict=True):
            fields = {f"v:{name}": "" if v is None else repr(v) for name, v in result.features.items()}
            if fields:
                pipe.hset(f"peer:{usecase.name}:{s}:{p}", mapping=fields)
        pipe.execute()
    windows = [g.name for g in groups_of(usecase) if g.spec.features]
    results["realtime"]["keys_with_window_state"] = {
        name: sum(1 for r in scored if r.group_ages_s.get(name) is not None) for name in windows
    }
    results["realtime"]["keys"] = len(keys)
    single = [orjson.dumps({"entities": [{"store_id": s, "product_id": p}]}).decode() for s, p in keys[:500]]
    hundred = [
        orjson.dumps({"entities": [{"store_id": s, "product_id": p} for s, p in keys[i : i + 100]]}).decode()
        for i in range(0, 1000, 100)
    ]

    def lua(bodies: list[str], delay_ms: int | None = None) -> str:
        script = WRK_LUA.replace("{BODIES}", "{" + ",".join(f"[=[{b}]=]" for b in bodies) + "}")
        return script + (f"delay = function() return {delay_ms} end\n" if delay_ms is not None else "")

    env = {
        **os.environ,
        "MIGRATE_REDIS_URL": redis_server.url,
        "MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "OMP_NUM_THREADS": "1",
        # The serving clock starts at the moment the stream's state was built up to, and runs at the wall's pace.
        "MIGRATE_CLOCK_START": serving_at.isoformat(),
        "MIGRATE_CLOCK_SPEED": "1",
    }
    servers: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(command: list[str], name: str, extra: dict[str, str] | None = None) -> str:
        port = _free_port()
        log = (state / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**env, **(extra or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        servers.append((process, log))
        return f"http://127.0.0.1:{port}"

    migrate_cli = str(Path(sys.executable).parent / "migrate")
    base = start([migrate_cli, "serve"], "serve")
    base2 = start([migrate_cli, "serve", "--workers", "2"], "serve-2-workers")
    # The same use case with a shadow that samples SHADOW_SAMPLE_PERCENT of the entities (its YAML's shadow section,
    # docs/serving.md), served beside it on the same flag, for the shadow cost at that sample.
    sampled_dir = state / "usecases-sampled"
    sampled_dir.mkdir()
    for yaml_file in settings.usecases_dir.glob("*.yaml"):
        text = yaml_file.read_text()
        if yaml_file.stem == usecase.name:
            text += f"\nshadow:\n  sample_percent: {SHADOW_SAMPLE_PERCENT}\n"
        (sampled_dir / yaml_file.name).write_text(text)
    base3 = start([migrate_cli, "serve"], "serve-sampled", {"MIGRATE_USECASES_DIR": str(sampled_dir)})
    # The same use case with its guardrail's limits lifted, served beside it on the same flag: the 100-entity rows
    # at `online` throughout. On the guarded server the guardrail may roll such a row back to `shadow` mid-run, and
    # the rest of the row then measures answers from the lookup table, not the online path the target is about.
    held_dir = state / "usecases-held"
    held_dir.mkdir()
    for yaml_file in settings.usecases_dir.glob("*.yaml"):
        (held_dir / yaml_file.name).write_text(_guardrail_lifted(yaml_file.read_text()))
    base4 = start([migrate_cli, "serve"], "serve-held", {"MIGRATE_USECASES_DIR": str(held_dir)})
    # The peer: the same model file and the same Redis keys, served the way a team would by hand (bench/peer.py).
    peer_dir = state / "peer"
    peer_dir.mkdir()
    sio.dump(model.fitted(), peer_dir / "model.skops")
    peer = start(
        [str(Path(sys.executable).parent / "uvicorn"), "bench.peer:app", "--workers", "1", "--log-level", "warning"],
        "peer",
        {
            "PEER_REDIS_URL": redis_server.url,
            "PEER_MODEL": str(peer_dir / "model.skops"),
            "PEER_KEY_PREFIX": f"peer:{usecase.name}:",
            "PEER_KEYS": ",".join(usecase.entity.key_names),
            "PEER_FIELDS": ",".join(f"v:{name}" for name in model.feature_names),
        },
    )
    flags = FlagStore.from_settings(settings)
    flags.ensure_schema()
    try:
        pid = _wait_ready(base, usecase.name, servers[0][0], state)
        _wait_ready(base2, usecase.name, servers[1][0], state)
        _wait_peer(peer, servers[3][0], state)
        _wait_ready(base3, usecase.name, servers[2][0], state)
        held_pid = _wait_ready(base4, usecase.name, servers[4][0], state)
        url = f"{base}/v1/models/{usecase.name}/predict"
        url2 = f"{base2}/v1/models/{usecase.name}/predict"
        url3 = f"{base3}/v1/models/{usecase.name}/predict"
        url4 = f"{base4}/v1/models/{usecase.name}/predict"
        peer_url = f"{peer}/predict"
        results["rss_start_mib"] = _rss_mib(pid)
        results["floor_redis"] = _redis_floor(redis_server.url)
        results["feature_reads"] = _feature_reads(redis_server.url, usecase.name, keys, usecase.feature_names)
        results["shadow_log"] = _shadow_log_cost(broker.bootstrap, keys)
        results["floor_empty"] = {c: _wrk(f"{base}/healthz", GET_LUA, c, state) for c in (1, 16)}

        def measure(stage: Stage, script: str, connections: int, at: str | None = None) -> dict[str, Any]:
            # Each row starts at its stage; the guardrail may roll the flag back mid-run, which the row reports.
            flags.set(usecase.name, stage, actor="bench", reason="bench", source="cli", force=True)
            time.sleep(1.0)
            run: dict[str, Any] = _wrk(at or url, script, connections, state)
            now = flags.get(usecase.name)
            run["rolled_back_to"] = None if now.stage is stage else str(now.stage)
            if run["rolled_back_to"]:
                run["rollback_detail"] = flags.history(usecase.name, 1)[0].detail
            return run

        # ROUNDS rounds of every stage's rows, interleaved (round 1: batch, shadow, online, online_only, the
        # peer; round 2: the same again …): each row reports the median of its rounds, so one row slowed by the
        # shared machine (see its steal) does not decide a target.
        rounds: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for round_ in range(ROUNDS):
            for stage in (Stage.BATCH, Stage.SHADOW, Stage.ONLINE, Stage.ONLINE_ONLY):
                print(f"online: round {round_ + 1}, {stage} …", file=sys.stderr, flush=True)
                for c in (1, 16):
                    rounds.setdefault(str(stage), {}).setdefault(c, []).append(measure(stage, lua(single), c))
                    if stage is Stage.ONLINE_ONLY:  # the peer's row right after ours, same wrk settings
                        rounds.setdefault("peer", {}).setdefault(c, []).append(_wrk(peer_url, lua(single), c, state))
                if round_ == 0 and stage is not Stage.ONLINE_ONLY:
                    paced = measure(stage, lua(single, PACED_DELAY_MS), PACED_CONNECTIONS)
                    results[f"single_{stage}"] = {"paced": paced}
                results[f"rss_after_{stage}_mib"] = _rss_mib(pid)
        for stage in (Stage.BATCH, Stage.SHADOW, Stage.ONLINE, Stage.ONLINE_ONLY):
            results.setdefault(f"single_{stage}", {}).update(
                {c: _median_run(runs) for c, runs in rounds[str(stage)].items()}
            )
        results["peer"] = {c: _median_run(runs) for c, runs in rounds["peer"].items()}
        results["rounds"] = ROUNDS
        # The shadow's cost is a few tenths of a millisecond of p99, below one row's run-to-run noise: measured as
        # the median over SHADOW_ROUNDS pairs of rows, batch then shadow, back to back; then the shadow sampling
        # SHADOW_SAMPLE_PERCENT of the entities (the other server) in the same round.
        print("online: shadow against batch …", file=sys.stderr, flush=True)
        results["shadow_cost"] = {c: [] for c in (1, 16)}
        results["shadow_sample_percent"] = SHADOW_SAMPLE_PERCENT
        # Where the shadow's CPU goes: each row's CPU seconds of the worker, its comparison process (its child),
        # the broker and Redis, which share the two cores with wrk.
        cpu_of: dict[str, Callable[[], float]] = {
            "worker": lambda: _cpu_s(pid),
            "comparison": lambda: sum(_cpu_s(child) for child in _children(pid)),
            "broker": lambda: _cpu_s(broker.process.pid),
            "redis": lambda: _cpu_s(redis_server.pid),
        }

        def with_cpu(stage: Stage, c: int) -> dict[str, Any]:
            before = {name: read() for name, read in cpu_of.items()}
            run = measure(stage, lua(single), c)
            run["cpu_s"] = {name: round(read() - before[name], 2) for name, read in cpu_of.items()}
            return run

        for _ in range(SHADOW_ROUNDS):
            for c in (1, 16):
                pair = {str(stage): with_cpu(stage, c) for stage in (Stage.BATCH, Stage.SHADOW)}
                pair["shadow_sampled"] = measure(Stage.SHADOW, lua(single), c, at=url3)
                results["shadow_cost"][c].append(pair)
        # The 100-entity rows in ROUNDS rounds too, each beside the peer's: one row decided the guardrail's
        # target before, and a row slowed by the shared machine (its steal) flipped it.
        print("online: 100 entities …", file=sys.stderr, flush=True)
        hundred_rounds: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
        peer_hundred_rounds: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
        held_rounds: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
        for _ in range(ROUNDS):
            for c in (1, 4):
                hundred_rounds[c].append(measure(Stage.ONLINE, lua(hundred), c))
                before = (_cpu_s(held_pid), sum(_cpu_s(child) for child in _children(held_pid)))
                held = measure(Stage.ONLINE, lua(hundred), c, at=url4)
                held["cpu_s"] = {
                    "worker": round(_cpu_s(held_pid) - before[0], 2),
                    "comparison": round(sum(_cpu_s(child) for child in _children(held_pid)) - before[1], 2),
                }
                held_rounds[c].append(held)
                peer_hundred_rounds[c].append(_wrk(peer_url, lua(hundred), c, state))
        results["hundred_online"] = {c: _median_run(runs) for c, runs in hundred_rounds.items()}
        results["hundred_online_held"] = {c: _median_run(runs) for c, runs in held_rounds.items()}
        # Its entities answered from the lookup table after an online error (a missed deadline, a failed read), by
        # reason: this server served nothing but these rows.
        held_metrics = httpx.get(f"{base4}/metrics", timeout=5).text
        fallbacks: dict[str, float] = {}
        for line in held_metrics.splitlines():
            if line.startswith("migrate_fallbacks_total{"):
                reason = re.search(r'reason="([^"]*)"', line)
                name = reason.group(1) if reason else "unlabelled"
                fallbacks[name] = fallbacks.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        results["hundred_online_held"]["fallbacks"] = fallbacks
        for c, runs in peer_hundred_rounds.items():
            results["peer"][f"hundred_{c}"] = _median_run(runs)
        # Two workers beside one, rows interleaved: the same flag serves both servers.
        print("online: 2 workers …", file=sys.stderr, flush=True)
        results["workers_2"] = {}
        for stage in (Stage.ONLINE_ONLY, Stage.ONLINE):
            flags.set(usecase.name, stage, actor="bench", reason="bench", source="cli", force=True)
            time.sleep(1.0)
            results["workers_2"][f"one_{stage}"] = _wrk(url, lua(single), 16, state)
            results["workers_2"][str(stage)] = _wrk(url2, lua(single), 16, state)
        # One /metrics view across the workers: its request count is every request both workers answered.
        results["workers_2"]["metrics_requests"] = _predict_requests(httpx.get(f"{base2}/metrics", timeout=5).text)
        results["workers_2"]["wrk_requests"] = sum(
            results["workers_2"][str(stage)]["requests"] for stage in (Stage.ONLINE_ONLY, Stage.ONLINE)
        )
        flags.set(usecase.name, Stage.SHADOW, actor="bench", reason="bench", source="cli", force=True)
        time.sleep(1.0)
        results["sustained_shadow_rss_mib"] = []
        for _ in range(3):  # sustained shadow load: the shadow buffer must not grow memory
            _wrk(url, lua(single), 16, state)
            results["sustained_shadow_rss_mib"].append(_rss_mib(pid))
        results["shadow_process_rss_mib"] = _children_rss_mib(pid)
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        results["shadow_skipped"] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("migrate_shadow_skipped_total")
        )
        results["shadow_sent"] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("migrate_shadow_records_sent_total")
        )
    finally:
        flags.close()
        for process, log in servers:
            process.terminate()
            process.wait(timeout=30)
            log.close()
        broker.stop()
        redis_server.stop()
    return results


def _wait_ready(base: str, usecase: str, process: subprocess.Popen[bytes], state: Path) -> int:
    """Wait until `migrate serve` at `base` is ready for `usecase`; the pid of the worker that said so."""
    import httpx  # noqa: PLC0415 - a suite imports only what it measures

    deadline = time.monotonic() + 180
    while True:
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            checks = ready.json().get("checks", {})
            # Ready for the benchmarked use case (another in usecases/ may have no model in this world).
            if all(checks.get(name) == "ok" for name in (f"usecase:{usecase}", "feature_store", "flags")):
                return int(ready.headers["x-worker-pid"])
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"migrate serve did not start; see the logs in {state}")
        time.sleep(0.3)


def _wait_peer(base: str, process: subprocess.Popen[bytes], state: Path) -> None:
    import httpx  # noqa: PLC0415 - a suite imports only what it measures

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/docs", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the peer service did not start; see {state / 'peer.log'}")
        time.sleep(0.3)


def _predict_requests(text: str) -> float:
    """``migrate_predict_requests_total`` summed over its labels, from one scrape of /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("migrate_predict_requests_total")
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(online: dict[str, Any], get: Any) -> list[str]:
    """Each target of issue 14 with this run's figure and whether it was met."""
    out: list[str] = []
    single = {s: (get(online[f"single_{s}"], 1), get(online[f"single_{s}"], 16)) for s in STAGES}
    for stage in ("online", "online_only"):
        run = single[stage][1]
        out.append(f"- {stage}, 16 connections, p99 ≤ 15 ms: {run['p99_ms']:.2f} ms ({_verdict(run['p99_ms'] <= 15)}).")
    rps = single["online_only"][1]["rps"]
    out.append(f"- online_only, 16 connections, ≥ 2,500 req/s: {rps:,.0f} req/s ({_verdict(rps >= 2_500)}).")
    worst1 = max(single[s][0]["p99_ms"] for s in STAGES)
    each = ", ".join(f"{s} {single[s][0]['p99_ms']:.2f}" for s in STAGES)
    empty = get(online["floor_empty"], 1)["p99_ms"]
    out.append(
        f"- 1 connection, p99 ≤ 2.5 ms: {each} ms ({_verdict(worst1 <= 2.5)}; the empty endpoint's own p99 in this "
        f"run: {empty:.2f} ms)."
    )
    for c, index in ((1, 0), (16, 1)):
        conns = f"{c} connection{'s' if c > 1 else ''}"
        by_c = online.get("shadow_cost", {})
        pairs = by_c.get(str(c), by_c.get(c))
        if pairs:  # the median over pairs of rows run back to back
            costs = [pair["shadow"]["p99_ms"] - pair["batch"]["p99_ms"] for pair in pairs]
            cost = statistics.median(costs)
            each = ", ".join(f"{x:+.2f}" for x in costs)
            out.append(
                f"- `shadow` adds ≤ 0.3 ms to the served p99 over `batch`, {conns}: median {cost:+.2f} ms over "
                f"{len(costs)} pairs of rows ({each}) ({_verdict(cost <= 0.3)})."
            )
            if all("cpu_s" in pair[stage] for pair in pairs for stage in ("batch", "shadow")):
                per_k = {
                    stage: {
                        name: statistics.median(
                            1000 * pair[stage]["cpu_s"][name] / max(pair[stage]["requests"], 1) for pair in pairs
                        )
                        for name in pairs[0][stage]["cpu_s"]
                    }
                    for stage in ("batch", "shadow")
                }
                out.append(
                    "  - CPU seconds per 1,000 requests, batch → shadow (medians over the pairs): "
                    + ", ".join(
                        f"{name} {per_k['batch'][name]:.2f} → {per_k['shadow'][name]:.2f}" for name in per_k["batch"]
                    )
                    + "."
                )
            sampled = [
                pair["shadow_sampled"]["p99_ms"] - pair["batch"]["p99_ms"] for pair in pairs if "shadow_sampled" in pair
            ]
            if sampled:
                out.append(
                    f"  - the same with `shadow.sample_percent: {online.get('shadow_sample_percent')}` (another "
                    f"server, same flag, in the same rounds): median {statistics.median(sampled):+.2f} ms "
                    f"({', '.join(f'{x:+.2f}' for x in sampled)}) "
                    f"({_verdict(statistics.median(sampled) <= 0.3)} at that sample)."
                )
            continue
        cost = single["shadow"][index]["p99_ms"] - single["batch"][index]["p99_ms"]
        out.append(
            f"- `shadow` adds ≤ 0.3 ms to the served p99 over `batch`, {conns}: {cost:+.2f} ms "
            f"({_verdict(cost <= 0.3)})."
        )
    hundred = get(online["hundred_online"], 4)
    rounds = hundred.get("rounds", [])
    back = sum(1 for r in rounds if r.get("rolled_back_to"))
    rolled = (
        f"; the guardrail rolled {back} of {len(rounds)} rounds back to shadow (a rolled-back round's figures are "
        "mostly answers at shadow, from the lookup table)"
        if rounds and back
        else f"; the guardrail rolled it back to {hundred['rolled_back_to']}"
        if hundred.get("rolled_back_to")
        else ""
    )
    median = f"median of {len(rounds)} rounds " if rounds else ""
    out.append(
        f"- 100 entities, 4 connections, p99 ≤ 25 ms (the example guardrail holds): {median}{hundred['p99_ms']:.2f} ms"
        f"{rolled} ({_verdict(hundred['p99_ms'] <= 25 and not hundred.get('rolled_back_to'))})."
    )
    held_runs = online.get("hundred_online_held")
    if held_runs:
        held = get(held_runs, 4)
        asked = [get(held_runs, c)["requests"] for c in (1, 4) if str(c) in held_runs or c in held_runs]
        entities = 100 * sum(asked)  # each request of these rows asks for 100 entities
        per_request = (
            f"; CPU per request, worker {_median_ms(held['rounds'], 'worker'):.2f} ms, its comparison process "
            f"{_median_ms(held['rounds'], 'comparison'):.2f} ms"
            if any("cpu_s" in r for r in held["rounds"])
            else ""
        )
        fallbacks = held_runs.get("fallbacks", {})
        reasons = (
            f"{fallbacks:,.0f} (this run kept no reasons)"  # the first run with these rows summed every reason
            if isinstance(fallbacks, int | float)
            else ", ".join(f"{n:,.0f} {reason}" for reason, n in sorted(fallbacks.items())) or "none"
        )
        out.append(
            f"  - at `online` throughout (another server on the same flag, its guardrail's limits lifted, in the same "
            f"rounds): median p99 {held['p99_ms']:.2f} ms at {held['rps']:,.0f} req/s"
            f"{per_request}; of the {entities:,.0f} entities it was asked for in these rows, answered from the "
            f"lookup table after an online error (`migrate_fallbacks_total` by reason): {reasons}."
        )
    peer = online.get("peer", {})
    for c in (1, 16):
        if str(c) not in peer and c not in peer:
            continue
        theirs, ours = get(peer, c), single["online_only"][c != 1]
        p99_ratio, rps_ratio = theirs["p99_ms"] / ours["p99_ms"], ours["rps"] / theirs["rps"]
        out.append(
            f"- against the hand-written peer, {c} connection{'s' if c > 1 else ''} (online_only): p99 "
            f"{p99_ratio:.1f}× better (goal ≥ 2×, {_verdict(p99_ratio >= 2)}), throughput {rps_ratio:.1f}× "
            f"(goal ≥ 4×, {_verdict(rps_ratio >= 4)}); p50 {theirs['p50_ms'] / ours['p50_ms']:.1f}× better."
        )
    two = online.get("workers_2", {})
    if "online_only" in two:
        out.append(
            f"- 2 workers, online_only, 16 connections: {two['online_only']['rps']:,.0f} req/s, p99 "
            f"{two['online_only']['p99_ms']:.2f} ms (1 worker in the row beside it: "
            f"{two['one_online_only']['rps']:,.0f} req/s, p99 {two['one_online_only']['p99_ms']:.2f} ms); "
            f"its one /metrics view counted {two['metrics_requests']:,.0f} predict requests of the "
            f"{two['wrk_requests']:,.0f} wrk sent to both workers."
        )
    return out


def _median_ms(rounds: list[dict[str, Any]], name: str) -> float:
    """The median over the rounds that kept CPU seconds of one process's CPU milliseconds per request."""
    return float(statistics.median(1000 * r["cpu_s"][name] / max(r["requests"], 1) for r in rounds if "cpu_s" in r))


def _rolled(run: dict[str, Any]) -> str:
    back = run.get("rolled_back_to")
    return f" → **{back}** (guardrail rolled it back during the run)" if back else ""


def _realtime_prose(online: dict[str, Any]) -> list[str]:
    realtime = online.get("realtime")
    if not realtime:
        return [
            "No stream ran in this run and no online model was trained: the online stages served the batch model,",
            "which reads no window feature.",
            "",
        ]
    model = realtime["online_model"]
    with_state = realtime["keys_with_window_state"]
    held = ", ".join(f"{name} {count:,}" for name, count in with_state.items())
    return [
        f"The online stages serve the online model ({len(model['features'])} features, the real-time windows among",
        f"them), trained as of the last batch run. Its windows come from the stream: {realtime['events']:,} scans",
        f"of the example's history ({realtime['events_from']} up to {realtime['serving_at']}, the windows' reach",
        "before the serving moment) were published to the events topic and consumed by the stream processor",
        "(`migrate replay`'s code), and the servers' clock starts at that moment and runs at the wall's pace, so",
        "each request decodes its entity's stored window states and evaluates its windows as of the request's",
        f"time. Of the {realtime['keys']:,} requested entities, these hold a window state per group: {held}.",
        "",
    ]


def render(online: dict[str, Any]) -> list[str]:
    """The online section of docs/benchmarks.md."""

    def get(runs: dict[Any, Any], c: int | str) -> dict[str, Any]:
        return dict(runs[str(c)] if str(c) in runs else runs[c])

    empty1, empty16 = get(online["floor_empty"], 1), get(online["floor_empty"], 16)
    redis = online["floor_redis"]
    lines = [
        "## Online serving",
        "",
        f"`migrate serve` with {online['workers']} uvicorn worker (OMP_NUM_THREADS=1), embedded Redis on a unix",
        "socket, embedded broker for the shadow log; load from `wrk` (1 thread) on the same 2-core machine,",
        f"{online['duration_s']} s per row. Latency rows use 1 connection (closed loop: its req/s is the rate the",
        f"p99 was measured at); paced rows aim at ~{PACED_RPS} req/s ({PACED_CONNECTIONS} connections, each waiting",
        f"{PACED_DELAY_MS} ms between requests; their req/s says what they held); throughput rows use 16. Ratios are",
        "to the floor measured the same way (the paced rows' to the 1-connection floor).",
        "",
        "| request | stage | conns | req/s | p50 ms | p99 ms | p99 / empty-endpoint p99 | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| empty endpoint (floor) | - | 1 | {empty1['rps']:,.0f} | {empty1['p50_ms']:.2f} | {empty1['p99_ms']:.2f} "
        f"| 1.00 | {empty1['errors']:.0f} |",
        f"| empty endpoint (floor) | - | 16 | {empty16['rps']:,.0f} | {empty16['p50_ms']:.2f} | "
        f"{empty16['p99_ms']:.2f} | 1.00 | {empty16['errors']:.0f} |",
    ]
    details: list[str] = []

    def row(request: str, stage: str, conns: str, run: dict[str, Any], floor: dict[str, float]) -> None:
        lines.append(
            f"| {request} | {stage}{_rolled(run)} | {conns} | {run['rps']:,.0f} | {run['p50_ms']:.2f} | "
            f"{run['p99_ms']:.2f} | {run['p99_ms'] / floor['p99_ms']:.2f} | {run['errors']:.0f} |"
        )
        if run.get("rollback_detail"):
            details.append(f"- {request}, {stage}, {conns} connections: {run['rollback_detail']}.")

    for stage in ("batch", "shadow", "online", "online_only"):
        runs = online[f"single_{stage}"]
        row("1 entity", stage, "1", get(runs, 1), empty1)
        if "paced" in runs:
            row("1 entity", stage, f"{PACED_CONNECTIONS} paced", get(runs, "paced"), empty1)
        row("1 entity", stage, "16", get(runs, 16), empty16)
    for c in (1, 4):
        row("100 entities", "online", str(c), get(online["hundred_online"], c), empty1)
    if "hundred_online_held" in online:
        for c in (1, 4):
            row("100 entities", "online, guardrail lifted", str(c), get(online["hundred_online_held"], c), empty1)

    peer = online.get("peer", {})
    for c in (1, 16):
        if str(c) in peer or c in peer:
            run = get(peer, c)
            lines.append(
                f"| 1 entity | **peer** (hand-written service) | {c} | {run['rps']:,.0f} | {run['p50_ms']:.2f} | "
                f"{run['p99_ms']:.2f} | {run['p99_ms'] / (empty1 if c == 1 else empty16)['p99_ms']:.2f} | "
                f"{run['errors']:.0f} |"
            )
    for c in (1, 4):
        if f"hundred_{c}" in peer:
            run = get(peer, f"hundred_{c}")
            lines.append(
                f"| 100 entities | **peer** (hand-written service) | {c} | {run['rps']:,.0f} | {run['p50_ms']:.2f} | "
                f"{run['p99_ms']:.2f} | {run['p99_ms'] / empty1['p99_ms']:.2f} | {run['errors']:.0f} |"
            )
    two = online.get("workers_2", {})
    for stage in ("online_only", "online"):
        if stage in two:
            row("1 entity, **2 workers**", stage, "16", two[stage], empty16)
            row("1 entity, 1 worker (interleaved)", stage, "16", two[f"one_{stage}"], empty16)

    rss = [
        online["rss_start_mib"],
        *(online[f"rss_after_{s}_mib"] for s in ("batch", "shadow", "online", "online_only")),
        *online["sustained_shadow_rss_mib"],
    ]
    if online.get("rounds"):
        lines += [
            "",
            f"The 1-connection and 16-connection rows of each stage and of the peer are the median of "
            f"{online['rounds']} interleaved rounds (every stage, then the peer, then again), and so are the "
            "100-entity rows (ours, then the peer's, in turn); each round's p99 ms and req/s, and the CPU seconds the "
            "hypervisor gave to other guests during it (steal, both cores):",
            "",
        ]

        def each(rounds: list[dict[str, Any]]) -> str:
            return "; ".join(
                f"{r['p99_ms']:.2f} ms, {r['rps']:,.0f} req/s, steal {r.get('steal_s', 0):.2f} s"
                + (f", rolled back to {r['rolled_back_to']}" if r.get("rolled_back_to") else "")
                for r in rounds
            )

        for name in (*(f"single_{s}" for s in STAGES), "peer"):
            for c in (1, 16):
                label = "peer" if name == "peer" else name.removeprefix("single_")
                lines.append(
                    f"- {label}, {c} connection{'s' if c > 1 else ''}: {each(get(online[name], c).get('rounds', []))}."
                )
        peer = online.get("peer", {})
        for c in (1, 4):
            plural = "s" if c > 1 else ""
            hundred_rounds = get(online["hundred_online"], c).get("rounds")
            if hundred_rounds:
                lines.append(f"- 100 entities, online, {c} connection{plural}: {each(hundred_rounds)}.")
            if "hundred_online_held" in online:
                held_rounds = get(online["hundred_online_held"], c).get("rounds", [])
                lines.append(f"- 100 entities, online, guardrail lifted, {c} connection{plural}: {each(held_rounds)}.")
            peer_rounds = get(peer, f"hundred_{c}").get("rounds") if f"hundred_{c}" in peer else None
            if peer_rounds:
                lines.append(f"- 100 entities, peer, {c} connection{plural}: {each(peer_rounds)}.")
    lines += [
        "",
        f"Bare Redis round trip (floor of the feature read): p50 {redis['p50_ms']:.3f} ms, "
        f"p99 {redis['p99_ms']:.3f} ms.",
    ]
    reads = online.get("feature_reads")
    if reads:
        lines += [
            "",
            "Feature reads, in the bench process (`RedisFeatureStore.read` of the use case's batch features, against a "
            "bare `MGET` of the same records, nothing decoded; 5,000 reads each, in alternating blocks of 500):",
            "",
            "| entities | read p50 / p99 ms | `MGET` floor p50 / p99 ms |",
            "|---|---|---|",
        ]
        for size in (1, 100):
            ours, floor = reads[f"store_{size}"], reads[f"mget_{size}"]
            lines.append(
                f"| {size} | {ours['p50_ms']:.3f} / {ours['p99_ms']:.3f} | "
                f"{floor['p50_ms']:.3f} / {floor['p99_ms']:.3f} |"
            )
    shadow_log = online.get("shadow_log")
    if shadow_log:
        cpu = {name: statistics.median(values) for name, values in shadow_log["cpu_us_per_record"].items()}
        each = {name: ", ".join(f"{v:.0f}" for v in values) for name, values in shadow_log["cpu_us_per_record"].items()}
        if "bare_grouped" in cpu:  # results since the logger sends several records a message
            lines += [
                "",
                f"The shadow log's CPU per record, in the bench process ({shadow_log['records']:,} records a row, "
                "sent and acknowledged, rows interleaved; medians, each round in brackets): records as the "
                f"comparison logs them (`wire_record`, up to 100 a Kafka message) {cpu['encoded']:.0f} µs "
                f"({each['encoded']})"
                + (
                    f", a 100-entity request's at once (`RequestRecords`, `log_many`) {cpu['requests']:.0f} µs "
                    f"({each['requests']})"
                    if "requests" in cpu
                    else ""
                )
                + f", one a message {cpu['one_per_message']:.0f} µs ({each['one_per_message']}); "
                f"built as the model (`ShadowRecord`) {cpu['model']:.0f} µs ({each['model']}). The floors, a bare "
                "kafka-python producer sending the same bytes encoded and grouped beforehand: as the logger's "
                f"messages {cpu['bare_grouped']:.0f} µs ({each['bare_grouped']}), "
                f"{cpu['encoded'] / cpu['bare_grouped']:.2f}× it; one record a message "
                f"{cpu['bare_producer']:.0f} µs ({each['bare_producer']}).",
            ]
        else:
            lines += [
                "",
                f"The shadow log's CPU per record, in the bench process ({shadow_log['records']:,} records a row, "
                "sent and acknowledged, rows interleaved; medians, each round in brackets): records as the "
                f"comparison logs them (`wire_record`) {cpu['encoded']:.0f} µs ({each['encoded']}); built as the "
                f"model (`ShadowRecord`) {cpu['model']:.0f} µs ({each['model']}); the floor, a bare kafka-python "
                f"producer sending the same bytes encoded beforehand, {cpu['bare_producer']:.0f} µs "
                f"({each['bare_producer']}): {cpu['encoded'] / cpu['bare_producer']:.2f}× the floor.",
            ]
    lines += ["", "Against the targets of this run (issue 14; one worker):", ""]
    lines += _targets(online, get)
    lines.append(
        f"- worker RSS ≤ 300 MiB and flat: {', '.join(f'{r:.0f}' for r in rss)} MiB (at start, after the batch, "
        "shadow, online and online_only rows, then after each of three sustained 16-connection shadow runs)"
        + (
            f"; its shadow comparison process: {online['shadow_process_rss_mib']:.0f} MiB."
            if "shadow_process_rss_mib" in online
            else "."
        )
    )
    if "shadow_sent" in online:
        lines.append(
            f"- shadow records sent {online['shadow_sent']:,.0f}; comparisons skipped because the comparison "
            f"process was behind (bounded queue, counted): {online['shadow_skipped']:,.0f}."
        )
    if details:
        lines += ["", "Why the guardrail rolled a row back (its audit entry):", "", *details]
    else:
        lines += ["", "The guardrail rolled no row back."]
    lines += [
        "",
        "Reading these numbers: `online_only` is the online critical path alone (features + model, no lookup, no",
        "shadow log). `shadow` and `online` also hand each request to the comparison (the other path, a shadow",
        "record, the Kafka producer), which runs in a process of its own, fed through a queue bounded in jobs and",
        "in entities. Concurrent requests share one feature read and one model call (online/serving/batcher.py). A row",
        "marked → shadow ended in `shadow`: the use case's guardrail (`max_p99_latency_ms` of its YAML policy, at",
        "least 10 slow calls) measured the online path over its limit under that load and rolled the flag back,",
        "as it would in production.",
        "",
        "The peer is bench/peer.py: the service a team would write by hand (FastAPI `def` endpoint, redis-py HMGET",
        "of one hash per entity in the same Redis, a field per model feature; pipelined for several entities;",
        "scikit-learn `predict_proba` on the same model file, one uvicorn worker, OMP_NUM_THREADS=1), driven by the",
        "same wrk settings right after our row. Its hashes hold the values `migrate` scores for the same entities at",
        "the serving moment, the real-time ones included, ready-made: it evaluates no window per request, so it does",
        "less work per entity than `migrate serve`.",
        "",
        *_realtime_prose(online),
        "The 2-worker rows run `migrate serve",
        "--workers 2` (prometheus-client's multiprocess mode) beside the 1-worker server, rows interleaved; on",
        "this 2-core machine wrk takes one core, so a second worker has little to gain here.",
    ]
    return lines
