"""The live day of the demo and of `migrate rehearse`: the real services as separate processes, on one simulated clock.

`LiveDay` starts what production runs — `migrate stream` (real-time features), `migrate serve` (the service),
`migrate sink` (shadow log and labels into Parquet) and `migrate events replay` (the day's events into Kafka) —
against the state dir's embedded broker and Redis; `migrate.demo.rehearse.Rehearser` drives it. All of them
share one simulated clock: the day replays `speed` times faster than the wall, so request times, feature times
and label times line up.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from migrate.batch.event_history import warm_up_events
from migrate.batch.offline_store import open_offline
from migrate.clock import record_speed
from migrate.devservices.broker import free_port
from migrate.devservices.redis_server import resolve_redis_url
from migrate.devservices.shared_broker import broker_file, shared_bootstrap
from migrate.errors import MigrateError
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["LiveDay"]

log = logging.getLogger(__name__)

HEAD_START_S = 20.0  # the day starts this long after the services are spawned (they start in well under that)
# With a warm-up the stream must also join its group and apply the warm-up's events before the day starts: joining
# took 13 to 20 s on a loaded 2-core machine.
WARM_UP_HEAD_START_S = 45.0


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
        warm_up: bool = False,
    ) -> None:
        self.settings = settings
        self.extra_env = extra_env or {}
        self.warm_up = warm_up  # `events replay --warm-up`: the windows hold their history when the day starts
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

    @property
    def skew_grace(self) -> timedelta:
        """The feature-skew check's grace on this clock: the stream lags in wall-clock time, which the simulated
        clock runs `speed` times faster than. Comparisons derive the same from the speed `record_clock` leaves."""
        return self.usecase.cutover_policy.skew_grace * self.speed

    def record_clock(self) -> None:
        """Record this day's clock speed beside the use case's shadow log (`migrate.clock.record_speed`): every
        comparison of the log, the demo's and a rehearsal's own and a later `migrate gate` or `migrate report` on
        the state dir alike, then judges it with `skew_grace`."""
        record_speed(self.settings.shadow_dir / self.usecase.name, self.speed)

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
        self.record_clock()
        redis_url, _ = resolve_redis_url(self.settings)
        bootstrap = shared_bootstrap(self.settings)
        name = self.usecase.name
        self.wall0 = time.time() + (WARM_UP_HEAD_START_S if self.warm_up else HEAD_START_S)
        env = self._env(redis_url, bootstrap)
        replay = [
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
            "--warm-up" if self.warm_up else "--no-warm-up",
        ]
        try:
            self._spawn("stream", ["stream", name, "--metrics-port", str(self.metrics_port)], env)
            if self.warm_up:
                # At once: the warm-up's events are due before the day starts, and the stream reads the topic from
                # its start, so they are in the windows even when the service is slow to come up.
                self._spawn("events-replay", replay, env)
            self._spawn("serve", ["serve", "--port", str(self.port)], env)
            self._spawn("sink", ["sink", name], env)
            self._wait_ready()
            if self.warm_up:
                self._await_warm_up()
            else:
                self._spawn("events-replay", replay, env)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                finished = name == "events-replay" and process.poll() == 0  # a short replay may be done already
                if process.poll() is not None and not finished:
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

    def _await_warm_up(self) -> None:
        """Wait until the stream has applied every warm-up event, or the day starts; say so if it has not."""
        with open_offline(self.settings.offline_store_path) as con:
            expected = sum(1 for _ in warm_up_events(con, self.usecase, self.start))
        applied = 0.0
        while time.time() < self.wall0:
            applied = self._stream_counter("migrate_stream_events")
            if applied >= expected:
                return
            time.sleep(0.2)
        log.warning(
            "the stream had applied %d of the %d warm-up events when the day started: the first requests' windows "
            "miss some history (it started slowly: a loaded machine)",
            applied,
            expected,
        )

    def _stream_counter(self, family_name: str) -> float:
        """A counter of the stream processor's Prometheus metrics (0 until it answers)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == family_name
            for sample in family.samples
            if sample.name.endswith("_total")
        )

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
