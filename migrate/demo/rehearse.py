"""``migrate rehearse``: the demo's live machinery for any use case, on its own history.

One simulated clock runs `migrate stream`, `migrate serve`, `migrate sink` and `migrate events replay` as processes
(`migrate.demo.live.LiveDay`), the events the windows hold at the start published first (`events replay
--warm-up`: they do not start empty); every past request (a table of them, or the use case's spine) is sent to the
service at its own simulated instant, with its context; the nightly batch and the materialization run when the
clock passes their schedule; then the comparator gives its verdict. Everything lives in
``<state_dir>/rehearsals/<usecase>/`` — its own lookup store and flags (SQLite), embedded Redis and broker,
the models pinned as a backtest pins them — and reads the project's offline store: the live stores are never
touched, configured or not (`rehearsal_settings`). The embedded services it started are stopped at the end.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from croniter import croniter
from pydantic import SecretStr

from comparisons.comparison import Comparison, compare
from migrate.backtest.runner import check_span, label_stream, pin_models
from migrate.batch.event_history import history_around
from migrate.batch.offline_store import open_offline, prediction_requests
from migrate.batch.schedule import interval_ending
from migrate.batch.steps import Interval, run_batch
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.demo.live import LiveDay
from migrate.devservices.redis_server import resolve_redis_url, stop_redis
from migrate.devservices.shared_broker import stop_shared_broker
from migrate.errors import BacktestError
from migrate.label_progress import read_progress, write_progress
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.features.materialize import materialize_active

log = logging.getLogger(__name__)

__all__ = ["Rehearsal", "Rehearser", "Request", "TrafficReport", "rehearsal_settings", "run_rehearsal"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Request:
    """One request of the rehearsal: its simulated instant and the body posted to the predict endpoint."""

    due: datetime
    body: dict[str, Any]


@dataclass
class TrafficReport:
    """What was asked, and which path answered each entity."""

    requests: int = 0
    entities: int = 0
    errors: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, other: TrafficReport) -> None:
        self.requests += other.requests
        self.entities += other.entities
        self.errors += other.errors
        for source, n in other.sources.items():
            self.sources[source] = self.sources.get(source, 0) + n


Tick = Callable[[datetime, TrafficReport], None]  # (simulated now, this phase's traffic so far)


class Rehearser:
    """Drives a `LiveDay`: each request posted at its simulated instant, and the batch DAG's steps (then the
    materialization) run for every nightly tick the clock passes, beside the traffic, as the scheduler would.

    ``with Rehearser(day, usecase, settings, redis_url, nights_until=T) as r: r.send(requests, on_tick)`` — any
    number of phases (the demo moves the flag between them); `finish` awaits the nights, lets the last labels
    arrive and stops the services. A night that fails fails the rehearsal with its own error.
    """

    def __init__(
        self, day: LiveDay, usecase: UseCase, settings: Settings, redis_url: str, *, nights_until: datetime
    ) -> None:
        self.day, self.usecase, self.settings, self.redis_url = day, usecase, settings, redis_url
        ticks = croniter(usecase.batch.schedule, day.start)
        self._ticks: list[datetime] = []  # the scheduler's ticks in [day.start, nights_until)
        while (tick := ticks.get_next(datetime)) < nights_until:
            self._ticks.append(tick)
        self._nightly = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rehearsal-night")
        self._runs: list[Future[None]] = []
        self._client = httpx.Client(timeout=10)
        self.url = f"{day.base}/v1/models/{usecase.name}/predict"
        self.traffic = TrafficReport()

    def __enter__(self) -> Rehearser:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()
        self._nightly.shutdown(wait=True, cancel_futures=True)

    def _due_nights(self) -> None:
        while self._ticks and self.day.now() >= self._ticks[0]:
            night = self._ticks.pop(0)
            previous = croniter(self.usecase.batch.schedule, night).get_prev(datetime)
            self._runs.append(
                self._nightly.submit(_night, self.usecase, self.settings, Interval(previous, night), self.redis_url)
            )

    def _until(self, due: datetime) -> None:
        """Sleep until the simulated clock reaches `due`, starting each nightly run as its tick passes (a night
        without traffic still gets its batch run on time)."""
        while True:
            self._due_nights()
            wake = min(due, self._ticks[0]) if self._ticks else due
            wait = (wake - self.day.now()).total_seconds() / self.day.speed
            if wait > 0:
                time.sleep(wait)
            if wake == due:
                return

    def _post(self, body: dict[str, Any], report: TrafficReport) -> None:
        report.requests += 1
        report.entities += len(body.get("entities", ()))
        try:
            answer = self._client.post(self.url, json=body)
        except httpx.HTTPError:
            report.errors += 1
            return
        if answer.status_code != 200:
            report.errors += 1
            return
        for prediction in answer.json().get("predictions", ()):
            source = str(prediction.get("source", "?"))
            report.sources[source] = report.sources.get(source, 0) + 1

    def send(self, requests: Iterable[Request], on_tick: Tick | None = None) -> TrafficReport:
        """Post each request at its simulated instant (at once when the clock is already past it); returns this
        phase's traffic, also added to `traffic`."""
        report = TrafficReport()
        last_tick = 0.0
        for request in requests:
            self._until(request.due)
            self._post(request.body, report)
            if on_tick is not None and time.monotonic() - last_tick >= 0.5:
                self.day.check_alive()
                on_tick(self.day.now(), report)
                last_tick = time.monotonic()
        self._due_nights()
        if on_tick is not None:
            on_tick(self.day.now(), report)
        self.traffic.add(report)
        return report

    def finish(self, labels_by: datetime) -> int:
        """Run the range's remaining nights and await them all (returns how many ran), let the events flow until
        the last requests' labels have arrived, give the sink time to flush, and stop the sink, the service and
        the stream processor."""
        while self._ticks:  # the nights after the last request, still inside the range
            self._until(self._ticks[0])
            self._due_nights()
        for run in self._runs:
            run.result(timeout=300)
        while not self.day.replay_done() and self.day.now() < labels_by + timedelta(minutes=5):
            time.sleep(0.5)
        time.sleep(5)  # the sink flushes every 2 s
        self.day.stop(("sink", "serve", "stream"))
        return len(self._runs)


