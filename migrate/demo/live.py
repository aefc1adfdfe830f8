"""The demo's live day: the real services as separate processes, on one simulated clock, and shopper traffic.

`LiveDay` starts what production runs — `migrate stream` (real-time features), `migrate serve` (the service),
`migrate sink` (shadow log and labels into Parquet) and `migrate events replay` (the day's scan events into Kafka)
— against the state dir's embedded broker and Redis. All of them share one simulated clock: the day replays
`speed` times faster than the wall, so request times, feature times and label times line up.
"""

from __future__ import annotations

import bisect
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from migrate.batch.offline_store import open_offline, utc_naive
from migrate.devservices.broker import free_port
from migrate.devservices.redis_server import resolve_redis_url
from migrate.devservices.shared_broker import broker_file, shared_bootstrap
from migrate.errors import MigrateError
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["LiveDay", "Shoppers", "TrafficReport"]


class DemoError(MigrateError):
    """A step of the demo's live day failed."""


class LiveDay:
    """``with LiveDay(...) as day:`` — the services of one simulated day, stopped (and reaped) on exit."""

    def __init__(
        self,
        settings: Settings,
        usecase: UseCase,
        start: datetime,
        speed: float,
        end: datetime,
        *,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.extra_env = extra_env or {}
        self.usecase = usecase
        self.start = start
        self.end = end
        self.speed = speed
        self.logs = settings.state_dir / "demo-logs"

        self.port = free_port()
        self.metrics_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.wall0 = 0.0

    def now(self) -> datetime:
        """The simulated clock every process shares."""
        return self.start + timedelta(seconds=(time.time() - self.wall0) * self.speed)

    def _env(self, redis_url: str, bootstrap: str) -> dict[str, str]:
        return {
            **os.environ,
            "MIGRATE_STATE_DIR": str(self.settings.state_dir),
            "MIGRATE_REDIS_URL": redis_url,
            "MIGRATE_KAFKA_BOOTSTRAP": bootstrap,
            "MIGRATE_KAFKA_BOOTSTRAP_FILE": str(broker_file(self.settings)),  # the shadow log follows a restart
            "MIGRATE_CLOCK_START": self.start.isoformat(),
            "MIGRATE_CLOCK_WALL": repr(self.wall0),
            "MIGRATE_CLOCK_SPEED": repr(self.speed),
            "MIGRATE_SINK_FLUSH_INTERVAL_S": "2",
            "OMP_NUM_THREADS": "1",
            **self.extra_env,
        }

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as out:
            self.processes[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "migrate"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def __enter__(self) -> LiveDay:

        redis_url, _ = resolve_redis_url(self.settings)
        bootstrap = shared_bootstrap(self.settings)
        name = self.usecase.name
        self.wall0 = time.time() + 20  # the day starts once the services are up (they start in well under that)
        env = self._env(redis_url, bootstrap)
        try:
            self._spawn("stream", ["stream", name, "--metrics-port", str(self.metrics_port)], env)
            self._spawn("serve", ["serve", "--port", str(self.port)], env)
            self._spawn("sink", ["sink", name], env)
            self._wait_ready()
            self._spawn(
                "events-replay",
                [
                    "events",
                    "replay",
                    name,
                    "--speed",
                    repr(self.speed),
                    "--from",
                    self.start.isoformat(),
                    "--until",
                    self.end.isoformat(),
                    "--clock-wall",
                    repr(self.wall0),
                ],
                env,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise DemoError(f"`migrate {name}` exited during start-up", fix=f"see {self.logs / name}.log")
            try:
                checks = httpx.get(f"{self.base}/readyz", timeout=2).json().get("checks", {})
            except (httpx.HTTPError, ValueError):
                checks = {}
            # Ready for this use case with its online model; others in usecases/ may be degraded (no model here).
            wanted = (f"usecase:{self.usecase.name}", "feature_store", "flags")
            if checks and all(checks.get(name) == "ok" for name in wanted):
                return
            time.sleep(0.3)
        raise DemoError("`migrate serve` was not ready within 120 s", fix=f"see {self.logs / 'serve.log'}")

    def stream_freshness(self) -> dict[str, float]:
        """Upper bounds of the stream's freshness quantiles (event reaches Kafka → features in Redis, wall clock),
        from the processor's Prometheus histogram."""

        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        buckets: list[tuple[float, float]] = []
        for family in text_string_to_metric_families(text):
            if family.name == "migrate_stream_freshness_seconds":
                buckets = sorted(
                    (float(sample.labels["le"]), sample.value)
                    for sample in family.samples
                    if sample.name.endswith("_bucket")
                )
        total = buckets[-1][1] if buckets else 0.0
        out: dict[str, float] = {"n": total}
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            out[name] = next((bound for bound, count in buckets if total and count >= q * total), float("nan"))
        return out

    def replay_done(self) -> bool:
        process = self.processes.get("events-replay")
        return process is not None and process.poll() is not None

    def check_alive(self) -> None:
        for name in ("stream", "serve", "sink"):
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise DemoError(f"`migrate {name}` stopped unexpectedly", fix=f"see {self.logs / name}.log")

    def stop(self, names: tuple[str, ...] | None = None) -> None:
        for name in names or tuple(self.processes):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class TrafficReport:
    """What the shoppers asked."""

    requests: int = 0
    entities: int = 0
    errors: int = 0
    sources: dict[str, int] = field(default_factory=dict)


class Shoppers:
    """Shopper traffic: people look a product up shortly before they scan it in the store, a few at a time.

    Requests are drawn from the day's own upcoming scan events (the next `lead` of simulated time), plus a share
    of products listed after last night's batch run, which the lookup table cannot know.
    """

    def __init__(
        self,
        usecase: UseCase,
        events: list[tuple[datetime, tuple[Any, ...]]],
        new: list[tuple[Any, ...]],
        *,
        seed: int,
        per_request: int = 4,
    ):
        self.usecase = usecase
        self.times = [t for t, _ in events]
        self.keys = [k for _, k in events]
        self.new = new
        self.rng = random.Random(seed)  # noqa: S311 - a repeatable demo, not a secret
        self.lead = timedelta(minutes=20)
        self.per_request = per_request

    def pick(self, now: datetime) -> list[dict[str, Any]]:
        lo = bisect.bisect_left(self.times, now)
        hi = bisect.bisect_left(self.times, now + self.lead)
        chosen: list[tuple[Any, ...]] = []
        for _ in range(self.rng.randint(1, self.per_request)):
            if self.new and self.rng.random() < 0.05:
                chosen.append(self.rng.choice(self.new))
            elif hi > lo:
                chosen.append(self.keys[self.rng.randrange(lo, hi)])
        names = self.usecase.entity.key_names
        return [dict(zip(names, key, strict=True)) for key in dict.fromkeys(chosen)]

    def run(
        self,
        day: LiveDay,
        until: datetime,
        rate_per_s: float,
        on_tick: Callable[[datetime, TrafficReport], None] | None = None,
    ) -> TrafficReport:
        """Send requests at about `rate_per_s` (wall) until the simulated clock reaches `until`."""

        report = TrafficReport()
        url = f"{day.base}/v1/models/{self.usecase.name}/predict"
        interval = 1.0 / rate_per_s
        last_tick = 0.0
        with httpx.Client(timeout=10) as client:
            while (now := day.now()) < until:
                started = time.monotonic()
                entities = self.pick(now)
                if entities:
                    try:
                        answer = client.post(url, json={"entities": entities})
                        if answer.status_code != 200:
                            report.errors += 1
                        else:
                            for prediction in answer.json()["predictions"]:
                                source = prediction.get("source", "?")
                                report.sources[source] = report.sources.get(source, 0) + 1
                    except httpx.HTTPError:
                        report.errors += 1
                    report.requests += 1
                    report.entities += len(entities)
                if on_tick is not None and started - last_tick >= 0.5:
                    day.check_alive()
                    on_tick(now, report)
                    last_tick = started
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        return report


def day_events(settings: Settings, usecase: UseCase, start: datetime, end: datetime) -> list[Any]:
    """The day's scan events as (time, key), in time order, for the shoppers to draw from."""

    assert usecase.realtime_features is not None
    keys = ", ".join(usecase.entity.key_names)
    column = usecase.realtime_features.event_time_column
    with open_offline(settings.offline_store_path) as con:
        rows = con.execute(
            f"SELECT {column}, {keys} FROM {usecase.realtime_features.event_table} "
            f"WHERE {column} >= ? AND {column} < ? ORDER BY {column}",
            [utc_naive(start), utc_naive(end)],
        ).fetchall()
    return [(row[0].replace(tzinfo=UTC), tuple(row[1:])) for row in rows]


def new_entities(settings: Settings, usecase: UseCase, cutoff: datetime) -> list[tuple[Any, ...]]:
    """Entities listed after the batch cutoff: the lookup table has no row for them."""

    source = usecase.entity.source
    keys = ", ".join(usecase.entity.key_names)
    with open_offline(settings.offline_store_path) as con:
        rows = con.execute(
            f"SELECT {keys} FROM {source.table} WHERE {source.created_at_column} > ? ORDER BY {keys}",
            [utc_naive(cutoff)],
        ).fetchall()
    return [tuple(row) for row in rows]
