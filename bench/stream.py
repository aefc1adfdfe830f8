"""Stream processor benchmark: events/s per process vs the raw consume rate, freshness at a fixed rate, RSS.

In one run, on the embedded broker and an embedded Redis:

1. N synthetic scan events (default 5,000,000 over 20,000 store × product pairs and five simulated days) are
   published flat out (not timed);
2. the floor: a bare kafka-python consumer reads all N (no parsing) — the most any processor here could do;
3. the processor (its own process) computes the real-time features of all N until caught up: events/s from its
   first event to its last checkpoint, and its RSS sampled along the way (flat: window state is evicted);
4. freshness: a publisher process sends events stamped "now" at a fixed 5,000 events/s for 20 s while a
   processor runs; freshness = its checkpoint time − the event's broker timestamp, per event (p50/p99).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENTITIES = (100, 200)  # stores × products
SPAN = timedelta(days=5)
RATE = 5_000
RATE_SECONDS = 20


def _settings(state: Path) -> Any:
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

    return get_settings(state_dir=state, project_dir=ROOT)


def _usecase(name: str) -> Any:
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures

    return Registry(ROOT / "usecases").get("item_availability").model_copy(update={"name": name})


def _events(n: int, start: datetime) -> Any:
    """N events in time order (event dicts made lazily, so memory stays small)."""
    import numpy as np  # noqa: PLC0415 - a suite imports only what it measures

    rng = np.random.default_rng(11)
    stores = rng.integers(0, ENTITIES[0], n) + 1000
    products = rng.integers(0, ENTITIES[1], n) + 20000
    found = rng.random(n) < 0.8
    step = SPAN.total_seconds() / n
    base = start.timestamp()
    for i in range(n):
        yield {
            "event_id": f"b-{i:09d}",
            "event_time": datetime.fromtimestamp(base + i * step, UTC),
            "store_id": int(stores[i]),
            "product_id": int(products[i]),
            "found": bool(found[i]),
        }


def _publisher(bootstrap: str, usecase: Any, settings: Any) -> Any:
    from online.stream.publisher import EventPublisher  # noqa: PLC0415 - a suite imports only what it measures

    return EventPublisher.for_usecase(usecase, bootstrap, topic_prefix=settings.events_topic_prefix, timeout_s=30)


def _floor(bootstrap: str, topic: str, n: int) -> float:
    from online.kafka import KafkaConsumer  # noqa: PLC0415 - a suite imports only what it measures

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", max_poll_records=5000, fetch_max_wait_ms=50
    )
    seen, started = 0, None
    try:
        while seen < n:
            for messages in consumer.poll(timeout_ms=500).values():
                started = started or time.perf_counter()
                seen += len(messages)
    finally:
        consumer.close()
    assert started is not None
    return seen / (time.perf_counter() - started)


def _run_processor(args: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.stream", "processor", json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"stream processor bench failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def processor_main(args: dict[str, Any]) -> None:
    """In its own process: run the processor, sample its RSS, print a JSON report."""
    import numpy as np  # noqa: PLC0415 - a suite imports only what it measures
    import psutil  # noqa: PLC0415 - a suite imports only what it measures

    from bench.memory import peak_rss_mib  # noqa: PLC0415 - a suite imports only what it measures
    from online.stream.processor import StreamProcessor  # noqa: PLC0415 - a suite imports only what it measures

    settings = _settings(Path(args["state"]))
    usecase = _usecase(args["usecase"])
    processor = StreamProcessor(
        settings, usecase, bootstrap=args["bootstrap"], redis_url=args["redis_url"], group_id=args.get("group_id")
    )
    first: list[float] = []
    handle = processor.handle_fetch

    def timed(messages: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        handle(messages)

    processor.handle_fetch = timed  # type: ignore[method-assign]
    samples: list[tuple[int, float]] = []
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append((processor.report.events, me.memory_info().rss / 2**20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report = processor.run(until_caught_up=args.get("until_caught_up", True), max_seconds=args.get("max_seconds"))
    finished = time.perf_counter()
    stop.set()
    fresh = np.asarray(report.freshness_s, dtype=np.float64) * 1000
    out = {
        "events": report.events,
        "dead_letters": report.dead_letters,
        "checkpoints": report.checkpoints,
        "seconds": finished - first[0] if first else 0.0,
        "events_per_s": report.events / (finished - first[0]) if first else 0.0,
        "rss_mib": samples,
        "peak_rss_mib": peak_rss_mib(),
        "freshness_ms": {
            "p50": float(np.percentile(fresh, 50)) if fresh.size else None,
            "p99": float(np.percentile(fresh, 99)) if fresh.size else None,
            "max": float(fresh.max()) if fresh.size else None,
            "n": int(fresh.size),
        },
    }
    print(json.dumps(out), flush=True)


def publisher_main(args: dict[str, Any]) -> None:
    """In its own process: send events stamped now at a fixed rate."""
    settings = _settings(Path(args["state"]))
    usecase = _usecase(args["usecase"])
    publisher = _publisher(args["bootstrap"], usecase, settings)
    rate, seconds = args["rate"], args["seconds"]
    started = time.perf_counter()
    sent = 0
    try:
        while sent < rate * seconds:
            due = int((time.perf_counter() - started) * rate) + 1
            while sent < min(due, rate * seconds):
                publisher.send(
                    {
                        "event_id": f"r-{sent:09d}",
                        "event_time": datetime.now(UTC),
                        "store_id": 1000 + sent % ENTITIES[0],
                        "product_id": 20000 + (sent // ENTITIES[0]) % ENTITIES[1],
                        "found": sent % 5 != 0,
                    }
                )
                sent += 1
            time.sleep(0.001)
        publisher.producer.flush(timeout=30)
    finally:
        publisher.close()
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - started}), flush=True)


def stream_suite() -> dict[str, Any]:
    """All of the above, in one run."""
    from migrate.devservices.broker import start_broker  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.devservices.redis_server import start_redis  # noqa: PLC0415 - a suite imports only what it measures

    n = int(os.environ.get("MIGRATE_BENCH_STREAM_EVENTS", "5000000"))
    state = Path(tempfile.mkdtemp(prefix="migrate-bench-stream-"))
    settings = _settings(state)
    broker = start_broker(settings)
    redis_server = start_redis(settings)
    try:
        usecase = _usecase("bench_stream")
        publisher = _publisher(broker.bootstrap, usecase, settings)
        print(f"stream: publishing {n:,} events …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            publisher.publish(_events(n, datetime(2026, 11, 1, tzinfo=UTC)), time_field="event_time")
        finally:
            publisher.close()
        publish_s = time.perf_counter() - started
        print(f"  published in {publish_s:.0f} s; raw consume floor …", file=sys.stderr, flush=True)
        floor = _floor(broker.bootstrap, publisher.topic, n)
        print(f"  floor {floor:,.0f} events/s; the processor …", file=sys.stderr, flush=True)
        common = {"state": str(state), "bootstrap": broker.bootstrap, "redis_url": redis_server.url}
        throughput = _run_processor({**common, "usecase": "bench_stream"})
        # The cost's growth: a tenth of the events (same keys and days, so a tenth of the density), its own topic.
        small_n = n // 10
        print(f"  processor {throughput['events_per_s']:,.0f} events/s; {small_n:,} events …", file=sys.stderr)
        small_publisher = _publisher(broker.bootstrap, _usecase("bench_stream_small"), settings)
        try:
            small_publisher.publish(_events(small_n, datetime(2026, 11, 1, tzinfo=UTC)), time_field="event_time")
        finally:
            small_publisher.close()
        small = _run_processor({**common, "usecase": "bench_stream_small"})
        print(f"  processor {throughput['events_per_s']:,.0f} events/s; 2 processes …", file=sys.stderr, flush=True)
        # The same events again, by two processes of one consumer group: each takes two of the four partitions.
        redis_db1 = redis_server.url + ("&" if "?" in redis_server.url else "?") + "db=1"
        with ThreadPoolExecutor(max_workers=2) as pool:
            # Same topic, another group, and checkpoints in Redis database 1: they start from the first event.
            two = {**common, "usecase": "bench_stream", "group_id": "bench-two-processes", "redis_url": redis_db1}
            pair = list(pool.map(_run_processor, [two] * 2))
        print(f"  freshness at {RATE}/s …", file=sys.stderr, flush=True)
        fixed = {**common, "usecase": "bench_fresh"}
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.stream",
                "processor",
                json.dumps({**fixed, "until_caught_up": False, "max_seconds": RATE_SECONDS + 15}),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        ) as proc:
            time.sleep(8)  # the processor joins its group before the clock starts
            sent = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.stream",
                    "publisher",
                    json.dumps({**fixed, "rate": RATE, "seconds": RATE_SECONDS}),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            out, _ = proc.communicate(timeout=120)
        fresh = json.loads(out.strip().splitlines()[-1])
        published = json.loads(sent.stdout.strip().splitlines()[-1])
    finally:
        redis_server.stop()
        broker.stop()
    return {
        "events": n,
        "entities": ENTITIES[0] * ENTITIES[1],
        "publish_s": publish_s,
        "floor_events_per_s": floor,
        "processor": throughput,
        "small": {"events": small_n, "processor": small},
        # Both processes' events over the longer one's time from its first event to caught up.
        "two_processes": {
            "events": [run["events"] for run in pair],
            "seconds": [run["seconds"] for run in pair],
            "events_per_s": sum(run["events"] for run in pair) / max(run["seconds"] for run in pair),
        },
        "fixed_rate": {**fresh, "rate": RATE, "seconds": RATE_SECONDS, "sent": published},
    }


def render(result: dict[str, Any]) -> list[str]:
    """The stream section of docs/benchmarks.md."""
    p = result["processor"]
    rss = p["rss_mib"]
    marks = [rss[int(len(rss) * f)] for f in (0.1, 0.5)] + [rss[-1]] if rss else []
    fixed = result["fixed_rate"]
    f = fixed["freshness_ms"]
    lines = [
        "## Stream processor (real-time features)",
        "",
        f"{result['events']:,} scan events over {result['entities']:,} store × product pairs (five simulated days),",
        "on the embedded Tansu broker (4 partitions) and an embedded Redis; one processor process, then the same",
        "events again by two processes of one consumer group (two partitions each; on this 2-core machine they",
        "share the cores with the broker and Redis).",
        "",
        "| measure | value | target |",
        "|---|---:|---:|",
        f"| raw consume floor (bare kafka-python consumer) | {result['floor_events_per_s']:,.0f} events/s | |",
        f"| processor: validate + windows + checkpoints to Redis | {p['events_per_s']:,.0f} events/s | ≥ 25,000 |",
        f"| processor ÷ floor | {p['events_per_s'] / result['floor_events_per_s']:.2f} | |",
        *(
            [
                f"| 2 processes in one group, together ({' + '.join(f'{e:,}' for e in two['events'])} events) "
                f"| {two['events_per_s']:,.0f} events/s | |",
                f"| 2 processes ÷ 1 process | {two['events_per_s'] / p['events_per_s']:.2f} | |",
            ]
            if (two := result.get("two_processes"))
            else []
        ),
        f"| freshness p50 at {fixed['rate']:,} events/s | {f['p50']:.0f} ms | |",
        f"| freshness p99 at {fixed['rate']:,} events/s | {f['p99']:.0f} ms | ≤ 300 ms |",
        "",
        "Freshness is per event: the processor's checkpoint (features visible in Redis) minus the event's broker",
        f"timestamp, over {f['n']:,} events sent at a fixed rate for {fixed['seconds']} s.",
    ]
    if small := result.get("small"):
        sp = small["processor"]
        lines += [
            "",
            "Growth (one process, each run in a process of its own; peak RSS is the processor's): "
            f"{small['events']:,} events took {sp['seconds']:.1f} s ({sp['events_per_s']:,.0f} events/s), peak RSS "
            f"{sp['peak_rss_mib']:.0f} MiB; {result['events']:,} took {p['seconds']:.1f} s, peak RSS "
            f"{p['peak_rss_mib']:.0f} MiB: {result['events'] / small['events']:.0f}× the events took "
            f"{p['seconds'] / sp['seconds']:.1f}× the time and {p['peak_rss_mib'] / sp['peak_rss_mib']:.2f}× the "
            "peak RSS.",
        ]
    if marks:
        lines += [
            "",
            "Processor RSS while it consumed the "
            + f"{result['events']:,} events (events done → MiB): "
            + ", ".join(f"{e:,} → {m:.0f}" for e, m in marks)
            + ".",
        ]
    return lines


if __name__ == "__main__":
    role, payload = sys.argv[1], json.loads(sys.argv[2])
    {"processor": processor_main, "publisher": publisher_main}[role](payload)