@dataclass
class Rehearsal:
    """What one rehearsal did, and the comparator's result."""

    settings: Settings
    traffic: TrafficReport = field(default_factory=TrafficReport)
    nights: int = 0
    comparison: Comparison | None = None


def rehearsal_settings(settings: Settings, usecase: UseCase) -> Settings:
    """The rehearsal's own state dir, SQLite lookup store and flags, embedded Redis and broker, reading the project's
    offline store.

    Never the configured Redis or Kafka, even under the production profile: a rehearsal writes window states and
    batch features under the use case's live keys and publishes past events to its live topic, so on the team's
    services it would overwrite what serving reads and feed history to the live stream. Its stand-ins are its
    own by design (the profile's refusal of stand-ins is for the live stores).
    """
    state = settings.state_dir / "rehearsals" / usecase.name
    return settings.model_copy(
        update={
            "state_dir": state,
            "offline_store": settings.offline_store_path,
            "sql_url": SecretStr(f"sqlite:///{state / 'lookup.db'}"),
            "redis_url": None,
            "kafka_bootstrap": None,
            "kafka_bootstrap_file": None,
            "profile": "dev",
        }
    )


def _night(usecase: UseCase, settings: Settings, interval: Interval, redis_url: str) -> None:
    """The batch DAG's steps for one night, then the materialization of its batch features."""
    run_batch(usecase, settings, interval, f"rehearsal__{interval.key}", workers=1)
    materialize_active(usecase, settings, redis_url)


