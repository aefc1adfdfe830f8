"""``migrate rehearse``: the demo's live machinery for any use case, on its own history.

One simulated clock runs `migrate stream`, `migrate serve`, `migrate sink` and `migrate events replay` as processes
(`migrate.demo.live.LiveDay`); every past request (a table of them, or the use case's spine) is sent to the
service at its own simulated instant, with its context; the nightly batch and the materialization run when the
clock passes their schedule; then the comparator gives its verdict. Everything lives in
``<state_dir>/rehearsals/<usecase>/`` — its own lookup store and flags (SQLite), embedded Redis and broker unless
configured, the models pinned as a backtest pins them — and reads the project's offline store: the live stores
are never touched. The embedded services it started are stopped at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from croniter import croniter
from pydantic import SecretStr

from comparisons.comparison import Comparison, compare
from migrate.backtest.runner import check_span, pin_models
from migrate.batch.offline_store import open_offline, prediction_requests
from migrate.batch.schedule import interval_ending
from migrate.batch.steps import Interval, run_batch
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.demo.live import LiveDay
from migrate.devservices.redis_server import resolve_redis_url, stop_redis
from migrate.devservices.shared_broker import stop_shared_broker
from migrate.errors import BacktestError
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.features.materialize import materialize_active

__all__ = ["Rehearsal", "rehearsal_settings", "run_rehearsal"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Rehearsal:
    """What one rehearsal did, and the comparator's result."""

    settings: Settings
    requests: int = 0
    errors: int = 0
    nights: int = 0
    comparison: Comparison | None = None


def rehearsal_settings(settings: Settings, usecase: UseCase) -> Settings:
    """The rehearsal's own state dir and SQLite lookup store and flags, reading the project's offline store."""
    state = settings.state_dir / "rehearsals" / usecase.name
    return settings.model_copy(
        update={
            "state_dir": state,
            "offline_store": settings.offline_store_path,
            "sql_url": SecretStr(f"sqlite:///{state / 'lookup.db'}"),
        }
    )


def _night(usecase: UseCase, settings: Settings, interval: Interval, redis_url: str) -> None:
    """The batch DAG's steps for one night, then the materialization of its batch features."""
    run_batch(usecase, settings, interval, f"rehearsal__{interval.key}", workers=1)
    materialize_active(usecase, settings, redis_url)


def _requests(
    settings: Settings, usecase: UseCase, span: tuple[datetime, datetime], table: str | None, column: str
) -> list[dict[str, Any]]:
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
    return rows


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
    pin_models(settings, reh, usecase, start)
    asked = _requests(reh, usecase, (start, until), requests_table, time_column)
    keys = usecase.entity.key_names
    context = [c.name for c in usecase.context]
    redis_url, _ = resolve_redis_url(reh)
    result = Rehearsal(settings=reh)
    flags = FlagStore.from_settings(reh)
    try:
        flags.ensure_schema()
        flags.set(usecase.name, Stage.SHADOW, None, actor="rehearsal", reason="rehearsal", source="cli", force=True)
    finally:
        flags.close()
    _night(usecase, reh, interval_ending(usecase.batch.schedule, start), redis_url)
    result.nights = 1
    ticks = croniter(usecase.batch.schedule, start)
    nights: list[datetime] = []
    while (tick := ticks.get_next(datetime)) < until:
        nights.append(tick)
    labels_by = until + parse_duration(usecase.label.available_after)
    extra = {
        "MIGRATE_SQL_URL": f"sqlite:///{reh.state_dir / 'lookup.db'}",
        "MIGRATE_OFFLINE_STORE": str(reh.offline_store_path),
        "MIGRATE_USECASES_DIR": str(reh.usecases_dir),
        "MIGRATE_PROJECT_DIR": str(reh.project_dir),
    }
    try:
        with LiveDay(reh, usecase, start, speed, labels_by, extra_env=extra) as day, httpx.Client(timeout=10) as client:
            url = f"{day.base}/v1/models/{usecase.name}/predict"
            nightly = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rehearsal-night")
            batch_runs: list[Future[None]] = []
            for number, row in enumerate(asked):
                due: datetime = row["prediction_time"]
                while nights and day.now() >= nights[0]:  # the nightly run, beside the traffic
                    night = nights.pop(0)
                    previous = croniter(usecase.batch.schedule, night).get_prev(datetime)
                    batch_runs.append(nightly.submit(_night, usecase, reh, Interval(previous, night), redis_url))
                wait = (due - day.now()).total_seconds() / speed
                if wait > 0:
                    time.sleep(wait)
                body = {
                    "entities": [{k: row[k] for k in keys}],
                    "context": {c: row[c] for c in context if row.get(c) is not None},
                }
                try:
                    answer = client.post(url, json=body)
                    result.errors += answer.status_code != 200
                except httpx.HTTPError:
                    result.errors += 1
                result.requests += 1
                if progress is not None and (number % 50 == 0 or number == len(asked) - 1):
                    day.check_alive()
                    progress("requests sent at their simulated time", number + 1, len(asked))
            for job in batch_runs:
                job.result(timeout=300)  # a night that failed fails the rehearsal, with its own error
            nightly.shutdown()
            result.nights += len(batch_runs)
            # The labels of the last requests: the events keep flowing until their window has closed.
            while not day.replay_done() and day.now() < labels_by + timedelta(minutes=5):
                time.sleep(0.5)
            time.sleep(4)  # the sink flushes every 2 s
            day.stop(("sink", "serve", "stream"))
        result.comparison = compare(usecase, reh)
    finally:
        stop_shared_broker(reh)
        stop_redis(reh)
    return result