def _labels_known_through(usecase: UseCase, settings: Settings, labels_by: datetime) -> None:
    """Record that the label stream is known up to `labels_by` (the replay's end) when it is: the history goes on
    after it, so the replay published every event before it, and the sink read up to the newest of them. A live
    stream's watermark moves on with its next event; a replay's stops at its last one, and a label window that
    ends in a quiet stretch before `labels_by` would stay pending (the flight trial: 54 of 143 requests, their
    windows closing between 00:31, the last departure, and the replay's end at 03:00)."""
    root = settings.labels_dir / usecase.name
    with open_offline(settings.offline_store_path) as con:
        newest, goes_on = history_around(con, usecase, labels_by, stream=label_stream(usecase))
    if not goes_on:
        return  # the history ends before `labels_by`: what comes after it is not known
    read = read_progress(root)
    if newest is not None and (read is None or read < newest):
        log.warning(
            "the label sink read the label stream up to %s, not its last replayed event at %s: requests whose "
            "label window ends after that stay pending",
            "nothing" if read is None else read.isoformat(),
            newest.isoformat(),
        )
        return
    write_progress(root, "rehearsal", labels_by)


def _requests(
    settings: Settings, usecase: UseCase, span: tuple[datetime, datetime], table: str | None, column: str
) -> list[Request]:
    """One request per past request (or spine row), with its entity and its context."""
    start, until = span
    with open_offline(settings.offline_store_path) as con:
        rows: list[dict[str, Any]] = prediction_requests(
            con, usecase, start, until, table=table, time_column=column
        ).to_pylist()
    if not rows:
        raise BacktestError(
            f"no past request of {usecase.name!r} in {start.isoformat()} → {until.isoformat()}",
            fix="widen --from/--until to a range the offline store holds, or pass --requests TABLE",
        )
    keys = usecase.entity.key_names
    context = [c.name for c in usecase.context]
    return [
        Request(
            row["prediction_time"],
            {
                "entities": [{k: row[k] for k in keys}],
                "context": {c: row[c] for c in context if row.get(c) is not None},
            },
        )
        for row in rows
    ]


def run_rehearsal(
    usecase: UseCase,
    settings: Settings,
    start: datetime,
    until: datetime,
    *,
    speed: float,
    requests_table: str | None = None,
    time_column: str = "request_time",
    progress: Progress | None = None,
) -> Rehearsal:
    """Replay [start, until) live on one simulated clock, then compare (see the module docstring)."""
    check_span("rehearsal", start, until)
    reh = rehearsal_settings(settings, usecase)
    reh.ensure_state_dir()
    for previous in (reh.shadow_dir / usecase.name, reh.labels_dir / usecase.name):
        # An earlier rehearsal's shadow log and labels would be judged with this one's: each starts empty.
        shutil.rmtree(previous, ignore_errors=True)
    pin_models(settings, reh, usecase, start)
    asked = _requests(reh, usecase, (start, until), requests_table, time_column)
    redis_url, _ = resolve_redis_url(reh)
    result = Rehearsal(settings=reh)
    flags = FlagStore.from_settings(reh)
    try:
        flags.ensure_schema()
        flags.set(usecase.name, Stage.SHADOW, None, actor="rehearsal", reason="rehearsal", source="cli", force=True)
    finally:
        flags.close()
    _night(usecase, reh, interval_ending(usecase.batch.schedule, start), redis_url)
    labels_by = until + parse_duration(usecase.label.available_after)
    extra = {
        "MIGRATE_SQL_URL": f"sqlite:///{reh.state_dir / 'lookup.db'}",
        "MIGRATE_OFFLINE_STORE": str(reh.offline_store_path),
        "MIGRATE_USECASES_DIR": str(reh.usecases_dir),
        "MIGRATE_PROJECT_DIR": str(reh.project_dir),
    }

    def tick(_: datetime, report: TrafficReport) -> None:
        if progress is not None:
            progress("requests sent at their simulated time", report.requests, len(asked))

    try:
        with (
            LiveDay(reh, usecase, start, speed, labels_by, extra_env=extra, warm_up=True) as day,
            Rehearser(day, usecase, reh, redis_url, nights_until=until) as driver,
        ):
            result.traffic = driver.send(asked, tick)
            result.nights = 1 + driver.finish(labels_by)
        _labels_known_through(usecase, reh, labels_by)
        result.comparison = compare(usecase, reh)  # its grace scaled by the clock LiveDay recorded
    finally:
        stop_shared_broker(reh)
        stop_redis(reh)
    return result
